-- The drivers of device IDs from depmod's text lists (core.moddep.aliases) give libkmod's
-- answers: libkmod's lookup on the same root is the oracle, on real kernels' files.
local h = require "helpers"
local core = require "vfioinit.core"
local machine = require "vfioinit.machine"
local modprobe = require "vfioinit.modprobe"
local vfioinit = require "vfioinit"

local q = h.q

-- What a modalias lookup answers through libkmod, and through the text lists, for each of
-- `list` on root's kernel kver: two arrays of sorted "a,b" strings.
local function both(root, kver, list)
  local dir = "/lib/modules/" .. kver
  local ctx = assert(core.kmod.new(root, dir, machine.MODPROBE_DIRS))
  local text = assert(core.moddep.aliases(root, dir, list, assert(modprobe.alias_lines(root))))
  local want, got = {}, {}
  for i, a in ipairs(list) do
    local k = ctx:lookup(a) or {}
    table.sort(k)
    local t, seen = {}, {}
    for _, m in ipairs(text[i]) do
      if not seen[m] then seen[m] = true; t[#t + 1] = m end
    end
    table.sort(t)
    want[i], got[i] = a .. " " .. table.concat(k, ","), a .. " " .. table.concat(t, ",")
  end
  ctx:close()
  return want, got
end

-- Modaliases to ask about root's kernel: what drivers_for asks for each vendor:device of
-- every `step`th PCI pattern of modules.alias, and the pattern with its wildcards filled in.
local function modaliases(root, kver, step)
  local list, n = {}, 0
  for line in assert(io.open(root .. "/lib/modules/" .. kver .. "/modules.alias")):lines() do
    local pat = line:match("^alias (pci:%S+) ")
    if pat then
      n = n + 1
      local v, d = pat:match("^pci:v0000(%x%x%x%x)d0000(%x%x%x%x)")
      if n % step == 0 and v then
        local base = ("pci:v0000%sd0000%ssvFFFFFFFFsdFFFFFFFF"):format(v, d)
        for _, class in ipairs({ "bc03sc00i00", "bc03sc02i00", "bc03sc80i00", "bcFFscFFiFF" }) do
          list[#list + 1] = base .. class
        end
        list[#list + 1] = (pat:gsub("%*", "0"))
      end
    end
  end
  return list
end

describe("alias lookup from the text lists", function()
  local roots = h.cache_dir() .. "/roots"
  local seen = {}
  for _, flavour in ipairs({ "initramfs-tools", "multi" }) do
    local dir = roots .. "/" .. flavour
    for kver in h.sh("ls " .. q(dir .. "/lib/modules") .. " 2>/dev/null"):gmatch("%S+") do
      if not seen[kver] then
        seen[kver] = true
        it(("answers as libkmod on the cached %s root's %s"):format(flavour, kver), function()
          local list = modaliases(dir, kver, 7)
          assert.is_true(#list > 100, "too few PCI aliases in " .. kver)
          local want, got = both(dir, kver, list)
          assert.are.same(want, got)
        end)
      end
    end
  end
  if not next(seen) then pending("a cached root (tools/mkroot initramfs-tools or multi)") end

  describe("on a real kernel copied into a root", function()
    local root, kver
    before_each(function() root = h.tmpdir() end)
    after_each(function() h.rm(root) end)

    it("lets modprobe.d's alias lines win over modules.alias, and gives libkmod's answers", function()
      kver = h.install_kernel(root, "cloud")
      h.writefile(root .. "/etc/modprobe.d/local.conf",
        "# a comment\nalias pci:v00001AF4d00001000* virtio_blk\nalias pci:v0000ABCDd*sv*sd*bc03* \\\n  e1000e\n")
      h.writefile(root .. "/usr/lib/modprobe.d/masked.conf", "alias pci:v00001AF4d00001041* 8139too\n")
      h.writefile(root .. "/etc/modprobe.d/masked.conf", "# masks the /usr/lib file\n")
      local list = { "pci:v00001AF4d00001000svFFFFFFFFsdFFFFFFFFbc03sc00i00",
        "pci:v00001AF4d00001041svFFFFFFFFsdFFFFFFFFbc03sc00i00",
        "pci:v0000ABCDd00001234svFFFFFFFFsdFFFFFFFFbc03sc00i00",
        "pci:v0000ABCDd00001234svFFFFFFFFsdFFFFFFFFbc02sc00i00" }
      local want, got = both(root, kver, list)
      assert.are.same(want, got)
      local d = assert(vfioinit.drivers_for({ root = root, kernel = kver, ids = { "1af4:1000", "1af4:1041", "abcd:1234" } }))
      assert.are.same({ "virtio_blk" }, d[1].modules)
      assert.are.same({ "virtio_pci" }, d[2].modules)
      assert.are.same({ "e1000e" }, d[3].modules)
    end)

    it("finds a built-in driver by its modinfo aliases, as depmod's modules.builtin.alias.bin", function()
      -- virtio_pci built in: its .ko gone, its aliases in modules.builtin.modinfo; depmod
      -- then writes the indexes libkmod reads from that
      kver = h.install_kernel(root, "cloud", nil, function(moddir)
        local ko = h.sh("cd " .. q(moddir) .. " && grep -o '^[^:]*virtio_pci\\.ko[^:]*' modules.dep"):gsub("%s+$", "")
        local aliases = h.sh("modinfo -F alias " .. q(moddir .. "/" .. ko))
        h.sh("rm " .. q(moddir .. "/" .. ko))
        local f = assert(io.open(moddir .. "/modules.builtin.modinfo", "ab"))
        for a in aliases:gmatch("[^\n]+") do f:write("virtio_pci.alias=" .. a .. "\0") end
        f:close()
        f = assert(io.open(moddir .. "/modules.builtin", "ab"))
        f:write((ko:gsub("%.ko.*$", ".ko")) .. "\n")
        f:close()
      end)
      local list = { "pci:v00001AF4d00001000svFFFFFFFFsdFFFFFFFFbc03sc00i00",
        "pci:v00001AF4d00001041svFFFFFFFFsdFFFFFFFFbcFFscFFiFF" }
      local want, got = both(root, kver, list)
      assert.are.same(want, got)
      local d = assert(vfioinit.drivers_for({ root = root, kernel = kver, ids = { "1af4:1000" } }))
      assert.are.same({ "virtio_pci" }, d[1].modules)
    end)

    -- libkmod's lookup (kmod_module_new_from_lookup) stops at the first source with a match:
    -- the built-in aliases are not consulted for a modalias modules.alias answers
    it("reads modules.builtin.modinfo only for a modalias the other sources leave unanswered", function()
      kver = h.install_kernel(root, "cloud")
      local dir = "/lib/modules/" .. kver
      local answered = { "pci:v00001AF4d00001000svFFFFFFFFsdFFFFFFFFbc03sc00i00",
        "pci:v00001AF4d00001041svFFFFFFFFsdFFFFFFFFbcFFscFFiFF" }
      local want, got = both(root, kver, answered)
      assert.are.same(want, got)
      local before = assert(core.moddep.aliases(root, dir, answered, ""))
      -- a FIFO where the built-in list is: opening it is an error that names it
      os.remove(root .. dir .. "/modules.builtin.modinfo")
      local out, ok = h.sh("mkfifo " .. q(root .. dir .. "/modules.builtin.modinfo"))
      assert(ok, out)
      assert.are.same(before, core.moddep.aliases(root, dir, answered, ""))
      local res, err = core.moddep.aliases(root, dir, { answered[1], "pci:v0000ABCDd00001234svFFFFFFFFsdFFFFFFFFbc03sc00i00" }, "")
      assert.is_nil(res)
      assert.matches(dir .. "/modules.builtin.modinfo", err, 1, true)
    end)

    it("asks libkmod when a kernel has no modules.alias", function()
      kver = h.install_kernel(root, "cloud")
      local want = assert(vfioinit.drivers_for({ root = root, kernel = kver, ids = { "1af4:1000" } }))
      os.remove(root .. "/lib/modules/" .. kver .. "/modules.alias")
      assert.is_false(core.moddep.aliases(root, "/lib/modules/" .. kver, { "pci:v00001AF4d00001000" }))
      assert.are.same(want, assert(vfioinit.drivers_for({ root = root, kernel = kver, ids = { "1af4:1000" } })))
    end)
  end)
end)
