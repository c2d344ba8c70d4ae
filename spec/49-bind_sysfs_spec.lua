-- Bind by PCI address (issue 16, item 2): the safety rules on a live system, on fake sysfs
-- trees laid out like the kernel's (devices under /sys/devices/pci0000:00/..., the
-- /sys/bus/pci/devices links, iommu_groups, /sys/dev/block, /proc/self/mountinfo), given
-- through the `sysfs` option users never need.
local h = require "helpers"
local vfioinit = require "vfioinit"

local DEBIAN = { ID = "debian", VERSION_ID = '"12"' }
local GPU, AUDIO, NVME, BRIDGE = "0000:01:00.0", "0000:01:00.1", "0000:03:00.0", "0000:00:01.0"

local function debian_root()
  return h.make_root({ os = DEBIAN, corpus = { ["/etc/initramfs-tools/modules"] = "initramfs-tools/modules" },
    exec = { "/usr/sbin/update-initramfs", "/etc/kernel/postinst.d/initramfs-tools" } })
end

local function ln(target, link) h.sh(("mkdir -p %s && ln -sfn %s %s"):format(h.q(link:match("^(.*)/")), h.q(target), h.q(link))) end

-- fake_sys(devs, opts) -> dir: devs = { {addr=, path= (under /sys/devices), vendor=, device=,
-- class=, boot_vga=, group=} }; opts.root_block = "/sys/devices/... block dir" of "/".
local function fake_sys(devs, opts)
  opts = opts or {}
  local d = h.tmpdir()
  for _, dev in ipairs(devs) do
    local dir = d .. "/sys/devices/" .. dev.path
    h.writefile(dir .. "/vendor", "0x" .. dev.vendor .. "\n")
    h.writefile(dir .. "/device", "0x" .. dev.device .. "\n")
    h.writefile(dir .. "/class", dev.class .. "\n")
    if dev.boot_vga ~= nil then h.writefile(dir .. "/boot_vga", dev.boot_vga .. "\n") end
    -- absolute links resolve inside the fake root (core.fs), as the kernel's relative ones do in /
    ln("/sys/devices/" .. dev.path, d .. "/sys/bus/pci/devices/" .. dev.addr)
    if dev.group then
      ln("/sys/kernel/iommu_groups/" .. dev.group, dir .. "/iommu_group")
      ln("/sys/devices/" .. dev.path, d .. "/sys/kernel/iommu_groups/" .. dev.group .. "/devices/" .. dev.addr)
    end
  end
  h.sh("mkdir -p " .. h.q(d .. "/sys/kernel/iommu_groups"))
  local block = opts.root_block or "/sys/devices/pci0000:00/0000:00:1d.0/" .. NVME .. "/nvme/nvme0/nvme0n1/nvme0n1p2"
  h.sh("mkdir -p " .. h.q(d .. block))
  ln("../.." .. block:gsub("^/sys", ""), d .. "/sys/dev/block/259:2")  -- relative, as the kernel writes it
  h.writefile(d .. "/proc/self/mountinfo", "22 27 0:21 / /proc rw - proc proc rw\n"
    .. "27 1 259:2 / / rw,relatime - ext4 /dev/nvme0n1p2 rw\n")
  return d
end

-- A desktop with a GPU + its audio function in group 1 behind a bridge, the boot console
-- on the iGPU, the root filesystem on NVMe.
local function desktop(over)
  local devs = {
    { addr = "0000:00:02.0", path = "pci0000:00/0000:00:02.0", vendor = "8086", device = "3e92", class = "0x030000", boot_vga = 1, group = "0" },
    { addr = BRIDGE, path = "pci0000:00/" .. BRIDGE, vendor = "8086", device = "1901", class = "0x060400", group = "1" },
    { addr = GPU, path = "pci0000:00/" .. BRIDGE .. "/" .. GPU, vendor = "10de", device = "2206", class = "0x030000", boot_vga = 0, group = "1" },
    { addr = AUDIO, path = "pci0000:00/" .. BRIDGE .. "/" .. AUDIO, vendor = "10de", device = "1aef", class = "0x040300", group = "1" },
    { addr = "0000:00:1d.0", path = "pci0000:00/0000:00:1d.0", vendor = "8086", device = "a330", class = "0x060400", group = "2" },
    { addr = NVME, path = "pci0000:00/0000:00:1d.0/" .. NVME, vendor = "144d", device = "a808", class = "0x010802", group = "3" },
  }
  for _, f in ipairs(over or {}) do f(devs) end
  return devs
end

local function plan_on(devices, sys, extra)
  local r = debian_root()
  local opts = { root = r, devices = devices, sysfs = sys }
  for k, v in pairs(extra or {}) do opts[k] = v end
  local before = h.tree_hash(r)
  local plan, err = vfioinit.plan(opts)
  assert.are.equal(before, h.tree_hash(r))
  h.rm(r)
  return plan, err
end

describe("bind safety (fake sysfs)", function()
  it("refuses a device whose IOMMU group holds another endpoint not passed, and lists it", function()
    local sys = fake_sys(desktop())
    finally(function() h.rm(sys) end)
    local plan, err = plan_on({ GPU }, sys)
    assert.is_nil(plan)
    assert.are.equal("--device " .. GPU .. ": IOMMU group 1 also holds " .. AUDIO
      .. "; pass it too (--device), or none of them", err)
  end)

  it("accepts the whole group: the bridge in it is not an endpoint", function()
    local sys = fake_sys(desktop())
    finally(function() h.rm(sys) end)
    local plan, err = plan_on({ GPU, AUDIO }, sys)
    assert(plan, err)
    assert.are.same({ GPU, AUDIO }, plan.devices)
    assert.are.same({}, plan.warnings)
  end)

  it("refuses the boot VGA device unless force", function()
    local sys = fake_sys(desktop())
    finally(function() h.rm(sys) end)
    local plan, err = plan_on({ "0000:00:02.0" }, sys)
    assert.is_nil(plan)
    assert.are.equal("--device 0000:00:02.0: is the boot VGA device (the console the firmware set up); --force passes it anyway", err)
    assert(plan_on({ "0000:00:02.0" }, sys, { force = true }))
  end)

  it("refuses the controller that holds the root filesystem unless force", function()
    local sys = fake_sys(desktop())
    finally(function() h.rm(sys) end)
    local plan, err = plan_on({ NVME }, sys)
    assert.is_nil(plan)
    assert.are.equal("--device " .. NVME .. ": holds the root filesystem (or leads to it); --force passes it anyway", err)
    assert(plan_on({ NVME }, sys, { force = true }))
  end)

  it("follows a device-mapper root to the disk under it", function()
    local devs = desktop()
    local sys = fake_sys(devs, { root_block = "/sys/devices/virtual/block/dm-0" })
    finally(function() h.rm(sys) end)
    local part = "/sys/devices/pci0000:00/0000:00:1d.0/" .. NVME .. "/nvme/nvme0/nvme0n1/nvme0n1p2"
    h.sh("mkdir -p " .. h.q(sys .. part))
    ln(part,
      sys .. "/sys/devices/virtual/block/dm-0/slaves/nvme0n1p2")
    local plan, err = plan_on({ NVME }, sys)
    assert.is_nil(plan)
    assert.truthy(err:find(NVME .. ": holds the root filesystem", 1, true), err)
  end)

  it("says plainly when the IOMMU is off (no groups) and still applies the other rules", function()
    local devs = desktop()
    for _, d in ipairs(devs) do d.group = nil end
    local sys = fake_sys(devs)
    finally(function() h.rm(sys) end)
    local plan = assert(plan_on({ GPU }, sys))
    assert.are.equal(1, #plan.warnings)
    assert.truthy(plan.warnings[1]:find("^the IOMMU is off %(no /sys/kernel/iommu_groups%)"), plan.warnings[1])
    local p2, err = plan_on({ NVME }, sys)
    assert.is_nil(p2)
    assert.truthy(err:find("holds the root filesystem", 1, true), err)
  end)

  it("refuses an address that is not on the machine, listing every problem in one line", function()
    local sys = fake_sys(desktop())
    finally(function() h.rm(sys) end)
    local plan, err = plan_on({ "0000:09:00.0", "0000:0a:00.0" }, sys)
    assert.is_nil(plan)
    assert.are.equal("--device 0000:09:00.0: no such PCI device on this machine; 0000:0a:00.0: no such PCI device on this machine", err)
  end)

  it("checks nothing for another root without a sysfs: its machine is not this one", function()
    local plan, err = plan_on({ "0000:09:00.0" }, nil)
    assert(plan, err)
    assert.are.same({ "0000:09:00.0" }, plan.devices)
  end)
end)
