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
-- * /sys/dev/block/<maj>:<min> links to the block device's directory (its PCI controller
--   among the components); a device-mapper or md device names its parts in `slaves/`.
local core = require "vfioinit.core"

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

-- The mount "/" as mountinfo says: its maj:min and its source (/dev/...).
function Sys:root_mount()
  local text = core.fs.read(self.base, "/proc/self/mountinfo", 4 * 1024 * 1024)
  if not text then return nil end
  for line in text:gmatch("[^\n]+") do
    local majmin, mnt, rest = line:match("^%S+ %S+ (%d+:%d+) %S+ (%S+) .- %- (.*)$")
    if mnt == "/" then return majmin, rest:match("^%S+ (%S+)") end
  end
end

-- PCI addresses on the path of a block device's sysfs directory, following dm/md
-- `slaves` (depth-limited: a loop of links cannot hang the run).
function Sys:pci_of_block(dir, out, depth)
  if not dir or depth > 8 then return out end
  local found = false
  for comp in dir:gmatch("[^/]+") do
    if comp:match(ADDR) then out[comp] = true; found = true end
  end
  if not found then
    for _, s in ipairs(core.fs.dir(self.base, dir .. "/slaves") or {}) do
      self:pci_of_block(core.fs.resolve(self.base, dir .. "/slaves/" .. s), out, depth + 1)
    end
  end
  return out
end

-- root_controllers() -> set of PCI addresses the root filesystem depends on (its
-- controller and the bridges above it); empty when it cannot be told (e.g. a network root).
function Sys:root_controllers()
  local majmin, source = self:root_mount()
  local dir = majmin and core.fs.resolve(self.base, "/sys/dev/block/" .. majmin)
  if not (dir and core.fs.stat(self.base, dir)) and source and source:match("^/dev/") then
    -- btrfs and others show an anonymous 0:N; the source names the block device
    dir = core.fs.resolve(self.base, "/sys/class/block/" .. source:match("([^/]+)$"))
  end
  if not (dir and core.fs.stat(self.base, dir)) then return {} end
  return self:pci_of_block(dir, {}, 0)
end

return M
