-- Inventory of a root: distro, kernels, generators and which one is active.
--
-- Active precedence (first that has evidence wins; see docs/REFERENCE.md "Detection"):
--   1. kernel-install plugins (/etc/kernel/install.d masks /usr/lib/kernel/install.d)
--   2. Debian-style /etc/kernel/postinst.d hooks
--   3. pacman hooks (/etc/pacman.d/hooks masks /usr/share/libalpm/hooks)
--   4. the distribution's default generator (os-release ID, then ID_LIKE), if installed
local core = require("vfioinit.core")
local machine = require("vfioinit.machine")
local context = require("vfioinit.context")

local M = {}

local function unquote(v)
  v = v:gsub("%s+$", "")
  local q = v:sub(1, 1)
  if (q == '"' or q == "'") and v:sub(-1) == q then
    v = v:sub(2, -2)
    if q == '"' then v = v:gsub("\\(.)", "%1") end
  end
  return v
end

function M.os_release(root)
  for _, p in ipairs({ "/etc/os-release", "/usr/lib/os-release" }) do
    local text = core.fs.read(root, p, 65536)
    if text then
      local kv = {}
      for line in text:gmatch("[^\n]+") do
        local k, v = line:match("^%s*([A-Z_][A-Z0-9_]*)=(.*)$")
        if k then kv[k] = unquote(v) end
      end
      local like = {}
      for w in (kv.ID_LIKE or ""):gmatch("%S+") do like[#like + 1] = w end
      return { id = kv.ID, id_like = like, version_id = kv.VERSION_ID, name = kv.PRETTY_NAME, source = p }
    end
  end
  return { id_like = {} }
end

-- A kernel counts when its module dir holds an actual module tree or its indexes
-- (a removed kernel can leave an empty /lib/modules/<kver> behind).
local function is_kernel_dir(root, dir)
  for _, f in ipairs({ "modules.dep", "modules.order", "modules.builtin", "kernel" }) do
    if core.fs.stat(root, dir .. "/" .. f) then return true end
  end
  return false
end

-- kernels(root) -> sorted list of kvers, { [kver] = "/lib/modules/<kver>" (path inside root) }
function M.kernels(root)
  local seen, list, dirs = {}, {}, {}
  for _, base in ipairs(machine.MODULE_DIRS) do
    for _, name in ipairs(core.fs.dir(root, base) or {}) do
      local dir = base .. "/" .. name
      local st = core.fs.stat(root, dir)
      if not seen[name] and st and st.type == "dir" and is_kernel_dir(root, dir) then
        seen[name] = true
        list[#list + 1] = name
        dirs[name] = dir
      end
    end
  end
  table.sort(list, machine.version_less)
  return list, dirs
end

local function exists(root, path)
  local st = core.fs.stat(root, path, true)
  return st ~= nil, st
end

-- A file under /usr/lib (or /usr/share) masked by an /etc entry pointing at /dev/null,
-- as kernel-install and pacman do.
local function masked(root, path, etc_dir)
  local name = path:match("[^/]+$")
  local st = core.fs.stat(root, etc_dir .. "/" .. name, true)
  if not st then return false end
  if st.type == "link" then
    -- a link to /dev/null masks; so does one that resolves to nothing inside root
    -- (the root being configured need not have /dev populated)
    local target = core.fs.resolve(root, etc_dir .. "/" .. name)
    return target == nil or target == "/dev/null"
  end
  return st.size == 0
end

local function rank_of(root, path)
  if path:match("^/usr/lib/kernel/install%.d/") then
    if masked(root, path, "/etc/kernel/install.d") then return nil end
    return 1, "kernel-install plugin"
  elseif path:match("^/etc/kernel/install%.d/") then
    return 1, "kernel-install plugin"
  elseif path:match("^/etc/kernel/postinst%.d/") then
    return 2, "kernel postinst hook"
  elseif path:match("^/usr/share/libalpm/hooks/") then
    if masked(root, path, "/etc/pacman.d/hooks") then return nil end
    return 3, "pacman hook"
  elseif path:match("^/etc/pacman%.d/hooks/") then
    return 3, "pacman hook"
  end
  return 4, "hook"
end

-- Installed: its command in one of machine.BIN_DIRS, or its main config present.
local function probe_installed(root, gen, g, look)
  local p = machine.command(look, gen.command)
  if p then
    g.command = p
    g.installed = true
    g.evidence[#g.evidence + 1] = p .. " (command)"
  end
  if gen.config and exists(root, gen.config) then
    g.config = gen.config
    g.installed = true
    g.evidence[#g.evidence + 1] = gen.config .. " (config)"
  end
  g.config = g.config or gen.config
end

-- The best (lowest) rank among the hooks that name the generator, listed as evidence.
local function probe_hooks(root, gen, g)
  local best
  for _, p in ipairs(gen.active_evidence or {}) do
    if exists(root, p) then
      local rank, what = rank_of(root, p)
      if rank then
        g.evidence[#g.evidence + 1] = p .. " (" .. what .. ")"
        if not best or rank < best then best = rank end
      end
    end
  end
  return best
end

local function probe_generator(root, gen, distro, look)
  local g = { name = gen.name, installed = false, active = false, evidence = {} }
  probe_installed(root, gen, g, look)
  g.rank = probe_hooks(root, gen, g)
  -- rule 4: the distribution default (gen.distro_default, from machine.FAMILIES)
  g.default_rank = machine.rank(distro, gen.distro_default or {})
  return g
end

-- detect(root, registry[, look]) -> inventory | nil, err (`look`: context.finder(root), the
-- caller's, whose bin directory listings it shares)
function M.detect(root, registry, look)
  local st, err = core.fs.stat(root, "/")
  if not st then return nil, err end
  local inv = { root = root }
  inv.distro = M.os_release(root)
  inv.kernels, inv.kernel_dirs = M.kernels(root)
  inv.generators = {}
  look = look or context.finder(root)
  for _, gen in ipairs(registry:all()) do
    inv.generators[#inv.generators + 1] = probe_generator(root, gen, inv.distro, look)
  end
  -- hooks first; only an installed generator can be active
  local best
  for _, g in ipairs(inv.generators) do
    if g.installed and g.rank and (not best or g.rank < best.rank) then best = g end
  end
  if best then
    for _, g in ipairs(inv.generators) do
      if g.installed and g.rank == best.rank then g.active = true end
    end
  else
    for _, g in ipairs(inv.generators) do
      if g.installed and g.default_rank and (not best or g.default_rank < best.default_rank) then best = g end
    end
    if best then
      best.active = true
      best.evidence[#best.evidence + 1] = (inv.distro.source or "/etc/os-release") .. " (distribution default)"
    end
  end
  inv.active = best and best.name or nil
  for _, g in ipairs(inv.generators) do g.rank, g.default_rank = nil, nil end
  return inv
end

return M
