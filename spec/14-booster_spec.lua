-- booster generator: /etc/booster.yaml `modules_force_load`. Oracle: PyYAML reads the
-- file before and after; every other key must read the same, and the comma list must
-- name each VFIO module once, before every GPU driver.
local h = require "helpers"
local util = require "vfioinit.util"
local booster = require "vfioinit.generators.booster"

local PY = "/usr/bin/python3"
local ORACLE = h.project .. "/spec/fixtures/booster/oracle.py"
local have_py = select(2, h.sh(PY .. " -c 'import yaml' 2>/dev/null"))
local py_it = have_py and it or pending

local VFIO = { "vfio", "vfio_iommu_type1", "vfio_pci" }
local VFIO_OLD = { "vfio", "vfio_iommu_type1", "vfio_pci", "vfio_virqfd" }
local GPU = util.gpu_set()

local function unhex(s)
  if s == "-" then return "" end
  return (s:gsub("%x%x", function(x) return string.char(tonumber(x, 16)) end))
end

local function put(dir, name, text)
  local p = dir .. "/" .. name
  local f = assert(io.open(p, "wb")); f:write(text); f:close()
  return p
end

-- PyYAML over all (before, after) pairs at once: per pair, whether the other keys
-- read the same ("same\n" or "diff ...") and the value of modules_force_load after.
local function oracle(pairs_)
  local dir = h.tmpdir()
  local args = {}
  for i, p in ipairs(pairs_) do
    args[#args + 1] = p[1] and h.q(put(dir, i .. "-before.yaml", p[1])) or "-"
    args[#args + 1] = h.q(put(dir, i .. "-after.yaml", p[2]))
  end
  local out, ok = h.sh(PY .. " " .. h.q(ORACLE) .. " pairs modules_force_load " .. table.concat(args, " ") .. " 2>&1")
  h.rm(dir)
  assert(ok, out)
  local res, cur = {}, nil
  for line in out:gmatch("([^\n]*)\n") do
    if line:match("^== pair ") then
      cur = {}
      res[#res + 1] = cur
    elseif not cur.same then
      cur.same = line .. "\n"
    elseif line:match("^== ") then
      cur.scanned = true
    elseif line:match("^ERR") then
      cur.err = line
    else
      local k, kind, v = line:match("^(%S+) (%u) (%S+)$")
      if k and unhex(k) == "modules_force_load" then cur.kind, cur.mfl = kind, unhex(v) end
    end
  end
  return res
end

-- booster's parseCommaList
local function split(s)
  local t = {}
  for item in ((s or "") .. ","):gmatch("([^,]*),") do
    item = item:match("^%s*(.-)%s*$")
    if item ~= "" then t[#t + 1] = item end
  end
  return t
end

-- Read a value the way the scanner's caller sees it (for the before list).
local function mfl_of(text)
  local core = require "vfioinit.core"
  for _, e in ipairs(assert(core.scan.yaml(text or ""))) do
    if e.key == "modules_force_load" then
      if e.style == "plain" and (e.value == "~" or e.value == "null") then return "" end
      return e.value or ""
    end
  end
  return ""
end

local function check_order(list, want, before_list)
  local pos, first_gpu = {}, nil
  for i, m in ipairs(list) do
    local n = util.norm(m)
    for _, w in ipairs(want) do
      if n == w then
        assert.is_nil(pos[w], "listed twice: " .. w .. " in " .. table.concat(list, ","))
        pos[w] = i
      end
    end
    if GPU[n] and not first_gpu then first_gpu = i end
  end
  for _, w in ipairs(want) do
    assert.truthy(pos[w], "missing " .. w .. " in " .. table.concat(list, ","))
    if first_gpu then assert.truthy(pos[w] < first_gpu, w .. " after a GPU driver: " .. table.concat(list, ",")) end
  end
  -- every other module stays, in its order
  local function others(l)
    local t, wanted = {}, util.set(want)
    for _, m in ipairs(l) do if not wanted[util.norm(m)] then t[#t + 1] = m end end
    return table.concat(t, ",")
  end
  assert.are.equal(others(before_list), others(list))
end

local CORPUS = assert(h.readfile(h.corpus .. "/booster/booster.yaml"))
local MANPAGE = [[
network:
  interfaces: enp0s31f2,2e:1d:61:30:a3:63
  dhcp: on
  # either dhcp above or static configuration below can be used
  dns_servers: 192.168.1.1,8.8.8.8
universal: false
modules: -*,hid_apple,kernel/sound/usb/,kernel/fs/btrfs/btrfs.ko
compression: zstd
mount_timeout: 5m6s
strip: true
extra_files: vim,/usr/share/vim/vim82/,fsck,fsck.ext4
vconsole: true
enable_lvm: true
]]

-- { name, before text, want list, opts }
local CASES = {
  { "shared corpus (amdgpu force-loaded)", CORPUS, VFIO },
  { "empty file (as Arch and Fedora packages ship it)", "", VFIO },
  { "only comments, no trailing newline", "# booster config\n# see booster(1)", VFIO },
  { "manpage sample without the key", MANPAGE, VFIO },
  { "empty value", "compression: zstd\nmodules_force_load:\nstrip: true\n", VFIO },
  { "empty value with comment", "modules_force_load: # GPU later\nvconsole: true\n", VFIO },
  { "null value", "modules_force_load: ~\n", VFIO },
  { "nvidia stack, single-quoted", "universal: false\nmodules_force_load: 'nvidia,nvidia_modeset,nvidia_uvm,nvidia_drm'\n", VFIO },
  { "double-quoted with spaces", "modules_force_load: \"i915, nvme\" # early KMS\n", VFIO },
  { "partial VFIO before the GPU", "modules_force_load: vfio_pci,amdgpu\n", VFIO },
  { "VFIO after the GPU, dash spelling", "modules_force_load: amdgpu,vfio-pci,vfio\nstrip: true\n", VFIO },
  { "duplicated VFIO entries", "modules_force_load: vfio,vfio_pci,vfio-pci,nvidia,vfio_iommu_type1\n", VFIO },
  { "already configured", "modules_force_load: vfio,vfio_iommu_type1,vfio_pci,amdgpu\n", VFIO },
  { "no GPU driver, other modules", "enable_lvm: true\nmodules_force_load: dm_mod,nvme\n", VFIO },
  { "multi-line plain value", "modules_force_load: nvme,\n  amdgpu\ncompression: lz4\n", VFIO },
  { "document start, CRLF line ends", "---\r\nmodules: ext4\r\nmodules_force_load: radeon\r\nstrip: true\r\n", VFIO },
  { "old kernel wants vfio_virqfd", "modules_force_load: nouveau\n", VFIO_OLD },
  { "network block after the key", "modules_force_load: xe\nnetwork:\n  dhcp: on\n  interfaces: eth0\n", VFIO },
  { "modprobe file added to extra_files", MANPAGE .. "modules_force_load: amdgpu\n", VFIO,
    { extra_files = { "/etc/modprobe.d/vfioinit.conf" } } },
  { "modprobe file: new extra_files key", "modules_force_load: vfio,vfio_iommu_type1,vfio_pci\n", VFIO,
    { extra_files = { "/etc/modprobe.d/vfioinit.conf" } } },
}

describe("booster edit_text()", function()
  local results
  local function result(i)
    if not results then
      local pairs_ = {}
      for j, c in ipairs(CASES) do
        pairs_[j] = { c[2], booster.edit_text(c[2], c[3], c[4] or {}) or "" }
      end
      results = oracle(pairs_)
    end
    return results[i]
  end

  for i, c in ipairs(CASES) do
    py_it(c[1], function()
      local before, want, opts = c[2], c[3], c[4] or {}
      local after, msg, line = booster.edit_text(before, want, opts)
      assert(after, tostring(msg) .. " line " .. tostring(line))
      -- PyYAML: every other key reads the same (extra_files aside when it was edited),
      -- and modules_force_load is one string naming each VFIO module before any GPU driver
      local o = result(i)
      assert.is_nil(o.err, "PyYAML cannot read the result:\n" .. after)
      if not opts.extra_files then assert.are.equal("same\n", o.same) end
      assert.are.equal("S", o.kind)
      check_order(split(o.mfl), want, split(mfl_of(before)))
      -- idempotent
      assert.are.equal(after, booster.edit_text(after, want, opts))
      -- minimal diff: bytes outside the modules_force_load entry are untouched
      local core = require "vfioinit.core"
      local e
      for _, x in ipairs(assert(core.scan.yaml(before))) do if x.key == "modules_force_load" then e = x end end
      if not opts.extra_files then
        if e then
          assert.are.equal(before:sub(1, e.first - 1), after:sub(1, e.first - 1))
          local tail = before:sub(e.last + 1)
          assert.are.equal(tail, after:sub(#after - #tail + 1))
        else
          assert.are.equal(before, after:sub(1, #before))
        end
      else
        local ef
        for _, x in ipairs(assert(core.scan.yaml(after))) do if x.key == "extra_files" then ef = x end end
        assert.truthy(("," .. ef.value .. ","):find(",/etc/modprobe.d/vfioinit.conf,", 1, true), ef.value)
      end
    end)
  end

  it("returns the same text when there is nothing to do (no VFIO module wanted)", function()
    assert.are.equal(CORPUS, booster.edit_text(CORPUS, {}))
    assert.are.equal("", booster.edit_text("", {}))
  end)

  it("refuses a YAML list for modules_force_load (booster reads one string)", function()
    local r, msg, line = booster.edit_text("strip: true\nmodules_force_load: [vfio, amdgpu]\n", VFIO)
    assert.is_nil(r)
    assert.truthy(msg:find("comma-separated", 1, true), msg)
    assert.are.equal(2, line)
    r, msg, line = booster.edit_text("modules_force_load:\n  - vfio\n  - amdgpu\n", VFIO)
    assert.is_nil(r)
    assert.are.equal(1, line)
  end)

  it("refuses YAML syntax errors with their line", function()
    local r, msg, line = booster.edit_text("universal: false\nnetwork:\n\tdhcp: on\n", VFIO)
    assert.is_nil(r); assert.truthy(msg:find("tab", 1, true)); assert.are.equal(3, line)
    r, msg, line = booster.edit_text("a: b\nmodules_force_load: 'vfio\n", VFIO)
    assert.is_nil(r); assert.truthy(msg:find("unterminated", 1, true)); assert.are.equal(2, line)
    r, _, line = booster.edit_text("compression: zstd\nthis is not yaml for booster\n", VFIO)
    assert.is_nil(r); assert.are.equal(2, line)
    r, _, line = booster.edit_text("modules_force_load: a\nstrip: true\nmodules_force_load: b\n", VFIO)
    assert.is_nil(r); assert.are.equal(3, line)
  end)

  it("refuses a binary file", function()
    local r, msg, line = booster.edit_text("\127ELF\2\1\1\0\0\0\0\0\0\0\0\0", VFIO)
    assert.is_nil(r)
    assert.are.equal("string", type(msg))
    assert.are.equal(1, line)
  end)
end)

describe("booster edits()", function()
  local root
  local function ctx(extra)
    local c = { root = root, modules = VFIO, gpu = GPU, kernels = {} }
    function c.read(path) return h.readfile(root .. path) end
    function c.dir(path)
      local out, ok = h.sh("ls -1A " .. h.q(root .. path) .. " 2>/dev/null")
      if not ok then return nil end
      local t = {}
      for n in out:gmatch("[^\n]+") do t[#t + 1] = n end
      table.sort(t)
      return t
    end
    function c.exists(path) return h.readfile(root .. path) ~= nil end
    for k, v in pairs(extra or {}) do c[k] = v end
    return c
  end
  before_each(function() root = h.tmpdir() end)
  after_each(function() h.rm(root) end)

  it("creates /etc/booster.yaml when it is missing (before = nil)", function()
    local list = assert(booster.edits(ctx()))
    assert.are.equal(1, #list)
    assert.are.equal("/etc/booster.yaml", list[1].path)
    assert.is_nil(list[1].before)
    assert.are.equal("modules_force_load: vfio,vfio_iommu_type1,vfio_pci\n", list[1].after)
  end)

  it("edits the corpus config and is a no-op on the result", function()
    h.copy_corpus("booster/booster.yaml", root, "/etc/booster.yaml")
    local list = assert(booster.edits(ctx()))
    assert.are.equal(CORPUS, list[1].before)
    assert.truthy(list[1].after:find("\nmodules_force_load: vfio,vfio_iommu_type1,vfio_pci,amdgpu\n", 1, true))
    h.writefile(root .. "/etc/booster.yaml", list[1].after)
    local again = assert(booster.edits(ctx()))
    assert.are.equal(again[1].before, again[1].after)
  end)

  it("lists the modprobe.d file in extra_files when the run writes one", function()
    h.writefile(root .. "/etc/booster.yaml", "extra_files: busybox\n")
    local list = assert(booster.edits(ctx({ modprobe_file = "/etc/modprobe.d/vfioinit.conf" })))
    assert.are.equal("extra_files: busybox,/etc/modprobe.d/vfioinit.conf\n"
      .. "modules_force_load: vfio,vfio_iommu_type1,vfio_pci\n", list[1].after)
  end)

  it("reports PATH:LINE: reason for a broken config", function()
    h.writefile(root .. "/etc/booster.yaml", "universal: false\nmodules_force_load: \"vfio\n")
    local r, err = booster.edits(ctx())
    assert.is_nil(r)
    assert.are.equal("/etc/booster.yaml:2: unterminated double-quoted scalar", err)
  end)

  it("passes a read error through", function()
    local c = ctx()
    function c.read() return nil, "/etc/booster.yaml: Permission denied" end
    local r, err = booster.edits(c)
    assert.is_nil(r)
    assert.are.equal("/etc/booster.yaml: Permission denied", err)
  end)
end)

describe("booster images", function()
  local root
  before_each(function() root = h.tmpdir() end)
  after_each(function() h.rm(root) end)
  local function ctx()
    return { root = root, read = function(p) return h.readfile(root .. p) end }
  end

  it("names the image after the kernel package (Arch pkgbase), else the version", function()
    h.writefile(root .. "/usr/lib/modules/6.6.30-1-lts/pkgbase", "linux-lts\n")
    assert.are.equal("/boot/booster-linux-lts.img", booster.image_path(ctx(), "6.6.30-1-lts"))
    assert.are.equal("/boot/booster-6.1.0-18-amd64.img", booster.image_path(ctx(), "6.1.0-18-amd64"))
  end)

  it("rebuilds with booster build --force --kernel-version", function()
    h.writefile(root .. "/usr/lib/modules/6.9.1-arch1-1/pkgbase", "linux\n")
    local cmds = booster.rebuild_argv(ctx(), { "6.9.1-arch1-1", "6.1.0-18-amd64" })
    assert.are.same({
      { argv = { "booster", "build", "--force", "--kernel-version", "6.9.1-arch1-1", "/boot/booster-linux.img" },
        kernels = { "6.9.1-arch1-1" } },
      { argv = { "booster", "build", "--force", "--kernel-version", "6.1.0-18-amd64", "/boot/booster-6.1.0-18-amd64.img" },
        kernels = { "6.1.0-18-amd64" } },
    }, cmds)
  end)

  it("wants etc/booster.init.yaml and reads its modulesforceload list", function()
    assert.are.same({ "etc/booster.init.yaml" }, booster.image_want)
    local init = "moduledependencies:\n    vfio_pci:\n        - vfio\n        - vfio_pci_core\n"
      .. "modulesforceload:\n    - vfio\n    - vfio_iommu_type1\n    - vfio-pci\n    - amdgpu\n"
      .. "modprobeoptions:\n    vfio_pci: ids=10de:1b80\nkernel: 6.1.0-18-amd64\nmounttimeout: 180\n"
    assert.are.same({ vfio = true, vfio_iommu_type1 = true, ["vfio-pci"] = true, amdgpu = true },
      booster.early_modules({ ["etc/booster.init.yaml"] = init }))
    assert.are.same({ vfio = true, amdgpu = true },
      booster.early_modules({ ["etc/booster.init.yaml"] = "modulesforceload: [vfio, 'amdgpu']\n" }))
    assert.are.same({}, booster.early_modules({ ["etc/booster.init.yaml"] = "kernel: 6.1\n" }))
    assert.are.same({}, booster.early_modules({}))
  end)

  it("declares how detect finds it", function()
    assert.are.equal("booster", booster.name)
    assert.are.equal("booster", booster.command)
    assert.are.equal("/etc/booster.yaml", booster.config)
    assert.truthy(booster.active_evidence[1]:match("^/usr/share/libalpm/hooks/"))
  end)
end)
