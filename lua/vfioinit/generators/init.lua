-- Registry of generators. The four built-in ones are loaded by name; a user adds
-- more with register(spec). No global state: each registry is its own table.
local M = {}

M.BUILTIN = { "mkinitcpio", "dracut", "initramfs-tools", "booster" }

local FILES = { ["initramfs-tools"] = "initramfs_tools" }

local Registry = {}
Registry.__index = Registry

function M.new()
  return setmetatable({ order = {}, by_name = {} }, Registry)
end

function Registry:register(spec)
  assert(type(spec) == "table" and type(spec.name) == "string", "generator spec needs a name")
  if not self.by_name[spec.name] then self.order[#self.order + 1] = spec.name end
  self.by_name[spec.name] = spec
  return spec
end

function Registry:get(name)
  local g = self.by_name[name]
  if g then return g end
  for _, b in ipairs(M.BUILTIN) do
    if b == name then
      return self:register(require("vfioinit.generators." .. (FILES[name] or name)))
    end
  end
  return nil, ("unknown generator %q (known: %s)"):format(tostring(name), table.concat(self:names(), ", "))
end

function Registry:names()
  local t = {}
  for _, b in ipairs(M.BUILTIN) do t[#t + 1] = b end
  for _, n in ipairs(self.order) do
    local builtin = false
    for _, b in ipairs(M.BUILTIN) do if b == n then builtin = true end end
    if not builtin then t[#t + 1] = n end
  end
  return t
end

function Registry:all()
  local t = {}
  for _, n in ipairs(self:names()) do t[#t + 1] = assert(self:get(n)) end
  return t
end

return M
