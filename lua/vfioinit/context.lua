-- The context handed to generators: root-confined reads plus the run's choices.
-- Every file access goes through vfioinit.core's root-confined primitives.
-- A run (lua/vfioinit/run.lua) builds one and never writes into it: what the plan stage
-- wants (modules, modprobe_file, bind) reaches a generator's `edits` through
-- `context.wanting`, a child of the run's context; `ctx.once` keeps the facts a generator
-- parses from root (mkinitcpio's presets, a kernel's pkgbase) for the run.
local core = require("vfioinit.core")
local util = require("vfioinit.util")
local machine = require("vfioinit.machine")

local M = {}

M.MAX_CONFIG = 1024 * 1024  -- a config larger than this is refused, not parsed

local ENOENT = 2

-- read(path) -> text | nil (absent) | nil, "path: reason". A regular file is read at once
-- (one open); anything else is then named by its stat.
local function reader(root)
  return function(path)
    local text, rerr, rcode = core.fs.read(root, path, M.MAX_CONFIG)
    if text then
      local nul = text:find("\0", 1, true)
      if nul then
        local line = select(2, text:sub(1, nul):gsub("\n", "")) + 1
        return nil, ("%s:%d: binary file (NUL byte), not a configuration file"):format(path, line)
      end
      return text
    end
    if rcode == ENOENT then return nil end
    local st, err, code = core.fs.stat(root, path)
    if not st then
      if code == ENOENT then return nil end
      return nil, err
    end
    if st.type == "dir" then return nil, path .. ": is a directory, expected a file" end
    if st.type ~= "file" then return nil, ("%s: not a regular file (%s)"):format(path, st.kind or st.type) end
    if st.size > M.MAX_CONFIG then
      return nil, ("%s: file too large (%d bytes, limit %d)"):format(path, st.size, M.MAX_CONFIG)
    end
    return nil, rerr
  end
end

function M.new(opts)
  local root = opts.root or "/"
  local ctx = {
    root = root,
    modules = opts.modules or {},
    gpu = opts.gpu or util.gpu_set(),
    ids = opts.ids,
    softdeps = opts.softdeps or false,
    modprobe_file = opts.modprobe_file,
    distro = opts.distro or { id_like = {} },
    kernels = opts.kernels or {},
    warnings = {},
  }
  ctx.read = reader(root)
  -- dir(path) -> sorted names | nil (absent or not a dir)
  function ctx.dir(path)
    local names = core.fs.dir(root, path)
    return names
  end
  function ctx.stat(path, nofollow) return core.fs.stat(root, path, nofollow) end
  function ctx.exists(path) return core.fs.stat(root, path) ~= nil end
  function ctx.warn(msg) ctx.warnings[#ctx.warnings + 1] = msg end
  -- true when the distro's os-release ID or ID_LIKE names one of `ids`
  function ctx.distro_is(...)
    local d = ctx.distro
    for _, want in ipairs({ ... }) do
      if d.id == want then return true end
      for _, like in ipairs(d.id_like or {}) do if like == want then return true end end
    end
    return false
  end
  if opts.facts then M.keep_facts(ctx, opts.once) end
  return ctx
end

-- once(key, fn) over a table of its own: fn()'s results, computed on the first call with `key`.
local function once_fn()
  local memo = {}
  return function(key, fn)
    local m = memo[key]
    if not m then m = util.pack(fn()); memo[key] = m end
    return util.unpack(m, 1, m.n)
  end
end

--- keep_facts(ctx[, once]): a run's context (opts.facts) keeps what no stage writes for the
-- run's life. ctx.once(key, fn) -> fn()'s results, computed on the first call with `key`: what a
-- generator parses from such files (mkinitcpio's presets, a kernel's pkgbase); ctx.read
-- keeps a kernel package's files (<moddir>/<kver>/...), which the generators and the boot
-- chains each ask. A context made for one look (specs, tools) reads afresh every time.
-- `once` (opts.once): the `once` of a finder over the same root (M.finder), whose answers
-- (the bin directories' listings) the context shares instead of listing them again.
function M.keep_facts(ctx, once)
  local kept, read = {}, ctx.read
  ctx.once = once or once_fn()
  function ctx.read(path)
    local k = kept[path]
    if k then return k[1], k[2] end
    local text, err = read(path)
    for _, d in ipairs(machine.MODULE_DIRS) do
      if path:sub(1, #d + 1) == d .. "/" then kept[path] = { text, err } end
    end
    return text, err
  end
end

--- finder(root[, prefix]) -> a `look` for machine.command, over root (or the tree at
-- `prefix` inside it): each of machine.BIN_DIRS is listed once for all the names asked of
-- it. A run makes one per root and hands it to ostree.locate, detect.detect and its context.
function M.finder(root, prefix)
  local pre = prefix or ""
  return { stat = function(p) return core.fs.stat(root, pre .. p) end,
    dir = function(p) return core.fs.dir(root, pre .. p) end, once = once_fn() }
end

--- command_in(root, name) -> machine.command for one name in a root path (a stat per
-- directory: nothing to list for one name).
function M.command_in(root, name)
  return machine.command(function(p) return core.fs.stat(root, p) end, name)
end

--- once(ctx, key, fn) -> ctx.once(key, fn), or fn() for a context without `once` (not a
-- run's; or made by hand with the documented fields only).
function M.once(ctx, key, fn)
  if ctx.once then return ctx.once(key, fn) end
  return fn()
end

--- wanting(ctx, wants) -> a context for generators' `edits`: `ctx` (reads, facts, warnings)
-- with the plan's wants on top, {modules=, modprobe_file=, bind=}; `ctx` is left as it is.
function M.wanting(ctx, wants)
  return setmetatable({ modules = wants.modules or {}, modprobe_file = wants.modprobe_file, bind = wants.bind },
    { __index = ctx })
end

return M
