-- pci.ids: the names `--match` patterns are matched against (docs/REFERENCE.md "Choosing devices").
--
-- The file (pciutils' format, Debian package `pci.ids`, Fedora/Arch `hwdata`):
--   vvvv  Vendor name                 (no indent)
--   \tdddd  Device name               (one tab: a device of the vendor above)
--   \t\tssss ssss  Subsystem name     (two tabs: ignored here)
--   C cc  Class name                  (the class section at the end)
--   \tss  Subclass name               (one tab inside a class)
--   \t\tpp  Programming interface     (ignored)
-- `#` starts a comment line. Only the lines of the devices asked for are kept.
local core = require("vfioinit.core")

local M = {}

-- Where distributions put it, in the order looked at.
M.PATHS = { "/usr/share/misc/pci.ids", "/usr/share/hwdata/pci.ids" }
M.MAX = 16 * 1024 * 1024  -- today's file is 1.4 MB

-- read(root) -> text, path | nil, reason (every place tried, none readable)
function M.read(root)
  local tried = {}
  for _, p in ipairs(M.PATHS) do
    local text, err = core.fs.read(root, p, M.MAX)
    if text then return text, p end
    tried[#tried + 1] = err
  end
  return nil, "no pci.ids in root (" .. table.concat(tried, "; ") .. "; Debian: apt-get install pci.ids)"
end

-- parse(text) -> db {vendors={[vvvv]={name=, devices={[dddd]=name}}}, classes={[cc]={name=, sub={[ss]=name}}}}
function M.parse(text)
  local db = { vendors = {}, classes = {} }
  local vendor, class
  for line in text:gmatch("[^\n]+") do
    local c = line:sub(1, 1)
    if c == "C" then
      local id, name = line:match("^C (%x%x)%s+(.-)%s*$")
      if id then class = { name = name, sub = {} }; db.classes[id:lower()] = class; vendor = nil end
    elseif c ~= "\t" and c ~= "#" then  -- (a "#" comment matches no pattern below either)
      local id, name = line:match("^(%x%x%x%x)%s+(.-)%s*$")
      if id then vendor = { name = name, devices = {} }; db.vendors[id:lower()] = vendor; class = nil end
    elseif line:sub(2, 2) ~= "\t" then
      if vendor then
        local id, name = line:match("^\t(%x%x%x%x)%s+(.-)%s*$")
        if id then vendor.devices[id:lower()] = name end
      elseif class then
        local id, name = line:match("^\t(%x%x)%s+(.-)%s*$")
        if id then class.sub[id:lower()] = name end
      end
    end
  end
  return db
end

-- describe(db, vendor, device, class) -> "vvvv:dddd Vendor Device [Class]"
-- `class` is sysfs' 24-bit value ("0x030000"); the subclass name when pci.ids has one,
-- else the class name. Unknown names are left out, the IDs are always there. The order
-- puts the vendor before the class so `NVIDIA.*(VGA|Audio)` reads as it is said.
function M.describe(db, vendor, device, class)
  vendor, device = vendor:lower(), device:lower()
  local parts = { vendor .. ":" .. device }
  local v = db.vendors[vendor]
  if v then
    parts[#parts + 1] = v.name
    if v.devices[device] then parts[#parts + 1] = v.devices[device] end
  end
  local hex = (class or ""):lower():gsub("^0x", "")
  local cc, ss = hex:sub(1, 2), hex:sub(3, 4)
  local c = db.classes[cc]
  if c then parts[#parts + 1] = "[" .. (c.sub[ss] or c.name) .. "]" end
  return table.concat(parts, " ")
end

return M
