-- What the running machine says about its PCI devices: /sys and /proc/self/mountinfo,
-- read through the root-confined core.fs. `base` is "/" on a live system; specs pass a
-- directory that holds a fake `sys/` and `proc/self/mountinfo` (the Lua option `sysfs`).
--
-- Kernel facts this relies on (Documentation/ABI/testing/sysfs-bus-pci, sysfs-kernel-iommu_groups):
-- * /sys/bus/pci/devices/<dddd:bb:dd.f> links to the device's directory under
--   /sys/devices/pci<dddd:bb>/..., one path component per bridge on the way;
--   `vendor`, `device`, `class` hold "0x..." hex; `boot_vga` exists on VGA devices (1 = the
--   firmware's console); `iommu_group` links to /sys/kernel/iommu_groups/<n>.
-- * /sys/kernel/iommu_groups/<n>/devices/ lists the group's devices; no group at all
--   means the IOMMU is off (or absent).
-- * /sys/dev/block/<maj>:<min> and /sys/class/block/<name> link to the block device's
--   directory (its PCI controller among the components); a partition's directory sits in
--   its disk's; a device-mapper or md device names its parts in `slaves/`, a dm device its
--   name in `dm/name`; /sys/fs/btrfs/<UUID>/devices/ links to every device of a btrfs.
local core = require("vfioinit.core")

local M = {}

local ADDR = "^%x%x%x%x:%x%x:%x%x%.%x$"
M.ADDR = ADDR

local Sys = {}
Sys.__index = Sys

function M.new(base) return setmetatable({ base = base or "/" }, Sys) end

-- read(path) -> trimmed text | nil (absent or unreadable)
function Sys:read(path)
  local t = core.fs.read(self.base, path, 65536)
  return t and (t:gsub("%s+$", "")) or nil
end

function Sys:devices()
  local list = core.fs.dir(self.base, "/sys/bus/pci/devices") or {}
  local out = {}
  for _, n in ipairs(list) do if n:match(ADDR) then out[#out + 1] = n end end
  return out
end

-- info(addr) -> {address=, vendor=, device=, class=, boot_vga=bool, group=n|nil} | nil (no such device)
function Sys:info(addr)
  local d = "/sys/bus/pci/devices/" .. addr
  local vendor = self:read(d .. "/vendor")
  if not vendor then return nil end
  local grp = core.fs.resolve(self.base, d .. "/iommu_group")
  return {
    address = addr,
    vendor = vendor:gsub("^0x", ""), device = (self:read(d .. "/device") or ""):gsub("^0x", ""),
    class = self:read(d .. "/class") or "",
    boot_vga = self:read(d .. "/boot_vga") == "1",
    group = grp and core.fs.stat(self.base, grp) and grp:match("/([^/]+)$") or nil,
  }
end

-- A bridge (host 0x0600, PCI-to-PCI 0x0604, semi-transparent 0x0609) is not an endpoint:
-- vfio lets it stay with its driver (pcieport) while the group's endpoints are passed.
function M.is_bridge(class)
  local cs = (class or ""):lower():gsub("^0x", ""):sub(1, 4)
  return cs == "0600" or cs == "0604" or cs == "0609"
end

function Sys:iommu_on()
  local g = core.fs.dir(self.base, "/sys/kernel/iommu_groups")
  return g ~= nil and #g > 0
end

function Sys:group_members(n)
  return core.fs.dir(self.base, "/sys/kernel/iommu_groups/" .. n .. "/devices") or {}
end

-- mountinfo escapes space, tab, newline and backslash in paths as \ooo (octal).
local function unescape(s)
  return (s:gsub("\\(%d%d%d)", function(o) return string.char(tonumber(o, 8)) end))
end

-- The mount "/" as mountinfo says (the last one: a later mount on "/" hides the earlier):
-- its maj:min, its source (/dev/...) and its filesystem type.
function Sys:root_mount()
  local text = core.fs.read(self.base, "/proc/self/mountinfo", 4 * 1024 * 1024)
  if not text then return nil end
  local majmin, source, fstype
  for line in text:gmatch("[^\n]+") do
    local mm, mnt, rest = line:match("^%S+ %S+ (%d+:%d+) %S+ (%S+) .- %- (.*)$")
    if mnt == "/" then
      majmin = mm
      fstype, source = rest:match("^(%S+) (%S+)")
      source = source and unescape(source)
    end
  end
  return majmin, source, fstype
end

-- A block device's sysfs directory (resolved), or nil.
function Sys:block_dir(path)
  local dir = core.fs.resolve(self.base, path)
  return dir and core.fs.stat(self.base, dir) and dir or nil
end

-- The device-mapper device called `name` (its dm/name), among /sys/block's entries.
function Sys:dm_named(name)
  for _, n in ipairs(core.fs.dir(self.base, "/sys/block") or {}) do
    if self:read("/sys/block/" .. n .. "/dm/name") == name then return self:block_dir("/sys/block/" .. n) end
  end
end

-- The block device a mount source names: /dev/NAME is /sys/class/block/NAME;
-- /dev/mapper/NAME the dm device with that dm/name; /dev/VG/LV LVM's dm name VG-LV (a `-`
-- inside either doubled); any other /dev path (udev's /dev/disk/by-*, /dev/md/NAME) the
-- device its link leads to.
function Sys:source_block(source)
  if not (source and source:match("^/dev/")) then return nil end
  local name = source:match("^/dev/([^/]+)$")
  local dir = name and self:block_dir("/sys/class/block/" .. name)
  if dir then return dir end
  local dm = source:match("^/dev/mapper/([^/]+)$")
  if not dm then
    local vg, lv = source:match("^/dev/([^/]+)/([^/]+)$")
    dm = vg and vg ~= "disk" and vg ~= "md" and (vg:gsub("%-", "--") .. "-" .. lv:gsub("%-", "--"))
  end
  dir = dm and self:dm_named(dm)
  if dir then return dir end
  local target = core.fs.resolve(self.base, source)
  local tname = target and target:match("^/dev/([^/]+)$")
  return tname and self:block_dir("/sys/class/block/" .. tname) or nil
end

-- btrfs spans every device of /sys/fs/btrfs/<UUID>/devices/: the filesystems holding one
-- of `dirs` (all of them when `dirs` is empty: the source named none this machine shows).
function Sys:btrfs_devices(dirs)
  local want, out = {}, {}
  for _, d in ipairs(dirs) do want[d] = true end
  for _, fs in ipairs(core.fs.dir(self.base, "/sys/fs/btrfs") or {}) do
    local base = "/sys/fs/btrfs/" .. fs .. "/devices"
    local members, hit = {}, #dirs == 0
    for _, n in ipairs(core.fs.dir(self.base, base) or {}) do
      local d = self:block_dir(base .. "/" .. n)
      if d then members[#members + 1] = d; hit = hit or want[d] end
    end
    if hit then for _, d in ipairs(members) do out[#out + 1] = d end end
  end
  return out
end

-- The block devices "/" lives on: mountinfo's maj:min in /sys/dev/block, else (btrfs'
-- anonymous 0:N) the device its source names; for btrfs, every device of that filesystem.
function Sys:root_blocks()
  local majmin, source, fstype = self:root_mount()
  local dirs = {}
  dirs[1] = majmin and self:block_dir("/sys/dev/block/" .. majmin) or self:source_block(source)
  if fstype == "btrfs" then
    local all = self:btrfs_devices(dirs)
    if #all > 0 then dirs = all end
  end
  return dirs
end

-- What a block device without a PCI function in its own path is made of: a partition's
-- disk (its parent directory), dm/md `slaves/`, the controllers of an NVMe multipath head
-- (it lives under /sys/devices/virtual/nvme-subsystem/nvme-subsysN, whose nvmeN entries
-- link to the controllers; newer kernels also list the paths in the head's `multipath/`).
function Sys:block_parts(dir)
  local out = {}
  local function add(d) if d then out[#out + 1] = d end end
  local parent = dir:match("^(.*)/[^/]+$")
  if core.fs.stat(self.base, dir .. "/partition") and parent then add(parent) end
  for _, sub in ipairs({ "slaves", "multipath" }) do
    for _, s in ipairs(core.fs.dir(self.base, dir .. "/" .. sub) or {}) do add(self:block_dir(dir .. "/" .. sub .. "/" .. s)) end
  end
  if parent and parent:match("/nvme%-subsystem/[^/]+$") then
    for _, c in ipairs(core.fs.dir(self.base, parent) or {}) do
      if c:match("^nvme%d+$") then add(self:block_dir(parent .. "/" .. c)) end
    end
  end
  return out
end

-- PCI addresses on the way to a device's sysfs directory (its function and every bridge
-- or switch port above it), following block_parts where the path has none (depth-limited
-- and each directory once: a loop of links cannot hang the run).
function Sys:pci_of_block(dir, out, depth, seen)
  seen = seen or {}
  if not dir or depth > 16 or seen[dir] then return out end
  seen[dir] = true
  local found = false
  for comp in dir:gmatch("[^/]+") do
    if comp:match(ADDR) then out[comp] = true; found = true end
  end
  if not found then
    for _, d in ipairs(self:block_parts(dir)) do self:pci_of_block(d, out, depth + 1, seen) end
  end
  return out
end

-- root_controllers() -> set of PCI addresses the root filesystem depends on (its
-- controllers and the bridges above them); empty when it cannot be told (e.g. a network root).
function Sys:root_controllers()
  local out = {}
  for _, dir in ipairs(self:root_blocks()) do self:pci_of_block(dir, out, 0) end
  return out
end

return M
