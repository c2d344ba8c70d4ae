-- Bind by PCI address (issue 16, item 3): `match` (CLI --match) chooses devices by a PCRE2
-- pattern over "vvvv:dddd Vendor Device [Class]" built from the root's real pci.ids
-- (Debian package `pci.ids`, installed by tools/deps), on a fake sysfs of two GPUs.
local h = require "helpers"
local vfioinit = require "vfioinit"
local core = require "vfioinit.core"

local PCI_IDS = "/usr/share/misc/pci.ids"
local DEBIAN = { ID = "debian", VERSION_ID = '"12"' }

local function ln(target, link) h.sh(("mkdir -p %s && ln -sfn %s %s"):format(h.q(link:match("^(.*)/")), h.q(target), h.q(link))) end

-- Host: an AMD GPU (boot console); guest: an NVIDIA GPU and its audio function; plus two
-- identical virtio-net devices. IOMMU off: no groups (the group rule is spec/49-bind_sysfs's).
local DEVS = {
  { "0000:0a:00.0", "1002", "73bf", "0x030000", 1 },
  { "0000:0a:00.1", "1002", "ab28", "0x040300" },
  { "0000:01:00.0", "10de", "2206", "0x030000", 0 },
  { "0000:01:00.1", "10de", "1aef", "0x040300" },
  { "0000:00:03.0", "1af4", "1000", "0x020000" },
  { "0000:00:04.0", "1af4", "1000", "0x020000" },
}

local function fake_sys()
  local d = h.tmpdir()
  for _, dev in ipairs(DEVS) do
    local path = "/sys/devices/pci0000:00/" .. dev[1]
    h.writefile(d .. path .. "/vendor", "0x" .. dev[2] .. "\n")
    h.writefile(d .. path .. "/device", "0x" .. dev[3] .. "\n")
    h.writefile(d .. path .. "/class", dev[4] .. "\n")
    if dev[5] then h.writefile(d .. path .. "/boot_vga", dev[5] .. "\n") end
    ln(path, d .. "/sys/bus/pci/devices/" .. dev[1])
  end
  h.writefile(d .. "/proc/self/mountinfo", "27 1 8:1 / / rw - ext4 /dev/sda1 rw\n")
  return d
end

-- A Debian root carrying the host's real pci.ids at `where` (nil: none).
local function root_with_ids(where)
  local r = h.make_root({ os = DEBIAN, corpus = { ["/etc/initramfs-tools/modules"] = "initramfs-tools/modules" },
    exec = { "/usr/sbin/update-initramfs", "/etc/kernel/postinst.d/initramfs-tools" } })
  if where then
    local text = assert(h.readfile(PCI_IDS), PCI_IDS .. " missing: run tools/deps (Debian package pci.ids)")
    h.writefile(r .. where, text)
  end
  return r
end

-- The name pci.ids gives, looked up with awk (not vfioinit's parser): a vendor line, or a
-- device line (one tab) in that vendor's block.
local function ids_name(vendor, device)
  local prog = device
    and ("$0 ~ /^" .. vendor .. "  / { v = 1; next } v && /^[0-9a-f]/ { exit } v && $0 ~ /^\\t" .. device .. "  / { sub(/^\\t[0-9a-f]+  /, \"\"); print; exit }")
    or ("$0 ~ /^" .. vendor .. "  / { sub(/^[0-9a-f]+  /, \"\"); print; exit }")
  return (h.sh("awk " .. h.q(prog) .. " " .. PCI_IDS):gsub("\n$", ""))
end

local function addresses(plan)
  local t = {}
  for _, m in ipairs(plan.matched) do t[#t + 1] = m.address end
  table.sort(t)
  return t
end

describe("--match over pci.ids names", function()
  local sys
  before_each(function() sys = fake_sys() end)
  after_each(function() h.rm(sys) end)

  it("'NVIDIA.*(VGA|Audio)' picks the NVIDIA GPU and its audio function, not the AMD ones", function()
    local r = root_with_ids("/usr/share/misc/pci.ids")
    finally(function() h.rm(r) end)
    local plan = assert(vfioinit.plan({ root = r, sysfs = sys, match = "NVIDIA.*(VGA|Audio)" }))
    assert.are.same({ "0000:01:00.0", "0000:01:00.1" }, addresses(plan))
    assert.are.same({ "0000:01:00.0", "0000:01:00.1" }, plan.devices)
    -- the description carries pci.ids' own names
    local vga = plan.matched[1].address == "0000:01:00.0" and plan.matched[1] or plan.matched[2]
    local want = "10de:2206 " .. ids_name("10de") .. " " .. ids_name("10de", "2206") .. " [VGA compatible controller]"
    assert.are.equal(want, vga.description)
    -- and the script binds exactly those
    local script
    for _, c in ipairs(plan.changes) do if c.path:match("vfioinit%-bind$") then script = c.after end end
    assert.truthy(script:find("for vfioinit_dev in 0000:01:00.0 0000:01:00.1; do", 1, true), script)
  end)

  it("matches the vvvv:dddd pair: both identical devices, adding to --device", function()
    local r = root_with_ids("/usr/share/misc/pci.ids")
    finally(function() h.rm(r) end)
    local plan = assert(vfioinit.plan({ root = r, sysfs = sys, match = "^1af4:1000 ", devices = { "0000:01:00.1" } }))
    assert.are.same({ "0000:00:03.0", "0000:00:04.0" }, addresses(plan))
    assert.are.same({ "0000:01:00.1", "0000:00:03.0", "0000:00:04.0" }, plan.devices)
  end)

  it("reads Fedora/Arch's /usr/share/hwdata/pci.ids when Debian's path is absent", function()
    local r = root_with_ids("/usr/share/hwdata/pci.ids")
    finally(function() h.rm(r) end)
    local plan = assert(vfioinit.plan({ root = r, sysfs = sys, match = "Advanced Micro Devices.*Audio" }))
    assert.are.same({ "0000:0a:00.1" }, addresses(plan))
  end)

  it("still refuses what the safety rules refuse (the AMD GPU is the boot console)", function()
    local r = root_with_ids("/usr/share/misc/pci.ids")
    finally(function() h.rm(r) end)
    local plan, err = vfioinit.plan({ root = r, sysfs = sys, match = "^1002:" })
    assert.is_nil(plan)
    assert.truthy(err:find("0000:0a:00.0: is the boot VGA device", 1, true), err)
  end)

  it("a pattern that matches nothing is an error naming it", function()
    local r = root_with_ids("/usr/share/misc/pci.ids")
    finally(function() h.rm(r) end)
    local plan, err = vfioinit.plan({ root = r, sysfs = sys, match = "Matrox" })
    assert.is_nil(plan)
    assert.are.equal("--match: Matrox: no PCI device matches (6 looked at, names from /usr/share/misc/pci.ids)", err)
  end)

  it("no pci.ids in root: an error naming where it looked", function()
    local r = root_with_ids(nil)
    finally(function() h.rm(r) end)
    local plan, err = vfioinit.plan({ root = r, sysfs = sys, match = "NVIDIA" })
    assert.is_nil(plan)
    assert.truthy(err:find("^%-%-match: no pci.ids in root %(/usr/share/misc/pci.ids: "), err)
    assert.truthy(err:find("/usr/share/hwdata/pci.ids: ", 1, true), err)
  end)

  it("another root without sysfs: refused, the devices of its machine are not here", function()
    local r = root_with_ids("/usr/share/misc/pci.ids")
    finally(function() h.rm(r) end)
    local plan, err = vfioinit.plan({ root = r, match = "NVIDIA" })
    assert.is_nil(plan)
    assert.truthy(err:find("^%-%-match: chooses among this machine's PCI devices, so it needs %-%-root /"), err)
  end)
end)

describe("--match patterns (core.re)", function()
  it("a bad pattern is one line with PCRE2's message and the offset; nothing is written", function()
    local r = root_with_ids("/usr/share/misc/pci.ids")
    finally(function() h.rm(r) end)
    local before = h.tree_hash(r)
    local code, out, stderr = h.cli("--root " .. h.q(r) .. " --match 'NVIDIA.*(VGA|Audio' apply")
    assert.are.equal(1, code, out)
    assert.are.equal("vfioinit: --match: NVIDIA.*(VGA|Audio: missing closing parenthesis at offset 18\n", stderr)
    assert.are.equal(before, h.tree_hash(r))
    local plan, err = vfioinit.plan({ root = r, match = "[z-a]" })
    assert.is_nil(plan)
    assert.are.equal("--match: [z-a]: range out of order in character class at offset 3", err)
  end)

  it("compiles once and finds byte positions, 1-based", function()
    local rx = assert(core.re.compile("(VGA|Audio)"))
    assert.are.same({ 5, 7 }, { rx:find("abc VGA x") })
    assert.are.same({ 1, 5 }, { rx:find("Audio") })
    assert.is_nil(rx:find("nothing here"))
    -- pci.ids is matched as bytes: a stray non-UTF-8 byte is no error
    assert.are.same({ 2, 4 }, { rx:find("\xffVGA") })
    rx:close()
    assert.has_error(function() rx:find("VGA") end, "regex is closed")
  end)
end)
