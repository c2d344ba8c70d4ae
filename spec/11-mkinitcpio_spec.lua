local core = require "vfioinit.core"
local H = require "helpers"
local mk = require "vfioinit.generators.mkinitcpio"

local WANT = { "vfio", "vfio_iommu_type1", "vfio_pci" }
local GPU = { amdgpu = true, radeon = true, nouveau = true, nvidia = true, nvidia_modeset = true,
  nvidia_uvm = true, nvidia_drm = true, i915 = true, xe = true }
local corpus = assert(H.readfile(H.corpus .. "/mkinitcpio/mkinitcpio.conf"))

local function norm(v) return (v:gsub("%?$", ""):gsub("-", "_")) end

-- MODULES as mkinitcpio sees it after sourcing `files`: an array as is, a string split on spaces.
local function modules_of(files)
  local arr = H.bash_array(files, "MODULES")
  local src = {}
  for _, f in ipairs(files) do src[#src + 1] = "source " .. H.q(f) end
  local kind = H.sh("bash -c " .. H.q(table.concat(src, "; ") .. '; printf %s "${MODULES@a}"'))
  if not kind:find("a", 1, true) and #arr > 0 then
    local words = {}
    for w in table.concat(arr, "\n"):gmatch("[^ ]+") do words[#words + 1] = w end
    return words
  end
  return arr
end

-- The oracle's verdict on one MODULES list against the list before the edit.
local function check(before, after)
  local want = {}
  for _, w in ipairs(WANT) do want[w] = 0 end
  local gpu_at
  for i, m in ipairs(after) do
    local n = norm(m)
    if GPU[n] and not gpu_at then gpu_at = i end
    if want[n] then
      want[n] = want[n] + 1
      assert.is_nil(gpu_at, ("%s after a GPU driver in {%s}"):format(m, table.concat(after, " ")))
    end
  end
  for w, c in pairs(want) do
    assert.are.equal(1, c, ("%s present %d times in {%s}"):format(w, c, table.concat(after, " ")))
  end
  local function others(list)
    local t = {}
    for _, m in ipairs(list) do if want[norm(m)] == nil then t[#t + 1] = m end end
    return t
  end
  assert.are.same(others(before), others(after))
end

local function lines(text)
  local t = {}
  for l in (text .. "\n"):gmatch("([^\n]*)\n") do t[#t + 1] = l end
  return t
end

-- Lines outside the MODULES and HOOKS statements must survive byte for byte, in order.
local function check_minimal(before, after)
  local sc = assert(core.scan.shell(before))
  local touched = {}
  for _, a in ipairs(sc) do
    if a.name == "MODULES" or a.name == "HOOKS" then
      local l1 = select(2, before:sub(1, a.first):gsub("\n", "")) + 1
      local l2 = select(2, before:sub(1, a.last):gsub("\n", "")) + 1
      for l = l1, l2 do touched[l] = true end
    end
  end
  local new, j = lines(after), 1
  for i, l in ipairs(lines(before)) do
    if not touched[i] then
      while j <= #new and new[j] ~= l do j = j + 1 end
      assert.is_true(j <= #new, ("untouched line %d changed or moved: %q"):format(i, l))
      j = j + 1
    end
  end
end

local function with_modules(body)
  return (corpus:gsub("\nMODULES=%(%)\n", "\n" .. body:gsub("%%", "%%%%") .. "\n", 1))
end

-- One config each. `hooks` = the modconf check applies (modprobe file wanted).
local CASES = {
  { "corpus as shipped", corpus },
  { "corpus with nvidia modules", with_modules("MODULES=(nvidia nvidia_modeset nvidia_uvm nvidia_drm)") },
  { "multi-line array with comments inside", with_modules(
    "MODULES=(\n    # storage\n    ext4\n    nvme   # boot disk\n    # graphics\n    amdgpu\n)") },
  { "comment after the closing paren", with_modules("MODULES=(i915 ext4) # keep i915 early") },
  { "quoted elements", with_modules("MODULES=(\"nvidia\" 'nvidia_drm' \"ext4\")") },
  { "MODULES+= after an empty array", with_modules("MODULES=()\nMODULES+=(nouveau)") },
  { "later assignment overrides earlier", with_modules(
    "MODULES=(vfio vfio_iommu_type1 vfio_pci)\n# changed my mind\nMODULES=(amdgpu)") },
  { "legacy string form", with_modules('MODULES="i915 ext4"') },
  { "legacy unquoted single word", with_modules("MODULES=amdgpu") },
  { "legacy empty string", with_modules('MODULES=""') },
  { "legacy bare empty", with_modules("MODULES=") },
  { "dash spelling already present", with_modules("MODULES=(vfio-pci vfio vfio-iommu-type1 nvidia)") },
  { "partial: only vfio_pci", with_modules("MODULES=(vfio_pci)") },
  { "duplicated vfio entries", with_modules("MODULES=(vfio vfio vfio_pci vfio-pci vfio_iommu_type1)") },
  { "vfio after the gpu driver", with_modules("MODULES=(amdgpu vfio vfio_iommu_type1 vfio_pci)") },
  { "vfio split around the gpu driver", with_modules("MODULES=(vfio nvidia vfio_pci ext4 vfio_iommu_type1)") },
  { "no MODULES at all", (corpus:gsub("\nMODULES=%(%)\n", "\n", 1)) },
  { "optional module marker", with_modules("MODULES=(nvidia? ext4)") },
  { "commented-out MODULES line", with_modules("#MODULES=(vfio vfio_pci)\nMODULES=(radeon)") },
  { "one module per line, gpu first", with_modules("MODULES=(\n  nvidia\n  nvidia_modeset\n  nvidia_uvm\n  nvidia_drm\n)") },
  { "tab indented with trailing comments", with_modules("MODULES=(\n\tbtrfs\t# root fs\n\tvfio_pci # passthrough\n\ti915\t# igpu\n)") },
  -- MODULES set inside an if block is refused now: spec/86-edit_shellvar_spec.lua
  { "line continuation inside the string form", with_modules('MODULES="ext4 \\\n  amdgpu"') },
  { "only MODULES+= and no plain assignment", (corpus:gsub("\nMODULES=%(%)\n", "\nMODULES+=(xe)\n", 1)) },
  { "string plus string append", with_modules('MODULES="i915"\nMODULES+=" vfio_pci"') },
  { "dynamic item kept", with_modules("EXTRA=\nMODULES=($EXTRA nvidia-drm)") },
  { "gpu in dash spelling", with_modules("MODULES=(nvidia-drm nvidia-modeset)") },
  { "already configured", with_modules("MODULES=(vfio vfio_iommu_type1 vfio_pci amdgpu)") },
  { "closing paren on the last item line", with_modules("MODULES=(\n  ext4\n  crc32c)") },
  { "array and HOOKS on one line", with_modules("MODULES=(nouveau); BINARIES=()") },
  { "hooks with systemd, modconf missing", with_modules("MODULES=(amdgpu)"):gsub("\nHOOKS=%b()",
    "\nHOOKS=(base systemd autodetect microcode kms keyboard sd-vconsole block filesystems fsck)"), hooks = true },
  { "hooks without udev/systemd", with_modules("MODULES=()"):gsub("\nHOOKS=%b()",
    "\nHOOKS=(base autodetect block filesystems)"), hooks = true },
  { "hooks string form, multi-line", with_modules("MODULES=(i915)"):gsub("\nHOOKS=%b()",
    '\nHOOKS="base udev\n  block filesystems"'), hooks = true },
}

describe("mkinitcpio.edit_text()", function()
  local dir
  setup(function() dir = H.tmpdir() end)
  teardown(function() H.rm(dir) end)

  it("has at least 25 cases", function() assert.is_true(#CASES >= 25) end)

  for i, c in ipairs(CASES) do
    local name, text = c[1], c[2]
    it(("should satisfy bash (case %d: %s)"):format(i, name), function()
      local out, notes = mk.edit_text(text, WANT, { modconf = c.hooks })
      assert.is_string(out, notes)
      local a, b = dir .. "/before" .. i .. ".conf", dir .. "/after" .. i .. ".conf"
      H.writefile(a, text)
      H.writefile(b, out)
      check(modules_of({ a }), modules_of({ b }))
      check_minimal(text, out)
      assert.are.equal(out, (mk.edit_text(out, WANT, { modconf = c.hooks })), "edit twice = same text")
      if c.hooks then
        local hooks = {}
        for w in table.concat(H.bash_array({ b }, "HOOKS"), " "):gmatch("%S+") do hooks[#hooks + 1] = w end
        local n = 0
        for _, h in ipairs(hooks) do if h == "modconf" then n = n + 1 end end
        assert.are.equal(1, n, table.concat(hooks, " "))
      end
    end)
  end

  it("should return the same text when nothing is to do", function()
    local t = with_modules("MODULES=(vfio vfio_iommu_type1 vfio_pci nvidia)")
    assert.are.equal(t, (mk.edit_text(t, WANT)))
  end)

  it("should move vfio before the gpu driver with few bytes", function()
    assert.are.equal("MODULES=(vfio vfio_iommu_type1 vfio_pci amdgpu)\n",
      (mk.edit_text("MODULES=(amdgpu vfio_pci)\n", WANT)))
  end)

  it("should add the modconf hook after udev", function()
    local out = mk.edit_text("MODULES=()\nHOOKS=(base udev autodetect block)\n", WANT, { modconf = true })
    assert.are.equal("MODULES=(vfio vfio_iommu_type1 vfio_pci)\nHOOKS=(base udev modconf autodetect block)\n", out)
  end)

  local bad = {
    { "MODULES=(nvidia\nHOOKS=(base)\n", 1, "unterminated array" },
    { "# ok\nMODULES=\"i915\nHOOKS=(base)\n", 2, "unterminated" },
    { "HOOKS=(base)\n\n\nMODULES=('vfio)\n", 4, "unterminated" },
  }
  for i, c in ipairs(bad) do
    it(("should fail with the line on bad input (case %d)"):format(i), function()
      local out, msg, line = mk.edit_text(c[1], WANT)
      assert.is_nil(out)
      assert.are.equal(c[2], line)
      assert.truthy(msg:find(c[3], 1, true), msg)
    end)
  end
end)

-- A ctx over a temp root, the way INTERNALS.md describes it.
local function make_ctx(root, extra)
  local ctx = {
    root = root, modules = WANT, gpu = GPU, distro = { id = "arch", id_like = {} }, kernels = {},
  }
  function ctx.read(path) return H.readfile(root .. path) end
  function ctx.dir(path)
    local out, ok = H.sh("ls -1A " .. H.q(root .. path) .. " 2>/dev/null")
    if not ok then return nil end
    local t = {}
    for l in out:gmatch("[^\n]+") do t[#t + 1] = l end
    table.sort(t)
    return t
  end
  for k, v in pairs(extra or {}) do ctx[k] = v end
  return ctx
end

local function apply(root, edits)
  for _, e in ipairs(edits) do
    assert.are.equal(e.before, H.readfile(root .. e.path))
    H.writefile(root .. e.path, e.after)
  end
end

-- mkinitcpio's own reading: main config then drop-ins, sort -V (from the mkinitcpio script).
local function build_files(root)
  local out = H.sh("cd " .. H.q(root) .. " && find etc/mkinitcpio.conf.d -maxdepth 1 -xtype f -name '*.conf' -printf '%f\\n' 2>/dev/null | LC_ALL=C.UTF-8 sort -Vu")
  local files = { root .. "/etc/mkinitcpio.conf" }
  for n in out:gmatch("[^\n]+") do files[#files + 1] = root .. "/etc/mkinitcpio.conf.d/" .. n end
  return files
end

local TREES = {
  { "drop-in adds a gpu driver", { ["/etc/mkinitcpio.conf.d/gpu.conf"] = "MODULES+=(nvidia nvidia_drm)\n" } },
  { "drop-in overrides MODULES", { ["/etc/mkinitcpio.conf.d/10-amd.conf"] = "MODULES=(amdgpu)\n" } },
  { "drop-ins in version order", {
    ["/etc/mkinitcpio.conf.d/10-gpu.conf"] = "MODULES+=(i915)\n",
    ["/etc/mkinitcpio.conf.d/9-vfio.conf"] = "MODULES+=(vfio_pci)\n" } },
  { "drop-in with vfio after main's gpu", {
    ["/etc/mkinitcpio.conf"] = with_modules("MODULES=(nouveau)"),
    ["/etc/mkinitcpio.conf.d/vfio.conf"] = "MODULES+=(vfio vfio_pci)\n" } },
}

describe("mkinitcpio.edits()", function()
  for i, c in ipairs(TREES) do
    it(("should satisfy bash over main config and drop-ins (tree %d: %s)"):format(i, c[1]), function()
      local root = H.tmpdir()
      finally(function() H.rm(root) end)
      H.writefile(root .. "/etc/mkinitcpio.conf", corpus)
      for p, t in pairs(c[2]) do H.writefile(root .. p, t) end
      local before = modules_of(build_files(root))
      local edits = assert(mk.edits(make_ctx(root)))
      apply(root, edits)
      check(before, modules_of(build_files(root)))
      assert.are.equal(0, #assert(mk.edits(make_ctx(root))), "second run changes nothing")
    end)
  end

  it("should edit only the file a preset names with ALL_config", function()
    local root = H.tmpdir()
    finally(function() H.rm(root) end)
    H.writefile(root .. "/etc/mkinitcpio.conf", corpus)
    H.writefile(root .. "/etc/mkinitcpio.conf.d/x.conf", "MODULES+=(amdgpu)\n")
    H.writefile(root .. "/etc/mkinitcpio-custom.conf", with_modules("MODULES=(i915)"))
    H.writefile(root .. "/etc/mkinitcpio.d/linux.preset",
      "ALL_config='/etc/mkinitcpio-custom.conf'\nALL_kver='/boot/vmlinuz-linux'\nPRESETS=('default')\ndefault_image=\"/boot/initramfs-linux.img\"\n")
    local edits = assert(mk.edits(make_ctx(root)))
    assert.are.equal(1, #edits)
    assert.are.equal("/etc/mkinitcpio-custom.conf", edits[1].path)
    apply(root, edits)
    check({ "i915" }, modules_of({ root .. "/etc/mkinitcpio-custom.conf" }))
  end)

  it("should add modconf to HOOKS when a modprobe file is wanted", function()
    local root = H.tmpdir()
    finally(function() H.rm(root) end)
    H.writefile(root .. "/etc/mkinitcpio.conf", (corpus:gsub(" modconf", "")))
    local edits = assert(mk.edits(make_ctx(root, { modprobe_file = "/etc/modprobe.d/vfioinit.conf" })))
    apply(root, edits)
    local hooks = H.bash_array({ root .. "/etc/mkinitcpio.conf" }, "HOOKS")
    assert.are.equal("base udev modconf autodetect kms keyboard keymap consolefont block filesystems fsck",
      table.concat(hooks, " "))
  end)

  it("should report the path and line of a syntax error", function()
    local root = H.tmpdir()
    finally(function() H.rm(root) end)
    H.writefile(root .. "/etc/mkinitcpio.conf", corpus)
    H.writefile(root .. "/etc/mkinitcpio.conf.d/bad.conf", "# x\nMODULES+=(nvidia\n")
    local e, msg = mk.edits(make_ctx(root))
    assert.is_nil(e)
    assert.truthy(msg:find("/etc/mkinitcpio.conf.d/bad.conf:2: unterminated array", 1, true), msg)
  end)

  it("should name the image and the rebuild the preset gives", function()
    local root = H.tmpdir()
    finally(function() H.rm(root) end)
    H.writefile(root .. "/usr/lib/modules/6.9.1-arch1-1/pkgbase", "linux\n")
    H.writefile(root .. "/etc/mkinitcpio.d/linux.preset",
      "ALL_kver='/boot/vmlinuz-linux'\nPRESETS=('default')\ndefault_image=\"/boot/initramfs-linux.img\"\n")
    local ctx = make_ctx(root)
    assert.are.equal("/boot/initramfs-linux.img", mk.image_path(ctx, "6.9.1-arch1-1"))
    assert.are.equal("/boot/initramfs-6.1.0-x.img", mk.image_path(ctx, "6.1.0-x"))
    local r = mk.rebuild_argv(ctx, { "6.9.1-arch1-1" })
    assert.are.same({ { argv = { "mkinitcpio", "-p", "linux" }, kernels = { "6.9.1-arch1-1" } } }, r)
  end)
end)

describe("mkinitcpio.early_modules()", function()
  it("should read MODULES from the image's config", function()
    local s = mk.early_modules({ config = 'MODULES="vfio vfio_iommu_type1 vfio_pci amdgpu"\nHOOKS="udev"\n' })
    assert.are.same({ vfio = true, vfio_iommu_type1 = true, vfio_pci = true, amdgpu = true }, s)
  end)
  it("should read the systemd hook's modules-load.d list", function()
    local s = mk.early_modules({ ["etc/modules-load.d/MODULES.conf"] = "vfio-pci\nvfio\n" })
    assert.are.same({ vfio = true, vfio_pci = true }, s)
  end)
end)

describe("version order", function()
  it("should sort like sort -V", function()
    local names = { "10-a.conf", "9-b.conf", "00-nvidia.conf", "0-vfioinit.conf", "a.conf", "a1.conf",
      "x-1.10.conf", "x-1.9.conf", "10-vfioinit.conf", "05-vfioinit.conf", "1-z.conf", "zz.conf", "A.conf" }
    local expect = {}
    for l in H.sh("printf '%s\\n' " .. table.concat(names, " ") .. " | LC_ALL=C.UTF-8 sort -V"):gmatch("[^\n]+") do
      expect[#expect + 1] = l
    end
    table.sort(names, require("vfioinit.machine").version_less)
    assert.are.same(expect, names)
  end)
end)
