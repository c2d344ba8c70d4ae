--[[ vfioinit.boot: the registry of boot-loader plugins (docs/INTERNALS.md "Adding a boot loader").

A plugin is one module, lua/vfioinit/boot/loaders/<name>.lua (built in: every module of that
folder is one, found there, listed nowhere else), or a table given to
`vfioinit.register_bootloader`. It owns what one loader or command-line source is: what it
boots (`read`, `chains`: lua/vfioinit/boot/chains.lua) and how words go on its command line
(`detect`, `edits`, `regenerate`, ...: lua/vfioinit/boot/cmdline/init.lua). Precedence is
declared by each plugin: `order` (lowest first: where its chains are listed, where its edits
go in the plan) and `covers` (the targets it makes redundant). No global state: each
registry is its own table; built-in modules are cached by `require`.
]]
local M = {}

local OPTIONAL = { read = "function", recovery = "function", regenerate = "function", files = "function",
  undo = "function", revert_argvs = "function", unbooted = "function", stale_images = "boolean",
  covers = "table", detect = "function", edits = "function", chains = "function",
  title = "string", repin = "function", readback = "function", ostree = "boolean" }

-- spec's fields, or raise "bad argument #1 to '<fname>' (...)" at `level` (as error() counts
-- it from here: 2 blames check's caller).
function M.check(spec, fname, level)
  local function bad(what) error(("bad argument #1 to '%s' (%s)"):format(fname, what), level + 1) end
  if type(spec) ~= "table" then bad("table expected, got " .. type(spec)) end
  if type(spec.name) ~= "string" or not spec.name:match("^[%w_-]+$") then
    bad("field 'name': a string of letters, digits, '_' and '-' expected")
  end
  if type(spec.order) ~= "number" then bad(("field 'order': number expected, got %s"):format(type(spec.order))) end
  for f, t in pairs(OPTIONAL) do
    if spec[f] ~= nil and type(spec[f]) ~= t then bad(("field '%s': %s expected, got %s"):format(f, t, type(spec[f]))) end
  end
  if not spec.chains and not spec.edits then bad("field 'chains' or 'edits' expected: a plugin boots or edits something") end
  if spec.edits then
    for _, f in ipairs({ "detect", "reads" }) do
      if spec[f] == nil then bad(("field '%s': a plugin with 'edits' needs it"):format(f)) end
    end
  end
  if spec.reads ~= nil and type(spec.reads) ~= "table" and type(spec.reads) ~= "function" then
    bad(("field 'reads': table or function expected, got %s"):format(type(spec.reads)))
  end
  for k, v in pairs(spec.covers or {}) do
    if type(k) ~= "string" or (v ~= true and type(v) ~= "function") then
      bad("field 'covers': {name = true | function(ctx)} expected")
    end
  end
  return spec
end

-- The built-in plugins' module names: the *.lua files of the folder holding this module's
-- loaders/ (as installed, or in the checkout), sorted.
local function builtin_modules()
  local core = require("vfioinit.core")  -- first: a core built for another Lua says so
  local here = package.searchpath("vfioinit.boot", package.path)
  local dir = here and here:gsub("init%.lua$", "") .. "loaders"
  local out = {}
  for _, n in ipairs(dir and core.fs.dir(dir, "/") or {}) do
    local stem = n:match("^([%w_-]+)%.lua$")
    if stem then out[#out + 1] = "vfioinit.boot.loaders." .. stem end
  end
  if #out == 0 then error("vfioinit.boot: no loader plugin found beside " .. tostring(here)) end
  return out
end

local Registry = {}
Registry.__index = Registry

function M.new()
  return setmetatable({ added = {} }, Registry)
end

-- register(spec [, fname, level]) -> spec (checked; raises for a bad one, blaming the
-- caller of register, or `level` as M.check counts it). A plugin of a built-in's name
-- replaces it in this registry.
function Registry:register(spec, fname, level)
  M.check(spec, fname or "register", level or 3)
  self.added[spec.name] = spec
  self.list = nil
  return spec
end

--- all() -> every plugin, by `order` then name.
function Registry:all()
  if self.list then return self.list end
  local by = {}
  for _, m in ipairs(builtin_modules()) do
    local p = M.check(require(m), m, 2)
    by[p.name] = p
  end
  for n, p in pairs(self.added) do by[n] = p end
  local list = {}
  for _, p in pairs(by) do list[#list + 1] = p end
  table.sort(list, function(a, b)
    if a.order ~= b.order then return a.order < b.order end
    return a.name < b.name
  end)
  self.list = list
  return list
end

function Registry:get(name)
  for _, p in ipairs(self:all()) do if p.name == name then return p end end
  return nil, ("unknown boot loader %q (known: %s)"):format(tostring(name), table.concat(self:names(), ", "))
end

--- names([role]) -> the plugins' names in order; role "cmdline": those that edit a command
-- line (the `--cmdline` targets), "chains": those that read what boots.
function Registry:names(role)
  local out = {}
  for _, p in ipairs(self:all()) do
    if not role or (role == "cmdline" and p.edits) or (role == "chains" and p.chains) then out[#out + 1] = p.name end
  end
  return out
end

--- targets(ctx) -> the command-line targets of root: every plugin with `edits` whose
-- `detect(ctx)` holds, minus those a selected one `covers` | nil, err when there is none.
-- An ostree root's command line is its deployments' (lua/vfioinit/ostree.lua): there only
-- the plugins that say `ostree = true`, elsewhere only the others.
function Registry:targets(ctx)
  local found = {}
  for _, p in ipairs(self:all()) do
    if p.edits and (ctx.ostree ~= nil) == (p.ostree == true) and p.detect(ctx) then found[#found + 1] = p end
  end
  -- in order: a target is selected unless one selected before it covers it; one selected
  -- later that covers an earlier one takes it out again
  local covered, list = {}, {}
  local function cover(p)
    for name, when in pairs(p.covers or {}) do
      if when == true or when(ctx) then covered[name] = true end
    end
  end
  for _, p in ipairs(found) do
    if not covered[p.name] then list[#list + 1] = p; cover(p) end
  end
  for i = #list, 1, -1 do if covered[list[i].name] then table.remove(list, i) end end
  if #list == 0 and ctx.ostree then
    return nil, ("%s: --cmdline: an ostree image tree without bootc (kargs.d): its kernel arguments are the "
      .. "deployment's, set where it is deployed"):format(ctx.root)
  end
  if #list == 0 then
    return nil, ("%s: --cmdline: no boot loader configuration found (looked for: %s)")
      :format(ctx.root, table.concat(self:titles(), ", "))
  end
  return list
end

-- What each command-line target looks for, for the message when none is there.
function Registry:titles()
  local out = {}
  for _, p in ipairs(self:all()) do
    if p.edits and not p.ostree then out[#out + 1] = p.title or p.name end
  end
  return out
end

return M
