-- Registry of generators. The four built-in ones are loaded by name; a user adds
-- more with register(spec). No global state: each registry is its own table.
local M = {}

M.BUILTIN = { "mkinitcpio", "dracut", "initramfs-tools", "booster" }

local FILES = { ["initramfs-tools"] = "initramfs_tools" }

-- What detection (lua/vfioinit/detect.lua) reads of every built-in: its command, main config
-- and the hooks that make it the active one. Declared here, so a run loads the module of a
-- generator only when it asks anything else of it (the one it acts on); each module starts
-- from its row (M.identity).
local IDENTITY = {
  mkinitcpio = {
    command = "mkinitcpio",
    config = "/etc/mkinitcpio.conf",
    active_evidence = {
      "/usr/lib/kernel/install.d/50-mkinitcpio.install",
      "/usr/share/libalpm/hooks/90-mkinitcpio-install.hook",
    },
  },
  dracut = {
    command = "dracut",
    config = "/etc/dracut.conf",
    active_evidence = {
      "/usr/lib/kernel/install.d/50-dracut.install",
      "/etc/kernel/postinst.d/dracut",
      "/usr/share/libalpm/hooks/90-dracut-install.hook",
    },
  },
  ["initramfs-tools"] = {
    command = "update-initramfs",
    config = "/etc/initramfs-tools/modules",
    active_evidence = { "/etc/kernel/postinst.d/initramfs-tools" },
  },
  booster = {
    command = "booster",
    config = "/etc/booster.yaml",
    active_evidence = {
      "/usr/share/libalpm/hooks/90-booster-install.hook",
      "/usr/share/libalpm/hooks/90-booster.hook",       -- older packaging
      "/usr/lib/kernel/install.d/60-booster.install",
      "/usr/lib/kernel/install.d/50-booster.install",   -- older packaging
    },
  },
}

--- identity(name, fields) -> a built-in generator's table: `fields` with its name, detection's
-- fields and distro_default (the distributions it is the default of: machine.ids).
function M.identity(name, fields)
  local id = assert(IDENTITY[name], name)
  fields.name, fields.command, fields.config, fields.active_evidence = name, id.command, id.config, id.active_evidence
  fields.distro_default = require("vfioinit.machine").ids("generator", name)
  return fields
end

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
      local modname = "vfioinit.generators." .. (FILES[name] or name)
      if package.loaded[modname] then return self:register(package.loaded[modname]) end
      -- a stand-in with detection's fields; the first other field asked loads the module,
      -- which then answers every read the stand-in does not hold
      local meta = { module = modname }
      function meta.__index(_, k)
        meta.__index = require(modname)
        return meta.__index[k]
      end
      return self:register(setmetatable(M.identity(name, {}), meta))
    end
  end
  return nil, ("unknown generator %q (known: %s)"):format(tostring(name), table.concat(self:names(), ", "))
end

--- spec(name) -> the generator's own table (a built-in's module, loaded), as the public
-- vfioinit.generator(name) gives it | nil, err; get() gives a stand-in until it is needed.
function Registry:spec(name)
  local g, err = self:get(name)
  local meta = g and getmetatable(g)
  if meta and meta.module then return require(meta.module) end
  return g, err
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
