-- Per-kernel module facts through libkmod: VFIO module states and the native
-- drivers of PCI device IDs.
local core = require("vfioinit.core")
local machine = require("vfioinit.machine")
local util = require("vfioinit.util")
local detect = require("vfioinit.detect")

local M = {}

-- Open a libkmod context on root's /lib/modules/<kver>, with root's own modprobe.d
-- (machine.MODPROBE_DIRS, kmod's own list and precedence).
-- libkmod only ever sees a private copy of these files, each read inside root and
-- only when it is a regular file (src/kmod.c): a symlink cannot lead it to the
-- host's indexes or config, and a FIFO is an error naming it instead of a hang.
-- `dir` (from the run's inventory) saves listing root's kernels again.
function M.open(root, kver, dir)
  if not dir then
    local _, dirs = detect.kernels(root)
    dir = dirs[kver]
  end
  if not dir then
    return nil, ("/lib/modules/%s: no such kernel in %s"):format(kver, root)
  end
  local resolved = core.fs.resolve(root, dir) or dir
  local ctx, err = core.kmod.new(root, resolved, machine.MODPROBE_DIRS)
  if not ctx then return nil, err end
  return ctx, resolved
end
local open = M.open

-- states(root, dir, names) -> {[name] = "module"|"builtin"} (absent: missing) | nil, err:
-- from depmod's text lists (src/moddep.c), without libkmod. What `verify` asks.
function M.states(root, dir, names)
  return core.moddep.states(root, core.fs.resolve(root, dir) or dir, names)
end

-- Strip the host root prefix so paths read as inside root.
local function inside(root, path)
  if not path or root == "/" then return path end
  local prefix = root:gsub("/+$", "")
  if path:sub(1, #prefix + 1) == prefix .. "/" then return path:sub(#prefix + 1) end
  return path
end

-- with_kmod(opts, fn) -> fn(ctx, root)'s results | nil, err: the caller's open context
-- (opts.kmod: a run opens one per kernel), else one on opts.root's kernel opts.kernel for
-- the length of fn, closed after.
local function with_kmod(opts, fn)
  local root = opts.root or "/"
  if opts.kmod then return fn(opts.kmod, root) end  -- the run's context, kept open
  local ctx, err = open(root, opts.kernel)
  if not ctx then return nil, err end
  local out, ferr = fn(ctx, root)
  ctx:close()
  return out, ferr
end

-- modules{root=, kernel=, kmod=nil} -> list of {name=, state=, path=, deps=}
function M.modules(opts)
  return with_kmod(opts, function(ctx, root)
    local out = {}
    for _, name in ipairs(machine.VFIO) do
      local m = ctx:module(name)
      if m then
        out[#out + 1] = { name = name, state = m.state, path = inside(root, m.path), deps = m.deps }
      elseif name ~= "vfio_virqfd" then
        -- vfio_virqfd only belongs to the set on kernels that ship it (before 6.2)
        out[#out + 1] = { name = name, state = "missing" }
      end
    end
    return out
  end)
end

-- module_state{root=, kernel=, name=, kmod=nil} -> "module" | "builtin" | false (absent) | nil, err
function M.module_state(opts)
  return with_kmod(opts, function(ctx)
    local m = ctx:module(opts.name)
    return m and m.state or false
  end)
end

-- The modaliases a device can present: its real one when it is on this machine
-- (root "/"), else vendor:device with the display classes and with any class.
local function modaliases(root, id)
  local v, d = id:upper():match("^(%x%x%x%x):(%x%x%x%x)$")
  local list = {}
  if root == "/" then
    for _, dev in ipairs(core.fs.dir("/", "/sys/bus/pci/devices") or {}) do
      local base = "/sys/bus/pci/devices/" .. dev
      local vend = core.fs.read("/", base .. "/vendor", 64)
      local devid = core.fs.read("/", base .. "/device", 64)
      if vend and devid and vend:lower():match("0x(%x+)") == v:lower() and devid:lower():match("0x(%x+)") == d:lower() then
        local alias = core.fs.read("/", base .. "/modalias", 256)
        if alias then list[#list + 1] = (alias:gsub("%s+$", "")) end
      end
    end
    if #list > 0 then return list end
  end
  -- Sub-IDs are unknown here: libkmod fnmatches alias patterns against the concrete
  -- string we give, so use sub-IDs no alias pins, and the display classes plus "none".
  local base = ("pci:v0000%sd0000%ssvFFFFFFFFsdFFFFFFFF"):format(v, d)
  for _, class in ipairs({ "bc03sc00i00", "bc03sc02i00", "bc03sc80i00", "bcFFscFFiFF" }) do
    list[#list + 1] = base .. class
  end
  return list
end

-- The drivers of each of ids: lookup(modaliases) -> one array of module names per modalias
-- | false | nil, err, asked once for all the modaliases of all the ids.
local function drivers(root, ids, lookup)
  local all, per = {}, {}
  for i, id in ipairs(ids) do
    per[i] = modaliases(root, id)
    for _, a in ipairs(per[i]) do all[#all + 1] = a end
  end
  local res, err = lookup(all)
  if not res then return res, err end
  local out, n = {}, 0
  for i, id in ipairs(ids) do
    local found = {}
    for _ = 1, #per[i] do
      n = n + 1
      for _, m in ipairs(res[n]) do
        if util.norm(m) ~= "vfio_pci" then found[util.norm(m)] = true end
      end
    end
    out[#out + 1] = { id = id, modules = util.sorted_keys(found) }
  end
  return out
end

-- drivers_for{root=, kernel=, ids=, kmod=nil, dir=nil, ctx=nil} -> list of {id=, modules={...}}
-- (dir: the kernel's /lib/modules directory, from the run's inventory; ctx: the run's context,
-- which lists modprobe.d once for the run). depmod's text lists
-- answer (core.moddep.aliases: modprobe.d's aliases, then modules.alias, then the built-in
-- modules', as libkmod's lookup); libkmod only for a kernel without modules.alias.
function M.drivers_for(opts)
  local root = opts.root or "/"
  local ids, err = util.check_ids(opts.ids or {})
  if not ids then return nil, err end
  local dir = opts.dir
  if not dir then
    local _, dirs = detect.kernels(root)
    dir = dirs[opts.kernel]
  end
  if dir then
    local config, cerr = require("vfioinit.modprobe").alias_lines(root, opts.ctx)
    if not config then return nil, cerr end
    local out, lerr = drivers(root, ids, function(all)
      return core.moddep.aliases(root, core.fs.resolve(root, dir) or dir, all, config)
    end)
    if out ~= false then return out, lerr end
  end
  return with_kmod(opts, function(ctx)
    return drivers(root, ids, function(all)
      local res = {}
      for i, a in ipairs(all) do res[i] = ctx:lookup(a) or {} end
      return res
    end)
  end)
end

return M
