-- mkinitcpio UKIs: mkinitcpio v41 (uki_add_section .cmdline, no --cmdline given) embeds
-- the first of /etc/kernel/cmdline, /usr/lib/kernel/cmdline that exists, then every
-- /etc/cmdline.d/*.conf (sort -V), lines starting with `#` skipped, joined by blanks; with
-- none of them it reuses /proc/cmdline. vfioinit's file is /etc/cmdline.d/vfioinit.conf;
-- when no source exists at all, it starts from what baseline.lua gives (the running system's
-- command line, what mkinitcpio would have embedded; for another root its own boot entries)
-- so root= and the rest are not lost, and that start is recorded. A preset's
-- `<preset>_cmdline=` (or ALL_cmdline) overrides these files: refused, named.
local machine = require("vfioinit.machine")
local util = require("vfioinit.util")  -- what only edits need is loaded when they run
local wordfiles = util.lazy "vfioinit.boot.cmdline.wordfiles"
local ownids = require("vfioinit.boot.cmdline.ownids")
local baseline = util.lazy "vfioinit.boot.cmdline.baseline"
local preset_files = util.lazy "vfioinit.generators.mkinitcpio_preset"

local M = { name = "cmdline_d", order = 60, stale_images = true, reads = { "bls", "uefi" },
  title = "mkinitcpio presets with _uki=" }

M.DIR = "/etc/cmdline.d"
M.FILE = M.DIR .. "/vfioinit.conf"
M.FIRST = { "/etc/kernel/cmdline", "/usr/lib/kernel/cmdline" }

-- The presets' settings of interest, as "PATH:LINE" lists: { uki = {...}, cmdline = {...} }
-- (any `*_uki=`/`*_cmdline=` with a value), or nil, err when a preset file is bad.
local function presets(ctx)
  local files, err = preset_files.read(ctx)
  if not files then return nil, err end
  local found = { uki = {}, cmdline = {} }
  for _, f in ipairs(files) do
    local names = {}
    for name in pairs(f.vars) do names[#names + 1] = name end
    table.sort(names, function(a, b) return f.vars[a].line < f.vars[b].line end)
    for _, name in ipairs(names) do
      local v = f.vars[name]
      local at = f.path .. ":" .. v.line
      if name:match("_uki$") and v.value and v.value ~= "" then found.uki[#found.uki + 1] = at end
      if name:match("_cmdline$") and v.value and v.value ~= "" then found.cmdline[#found.cmdline + 1] = at end
    end
  end
  return found
end

-- A bad preset file counts as a UKI preset: edits() then names its file and line.
function M.detect(ctx)
  local found = presets(ctx)
  return not found or #found.uki > 0
end

-- The files mkinitcpio reads, in its order ({path=, text=}), or nil, err.
local function sources(ctx)
  local files = {}
  for _, p in ipairs(M.FIRST) do
    local t, err = ctx.read(p)
    if err then return nil, err end
    if t then files[1] = { path = p, text = t }; break end
  end
  local names = {}
  for _, n in ipairs(ctx.dir(M.DIR) or {}) do
    if n:match("%.conf$") then names[#names + 1] = n end
  end
  table.sort(names, machine.version_less)
  for _, n in ipairs(names) do
    local p = M.DIR .. "/" .. n
    local t, err = ctx.read(p)
    if err then return nil, err end
    if t then files[#files + 1] = { path = p, text = t } end
  end
  return files
end

function M.edits(ctx, wants)
  local found, perr = presets(ctx)
  if not found then return nil, perr end
  local over = found.cmdline[1]
  if over then
    return nil, ("%s: sets the UKI's command line itself; vfioinit edits /etc/cmdline.d, add the "
      .. "parameters there by hand or remove that line"):format(over)
  end
  local files, err = sources(ctx)
  if not files then return nil, err end
  -- what a created file starts from when no other source is there (mkinitcpio would
  -- reuse /proc/cmdline); a file created before: its record
  local base
  if #files == 0 then
    local berr
    base, berr = baseline.base(ctx, M.FILE)
    if not base then return nil, berr end
  end
  -- ours with no record: all of it vfioinit's when other sources are there (it was created
  -- without a start), else not known
  local drops, others = {}, 0
  for _, f in ipairs(files) do if f.path ~= M.FILE then others = others + 1 end end
  for _, f in ipairs(files) do
    local from
    if f.path == M.FILE then
      from = baseline.recorded(ctx, M.name)
      if from == false and others > 0 then from = nil end
    end
    drops[f.path] = ownids.drop(ctx, f.path, f.text, wordfiles.line, from, wants)
  end
  local changes, why = wordfiles.plan(files, M.FILE, wants, base, drops)
  if not changes then return nil, ("%s: %s"):format(M.FILE, why) end
  if base then changes[#changes + 1] = baseline.record(ctx, M.name, M.FILE, base) end
  return changes
end

function M.regenerate() return nil end

return M
