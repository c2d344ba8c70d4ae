-- Fake /sys and /proc/self/mountinfo trees laid out as the kernel lays them out, for the
-- bind safety specs (the `sysfs` option): a PCI function's directory under
-- /sys/devices/pci<dddd:bb>/, one component per bridge or switch port on the way;
-- /sys/bus/pci/devices and iommu_groups links; block devices with /sys/dev/block/MAJ:MIN,
-- /sys/class/block/NAME and (whole disks) /sys/block/NAME links; a partition inside its
-- disk's directory; dm (dm/name, slaves/), md (md/, slaves/), NVMe multipath heads under
-- /sys/devices/virtual/nvme-subsystem/; btrfs' /sys/fs/btrfs/UUID/devices/. Links are
-- relative, as the kernel writes them (Documentation/ABI/testing/sysfs-block, sysfs-fs-btrfs).
local h = require "helpers"

local M = {}

-- The relative link the kernel writes at `link` for `target` (both absolute in /sys).
local function rel(target, link)
  local t, l = {}, {}
  for c in target:gmatch("[^/]+") do t[#t + 1] = c end
  for c in link:gmatch("[^/]+") do l[#l + 1] = c end
  l[#l] = nil
  local i = 1
  while i <= #t and i <= #l and t[i] == l[i] do i = i + 1 end
  return ("../"):rep(#l - i + 1) .. table.concat(t, "/", i)
end

local Fake = {}
Fake.__index = Fake

-- The tree is made by one shell run (Fake:done): a spawn per file would take seconds.
function M.new()
  local d = h.tmpdir()
  local f = setmetatable({ dir = d, cmds = {}, mounts = { "22 27 0:21 / /proc rw,nosuid - proc proc rw" } }, Fake)
  f.cmds[1] = "set -e; mkdir -p " .. h.q(d .. "/sys/kernel/iommu_groups") .. " " .. h.q(d .. "/sys/block")
  return f
end

function Fake:ln(target, link)
  self.cmds[#self.cmds + 1] = ("mkdir -p %s && ln -sfn %s %s"):format(h.q(self.dir .. link:match("^(.*)/")),
    h.q(rel(target, link)), h.q(self.dir .. link))
end

function Fake:write(path, text)
  self.cmds[#self.cmds + 1] = ("mkdir -p %s && printf '%%s\\n' %s > %s"):format(h.q(self.dir .. path:match("^(.*)/")),
    h.q(text), h.q(self.dir .. path))
end

-- done() -> the tree's directory (the `sysfs` option), made.
function Fake:done()
  local out, ok = h.sh(table.concat(self.cmds, "\n") .. " 2>&1")
  assert(ok, out)
  self.cmds = { "set -e" }
  return self.dir
end

-- dev = {addr=, path= (under /sys/devices), vendor=, device=, class=, boot_vga=, group=}
function Fake:pci(dev)
  local dir = "/sys/devices/" .. dev.path
  self:write(dir .. "/vendor", "0x" .. dev.vendor)
  self:write(dir .. "/device", "0x" .. dev.device)
  self:write(dir .. "/class", dev.class)
  if dev.boot_vga ~= nil then self:write(dir .. "/boot_vga", tostring(dev.boot_vga)) end
  self:ln(dir, "/sys/bus/pci/devices/" .. dev.addr)
  if dev.group then
    self:ln("/sys/kernel/iommu_groups/" .. dev.group, dir .. "/iommu_group")
    self:ln(dir, "/sys/kernel/iommu_groups/" .. dev.group .. "/devices/" .. dev.addr)
  end
  return dir
end

-- A block device at `dir` (absolute, under /sys/devices): its dev file and links.
function Fake:block(dir, majmin, whole)
  local name = dir:match("([^/]+)$")
  self:write(dir .. "/dev", majmin)
  self:ln(dir, "/sys/dev/block/" .. majmin)
  self:ln(dir, "/sys/class/block/" .. name)
  if whole then self:ln(dir, "/sys/block/" .. name) end
  return dir
end

function Fake:disk(dir, majmin) return self:block(dir, majmin, true) end

function Fake:partition(disk, n, majmin)
  local pname = disk:match("([^/]+)$") .. (disk:match("%d$") and "p" or "") .. n
  local dir = self:block(disk .. "/" .. pname, majmin, false)
  self:write(dir .. "/partition", tostring(n))
  return dir
end

-- An NVMe namespace 1 of controller nvme<c> at PCI path `pcipath`; `multipath`: the head
-- disk lives under the subsystem (CONFIG_NVME_MULTIPATH=y: Arch, Fedora), the controller
-- holds the hidden per-path disk nvme<c>c<c>n1.
function Fake:nvme(pcipath, c, majmin, multipath)
  local ctrl = "/sys/devices/" .. pcipath .. "/nvme/nvme" .. c
  self:write(ctrl .. "/serial", "S5P2NG0R" .. c)
  if not multipath then return self:disk(ctrl .. "/nvme" .. c .. "n1", majmin) end
  local subsys = "/sys/devices/virtual/nvme-subsystem/nvme-subsys" .. c
  self:ln(ctrl, subsys .. "/nvme" .. c)
  self:write(ctrl .. ("/nvme%dc%dn1/hidden"):format(c, c), "1")
  return self:disk(subsys .. "/nvme" .. c .. "n1", majmin)
end

-- SATA disk sd<letter> on AHCI port `port` of the controller at `pcipath`.
function Fake:sata(pcipath, port, letter, majmin)
  local host = port - 1
  return self:disk(("/sys/devices/%s/ata%d/host%d/target%d:0:0/%d:0:0:0/block/sd%s")
    :format(pcipath, port, host, host, host, letter), majmin)
end

local function holders(self, dir, parts)
  local name = dir:match("([^/]+)$")
  for _, p in ipairs(parts) do
    self:ln(p, dir .. "/slaves/" .. p:match("([^/]+)$"))
    self:ln(dir, p .. "/holders/" .. name)
  end
end

-- dm-<n> called `name` (dm/name) over `parts` (block dirs).
function Fake:dm(n, name, majmin, parts)
  local dir = self:disk("/sys/devices/virtual/block/dm-" .. n, majmin)
  self:write(dir .. "/dm/name", name)
  holders(self, dir, parts)
  return dir
end

-- md array `name` (md127) at `level` over `parts`.
function Fake:md(name, level, majmin, parts)
  local dir = self:disk("/sys/devices/virtual/block/" .. name, majmin)
  self:write(dir .. "/md/level", level)
  for _, p in ipairs(parts) do self:ln(p, dir .. "/md/dev-" .. p:match("([^/]+)$") .. "/block") end
  holders(self, dir, parts)
  return dir
end

-- A btrfs filesystem `uuid` over `parts`.
function Fake:btrfs(uuid, parts)
  self:write("/sys/fs/btrfs/" .. uuid .. "/label", "")
  for _, p in ipairs(parts) do self:ln(p, "/sys/fs/btrfs/" .. uuid .. "/devices/" .. p:match("([^/]+)$")) end
end

-- "/" as mountinfo shows it: MAJ:MIN (0:N for btrfs), type, source, super options, and the
-- mounted directory of the filesystem (a btrfs subvolume: /@).
function Fake:root(majmin, fstype, source, opts, subdir)
  self.mounts[#self.mounts + 1] = ("27 1 %s %s / rw,relatime shared:1 - %s %s %s")
    :format(majmin, subdir or "/", fstype, source, opts or "rw")
  self:write("/proc/self/mountinfo", table.concat(self.mounts, "\n"))
end

function Fake:remove() h.rm(self.dir) end

return M
