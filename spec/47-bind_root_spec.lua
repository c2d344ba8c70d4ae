-- Bind safety (issue 22, item 11): the controllers "/" lives on, through every stack users
-- run (partitions, dm-crypt, LVM, LUKS on LVM, LVM on LUKS, md-raid, btrfs on one or several
-- devices, NVMe multipath heads, PCIe bridges and switches), on fake sysfs trees laid out as
-- the kernel lays them out (spec/sysfs_helpers.lua). Each case passes every device but the
-- boot console and checks which ones are refused as holding the root filesystem: exactly the
-- functions (and bridges/switch ports) on the way to the disks under "/", nothing else.
local h = require "helpers"
local fake_sysfs = require "sysfs_helpers"
local vfioinit = require "vfioinit"

local NVME_PCI = "pci0000:00/0000:00:1d.0/0000:03:00.0"
local SWITCHED_PCI = "pci0000:00/0000:00:1c.0/0000:05:00.0/0000:06:01.0/0000:07:00.0"
local SATA_PCI = "pci0000:00/0000:00:17.0"

local NVME = { "0000:00:1d.0", "0000:03:00.0" }                                 -- root port, NVMe
local SWITCHED = { "0000:00:1c.0", "0000:05:00.0", "0000:06:01.0", "0000:07:00.0" } -- root port, switch up/down, NVMe
local SATA = { "0000:00:17.0" }

-- A desktop: iGPU (the boot console), a GPU + audio behind a bridge, an NVMe on a root
-- port, a second NVMe behind a PCIe switch, an AHCI controller; one IOMMU group each but
-- the GPU's.
local PCI = {
  { addr = "0000:00:02.0", path = "pci0000:00/0000:00:02.0", vendor = "8086", device = "3e92", class = "0x030000", boot_vga = 1, group = "0" },
  { addr = "0000:00:01.0", path = "pci0000:00/0000:00:01.0", vendor = "8086", device = "1901", class = "0x060400", group = "1" },
  { addr = "0000:01:00.0", path = "pci0000:00/0000:00:01.0/0000:01:00.0", vendor = "10de", device = "2206", class = "0x030000", boot_vga = 0, group = "1" },
  { addr = "0000:01:00.1", path = "pci0000:00/0000:00:01.0/0000:01:00.1", vendor = "10de", device = "1aef", class = "0x040300", group = "1" },
  { addr = "0000:00:1d.0", path = "pci0000:00/0000:00:1d.0", vendor = "8086", device = "a330", class = "0x060400", group = "2" },
  { addr = "0000:03:00.0", path = NVME_PCI, vendor = "144d", device = "a808", class = "0x010802", group = "3" },
  { addr = "0000:00:17.0", path = SATA_PCI, vendor = "8086", device = "a352", class = "0x010601", group = "4" },
  { addr = "0000:00:1c.0", path = "pci0000:00/0000:00:1c.0", vendor = "8086", device = "a338", class = "0x060400", group = "5" },
  { addr = "0000:05:00.0", path = "pci0000:00/0000:00:1c.0/0000:05:00.0", vendor = "10b5", device = "8747", class = "0x060400", group = "6" },
  { addr = "0000:06:01.0", path = "pci0000:00/0000:00:1c.0/0000:05:00.0/0000:06:01.0", vendor = "10b5", device = "8747", class = "0x060400", group = "7" },
  { addr = "0000:07:00.0", path = SWITCHED_PCI, vendor = "1987", device = "5018", class = "0x010802", group = "8" },
}

local PASSED = {}
for _, d in ipairs(PCI) do if d.boot_vga ~= 1 then PASSED[#PASSED + 1] = d.addr end end

local function machine()
  local f = fake_sysfs.new()
  for _, d in ipairs(PCI) do f:pci(d) end
  return f
end

local function union(...)
  local out = {}
  for _, l in ipairs({ ... }) do for _, a in ipairs(l) do out[#out + 1] = a end end
  table.sort(out)
  return out
end

-- The devices a plan passing PASSED refuses, sorted; every problem must be a root one.
local function refused(f)
  local r = h.make_root({ os = { ID = "debian", VERSION_ID = '"12"' },
    corpus = { ["/etc/initramfs-tools/modules"] = "initramfs-tools/modules" },
    exec = { "/usr/sbin/update-initramfs", "/etc/kernel/postinst.d/initramfs-tools" } })
  finally(function() h.rm(r); f:remove() end)
  local plan, err = vfioinit.plan({ root = r, devices = PASSED, sysfs = f:done() })
  if plan then return {} end
  local out = {}
  for a in err:gmatch("(%x%x%x%x:%x%x:%x%x%.%x): holds the root filesystem %(or leads to it%)") do out[#out + 1] = a end
  local _, problems = err:gsub("%x%x%x%x:%x%x:%x%x%.%x: ", "")
  assert.are.equal(#out, problems, err)
  table.sort(out)
  return out
end

describe("bind safety: the root filesystem's controllers through every stack", function()
  it("btrfs on dm-crypt on an NVMe partition (mountinfo: 0:N, /dev/mapper/luks-...)", function()
    local f = machine()
    local p2 = f:partition(f:nvme(NVME_PCI, 0, "259:0"), 2, "259:2")
    local luks = f:dm(0, "luks-5a8d0c3e-6b2f-4e0e-9f3a-2d1c7b8e4f10", "254:0", { p2 })
    f:btrfs("0c1e8d5a-7b36-4f4e-a1d2-93e5f0b6c7d8", { luks })
    f:root("0:26", "btrfs", "/dev/mapper/luks-5a8d0c3e-6b2f-4e0e-9f3a-2d1c7b8e4f10",
      "rw,compress=zstd:3,ssd,discard=async,space_cache=v2,subvolid=256,subvol=/@", "/@")
    assert.are.same(union(NVME), refused(f))
  end)

  it("ext4 on a SATA partition", function()
    local f = machine()
    local sda2 = f:partition(f:sata(SATA_PCI, 2, "a", "8:0"), 2, "8:2")
    f:root("8:2", "ext4", "/dev/sda2")
    assert.truthy(sda2)
    assert.are.same(union(SATA), refused(f))
  end)

  it("ext4 on LVM on an NVMe partition", function()
    local f = machine()
    local p2 = f:partition(f:nvme(NVME_PCI, 0, "259:0"), 2, "259:2")
    f:dm(0, "vg0-root", "254:0", { p2 })
    f:root("254:0", "ext4", "/dev/mapper/vg0-root")
    assert.are.same(union(NVME), refused(f))
  end)

  it("LUKS on LVM: ext4 on a crypt device over a logical volume", function()
    local f = machine()
    local p2 = f:partition(f:nvme(NVME_PCI, 0, "259:0"), 2, "259:2")
    local lv = f:dm(0, "vg0-cryptroot", "254:0", { p2 })
    f:dm(1, "root", "254:1", { lv })
    f:root("254:1", "ext4", "/dev/mapper/root")
    assert.are.same(union(NVME), refused(f))
  end)

  it("LVM on LUKS: xfs on a logical volume over a crypt device", function()
    local f = machine()
    local p2 = f:partition(f:nvme(NVME_PCI, 0, "259:0"), 2, "259:2")
    local luks = f:dm(0, "luks-9e1b", "254:0", { p2 })
    f:dm(1, "vg0-root", "254:1", { luks })
    f:root("254:1", "xfs", "/dev/mapper/vg0-root")
    assert.are.same(union(NVME), refused(f))
  end)

  it("md raid1 over partitions of two NVMe drives, one behind a PCIe switch", function()
    local f = machine()
    local a = f:partition(f:nvme(NVME_PCI, 0, "259:0"), 2, "259:2")
    local b = f:partition(f:nvme(SWITCHED_PCI, 1, "259:3"), 2, "259:5")
    f:md("md127", "raid1", "9:127", { a, b })
    f:root("9:127", "ext4", "/dev/md127")
    assert.are.same(union(NVME, SWITCHED), refused(f))
  end)

  it("a partition of an md array (md127p1: its slaves are its disk's)", function()
    local f = machine()
    local a = f:sata(SATA_PCI, 1, "a", "8:0")
    local b = f:disk(("/sys/devices/%s/nvme/nvme0/nvme0n1"):format(NVME_PCI), "259:0")
    local md = f:md("md127", "raid1", "9:127", { a, b })
    f:partition(md, 1, "259:6")
    f:root("259:6", "ext4", "/dev/md127p1")
    assert.are.same(union(SATA, NVME), refused(f))
  end)

  it("btrfs on one partition (anonymous 0:N, the source names the device)", function()
    local f = machine()
    local p2 = f:partition(f:nvme(SWITCHED_PCI, 0, "259:0"), 2, "259:2")
    f:btrfs("3b9e", { p2 })
    f:root("0:30", "btrfs", "/dev/nvme0n1p2", "rw,ssd,space_cache=v2,subvolid=5,subvol=/")
    assert.are.same(union(SWITCHED), refused(f))
  end)

  it("btrfs raid1 over an NVMe and a SATA partition (the source names one of them)", function()
    local f = machine()
    local a = f:partition(f:nvme(NVME_PCI, 0, "259:0"), 2, "259:2")
    local b = f:partition(f:sata(SATA_PCI, 1, "a", "8:0"), 1, "8:1")
    f:btrfs("7f02", { a, b })
    f:btrfs("e551", { f:partition(f:nvme(SWITCHED_PCI, 1, "259:3"), 1, "259:4") })  -- /home: not "/"
    f:root("0:31", "btrfs", "/dev/nvme0n1p2", "rw,ssd,space_cache=v2,subvolid=256,subvol=/@", "/@")
    assert.are.same(union(NVME, SATA), refused(f))
  end)

  it("btrfs raid1 over two LUKS devices, each on its own NVMe", function()
    local f = machine()
    local a = f:dm(0, "luks-a", "254:0", { f:partition(f:nvme(NVME_PCI, 0, "259:0"), 2, "259:2") })
    local b = f:dm(1, "luks-b", "254:1", { f:partition(f:nvme(SWITCHED_PCI, 1, "259:3"), 2, "259:5") })
    f:btrfs("aa10", { a, b })
    f:root("0:32", "btrfs", "/dev/mapper/luks-a", "rw,subvolid=256,subvol=/@", "/@")
    assert.are.same(union(NVME, SWITCHED), refused(f))
  end)

  it("btrfs on LVM named as /dev/VG/LV (dm name VG-LV, dashes doubled)", function()
    local f = machine()
    local lv = f:dm(0, "vg--main-root", "254:0", { f:partition(f:sata(SATA_PCI, 3, "c", "8:32"), 3, "8:35") })
    f:btrfs("c0de", { lv })
    f:root("0:33", "btrfs", "/dev/vg-main/root")
    assert.are.same(union(SATA), refused(f))
  end)

  it("an NVMe multipath head (CONFIG_NVME_MULTIPATH=y: the disk under nvme-subsystem)", function()
    local f = machine()
    local p2 = f:partition(f:nvme(SWITCHED_PCI, 0, "259:0", true), 2, "259:2")
    f:dm(0, "luks-77", "254:0", { p2 })
    f:root("254:0", "ext4", "/dev/mapper/luks-77")
    assert.are.same(union(SWITCHED), refused(f))
  end)

  it("ext4 on an NVMe behind a PCIe switch: the switch ports and the root port lead to it", function()
    local f = machine()
    f:partition(f:nvme(SWITCHED_PCI, 0, "259:0"), 1, "259:1")
    f:root("259:1", "ext4", "/dev/nvme0n1p1")
    assert.are.same(union(SWITCHED), refused(f))
  end)

  it("a network root (nfs): nothing local is refused", function()
    local f = machine()
    f:root("0:40", "nfs4", "10.0.0.1:/srv/root")
    assert.are.same({}, refused(f))
  end)
end)
