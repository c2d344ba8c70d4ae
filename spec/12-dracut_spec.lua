local H = require "helpers"
local dr = require "vfioinit.generators.dracut"

local WANT = { "vfio", "vfio_iommu_type1", "vfio_pci" }
local GPU = { amdgpu = true, radeon = true, nouveau = true, nvidia = true, nvidia_modeset = true,
  nvidia_uvm = true, nvidia_drm = true, i915 = true, xe = true }
local MODPROBE = "/etc/modprobe.d/vfioinit.conf"
local corpus = assert(H.readfile(H.corpus .. "/dracut/dracut.conf"))

local function norm(v) return (v:gsub("-", "_")) end

-- dracut's own reading (dracut.sh): /etc/dracut.conf, then dropindirs_sort of both
-- conf.d dirs: names merged, `sort -Vu`, the /etc file wins. Prints `var`'s words.
local function dracut_words(root, var)
  local script = ([[
r=%s
[ -f "$r/etc/dracut.conf" ] && . "$r/etc/dracut.conf"
for f in $(for d in "$r/etc/dracut.conf.d" "$r/usr/lib/dracut/dracut.conf.d"; do
    for i in "$d/"*.conf; do [ -e "$i" ] && printf '%%s\n' "${i##*/}"; done; done | sort -Vu); do
  if [ -e "$r/etc/dracut.conf.d/$f" ]; then . "$r/etc/dracut.conf.d/$f"; else . "$r/usr/lib/dracut/dracut.conf.d/$f"; fi
done
printf '%%s\n' $%s
]]):format(H.q(root), var)
  local out, ok = H.sh("bash -c " .. H.q(script) .. " 2>&1")
  assert(ok, out)
  local t = {}
  for l in out:gmatch("[^\n]+") do t[#t + 1] = l end
  return t
end

local function check(after)
  local count, gpu_seen = {}, false
  for _, w in ipairs(WANT) do count[w] = 0 end
  for _, m in ipairs(after) do
    local n = norm(m)
    if GPU[n] then gpu_seen = true end
    if count[n] then
      assert.is_false(gpu_seen, ("%s after a GPU driver in {%s}"):format(m, table.concat(after, " ")))
      count[n] = count[n] + 1
    end
  end
  for w, c in pairs(count) do
    assert.are.equal(1, c, ("%s present %d times in {%s}"):format(w, c, table.concat(after, " ")))
  end
end

local function others(list)
  local want, t = {}, {}
  for _, w in ipairs(WANT) do want[w] = true end
  for _, m in ipairs(list) do if not want[norm(m)] then t[#t + 1] = norm(m) end end
  return t
end

local function make_ctx(root, extra)
  local ctx = { root = root, modules = WANT, gpu = GPU, distro = { id = "fedora", id_like = {} }, kernels = {} }
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
    if e.after == nil then H.rm(root .. e.path) else H.writefile(root .. e.path, e.after) end
  end
end

local D = "/etc/dracut.conf.d/"
local U = "/usr/lib/dracut/dracut.conf.d/"
local CASES = {
  { "corpus, empty conf.d", {} },
  { "gpu drivers in a later drop-in", { [D .. "20-nvidia.conf"] = 'force_drivers+=" nvidia nvidia_modeset nvidia_uvm nvidia_drm "\n' } },
  { "gpu driver in 05-", { [D .. "05-amd.conf"] = 'force_drivers+=" amdgpu "\n' } },
  { "gpu driver in 00-nvidia (sorts before any name)", { [D .. "00-nvidia.conf"] = '# nvidia\nforce_drivers+=" nvidia nvidia_drm "\n' } },
  { "gpu driver in /etc/dracut.conf", { ["/etc/dracut.conf"] = corpus .. 'force_drivers+=" i915 "\n' } },
  { "vfio only in add_drivers", { [D .. "50-user.conf"] = 'add_drivers+=" vfio_pci vfio "\nhostonly="yes"\n' } },
  { "part already force-loaded, no gpu", { [D .. "50-user.conf"] = 'force_drivers+=" vfio vfio_pci "\n' } },
  { "/etc overrides /usr/lib of the same name", {
    [U .. "10-nvidia.conf"] = 'force_drivers+=" nvidia "\n',
    [D .. "10-nvidia.conf"] = '# masked\n' } },
  { "gpu in /usr/lib drop-in", { [U .. "08-gpu.conf"] = 'force_drivers+=" radeon "\n' } },
  { "late plain reset with gpu", { [D .. "90-late.conf"] = 'force_drivers="nouveau"\n' } },
  { "dash spelling force-loaded before the gpu", { [D .. "02-x.conf"] = 'force_drivers+=" vfio-pci vfio vfio-iommu-type1 "\n',
    [D .. "30-gpu.conf"] = 'force_drivers+=" amdgpu "\n' } },
  { "vfio force-loaded after the gpu in the same file", { [D .. "03-mixed.conf"] = "force_drivers+=' xe vfio_pci '\n" } },
  { "multi-line value with comments around", { ["/etc/dracut.conf"] = corpus .. '# drivers\nforce_drivers+=" nvidia \\\n nvidia_drm "  # gpu\nhostonly="no"\n' } },
  { "existing own drop-in, correct", { [D .. "10-vfioinit.conf"] = dr.drop_in_text(WANT, {}) } },
  { "existing own drop-in, stale content", { [D .. "10-vfioinit.conf"] = 'force_drivers+=" vfio "\n' } },
  { "modprobe file wanted", {}, modprobe = true },
  { "modprobe file already installed", { [D .. "40-items.conf"] = 'install_items+=" /etc/modprobe.d/vfioinit.conf "\n' }, modprobe = true },
}

describe("dracut.edits()", function()
  it("has at least 12 cases", function() assert.is_true(#CASES >= 12) end)

  for i, c in ipairs(CASES) do
    it(("should satisfy bash in dracut's order (case %d: %s)"):format(i, c[1]), function()
      local root = H.tmpdir()
      finally(function() H.rm(root) end)
      H.writefile(root .. "/etc/dracut.conf", corpus)
      H.sh("mkdir -p " .. H.q(root .. "/etc/dracut.conf.d"))
      for p, t in pairs(c[2]) do H.writefile(root .. p, t) end
      local before = dracut_words(root, "force_drivers")
      local ctx = make_ctx(root, { modprobe_file = c.modprobe and MODPROBE or nil })
      local edits = assert(dr.edits(ctx))
      -- untouched files stay byte-identical; our drop-in has the spaces dracut wants
      for _, e in ipairs(edits) do
        if e.after and e.path:match("vfioinit%.conf$") then
          for v in e.after:gmatch('%+="([^"]*)"') do
            assert.truthy(v:match("^ .* $"), e.after)
          end
        end
      end
      apply(root, edits)
      local after = dracut_words(root, "force_drivers")
      check(after)
      assert.are.same(others(before), others(after))
      if c.modprobe then
        local n = 0
        for _, w in ipairs(dracut_words(root, "install_items")) do if w == MODPROBE then n = n + 1 end end
        assert.are.equal(1, n)
      end
      assert.are.equal(0, #assert(dr.edits(ctx)), "second run changes nothing")
    end)
  end

  it("should pick a name that sorts before the drop-in with GPU drivers", function()
    local root = H.tmpdir()
    finally(function() H.rm(root) end)
    H.writefile(root .. D .. "05-amd.conf", 'force_drivers+=" amdgpu "\n')
    local edits = assert(dr.edits(make_ctx(root)))
    assert.are.equal(1, #edits)
    assert.are.equal(D .. "01-vfioinit.conf", edits[1].path)
    assert.is_nil(edits[1].before)
    assert.truthy(edits[1].after:find('force_drivers+=" vfio vfio_iommu_type1 vfio_pci "', 1, true))
  end)

  it("should write 10-vfioinit.conf by default", function()
    local root = H.tmpdir()
    finally(function() H.rm(root) end)
    H.writefile(root .. "/etc/dracut.conf", corpus)
    local edits = assert(dr.edits(make_ctx(root)))
    assert.are.equal(D .. "10-vfioinit.conf", edits[1].path)
  end)

  it("should report the path and line of an unbalanced quote", function()
    local root = H.tmpdir()
    finally(function() H.rm(root) end)
    H.writefile(root .. D .. "20-x.conf", '# x\n\nadd_drivers+=" foo \n')
    local e, msg = dr.edits(make_ctx(root))
    assert.is_nil(e)
    assert.truthy(msg:find(D .. "20-x.conf:3: unterminated \" quote", 1, true), msg)
  end)
end)

describe("dracut.edit_text()", function()
  local texts = {
    { "# empty\n", 'force_drivers+=" vfio vfio_iommu_type1 vfio_pci "\n' },
    { 'force_drivers+=" nvidia "\n', nil },
    { 'force_drivers="i915 vfio_pci"\n', nil },
    { 'add_drivers+=" vfio "\nforce_drivers+=" vfio_pci "\n', nil },
  }
  for i, c in ipairs(texts) do
    it(("should make bash see the VFIO modules first (case %d)"):format(i), function()
      local out = assert(dr.edit_text(c[1], WANT))
      if c[2] then assert.are.equal(c[1] .. c[2], out) end
      local dir = H.tmpdir()
      finally(function() H.rm(dir) end)
      H.writefile(dir .. "/etc/dracut.conf", out)
      check(dracut_words(dir, "force_drivers"))
      assert.are.equal(out, (dr.edit_text(out, WANT)))
    end)
  end

  it("should fail with the line of an unterminated quote", function()
    local out, msg, line = dr.edit_text("hostonly=yes\nforce_drivers+=\" a\n", WANT)
    assert.is_nil(out)
    assert.are.equal(2, line)
    assert.truthy(msg:find("unterminated", 1, true))
  end)
end)

describe("dracut images", function()
  it("should name the image by distribution", function()
    assert.are.equal("/boot/initrd.img-6.1.0-9-amd64",
      dr.image_path({ distro = { id = "debian", id_like = {} } }, "6.1.0-9-amd64"))
    assert.are.equal("/boot/initrd.img-6.8.0-1",
      dr.image_path({ distro = { id = "linuxmint", id_like = { "ubuntu", "debian" } } }, "6.8.0-1"))
    assert.are.equal("/boot/initramfs-6.9.0.fc40.img",
      dr.image_path({ distro = { id = "fedora", id_like = {} } }, "6.9.0.fc40"))
    assert.are.same({ { argv = { "dracut", "--force", "/boot/initramfs-6.9.img", "6.9" }, kernels = { "6.9" } } },
      dr.rebuild_argv({ distro = { id = "arch" } }, { "6.9" }))
  end)

  it("should read rd.driver.pre from etc/cmdline.d", function()
    local s = dr.early_modules({
      ["etc/cmdline.d/20-force_drivers.conf"] = "rd.driver.pre=vfio\nrd.driver.pre=vfio-pci\n",
      ["./etc/cmdline.d/01-default.conf"] = "quiet rd.driver.pre=vfio_iommu_type1,amdgpu\n",
      ["etc/other"] = "rd.driver.pre=nope\n",
    })
    assert.are.same({ vfio = true, vfio_pci = true, vfio_iommu_type1 = true, amdgpu = true }, s)
  end)
end)
