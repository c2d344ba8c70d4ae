-- mkinitcpio UKIs: mkinitcpio v41 (uki_add_section .cmdline, no --cmdline given) embeds
-- the first of /etc/kernel/cmdline, /usr/lib/kernel/cmdline that exists, then every
-- /etc/cmdline.d/*.conf (sort -V), lines starting with `#` skipped, joined by blanks; with
-- none of them it reuses /proc/cmdline. vfioinit's file is /etc/cmdline.d/vfioinit.conf;
-- when no source exists at all, it starts from the running system's command line (what
-- mkinitcpio would have embedded) so root= and the rest are not lost. A preset's
-- `<preset>_cmdline=` (or ALL_cmdline) overrides these files: refused, named.
local core = require "vfioinit.core"
local machine = require "vfioinit.machine"
local wordfiles = require "vfioinit.bootloaders.wordfiles"
local words = require "vfioinit.bootloaders.words"
local bls = require "vfioinit.bootloaders.bls"

local M = { name = "cmdline_d", stale_images = true }

M.DIR = "/etc/cmdline.d"
M.FILE = M.DIR .. "/vfioinit.conf"
M.FIRST = { "/etc/kernel/cmdline", "/usr/lib/kernel/cmdline" }
M.PRESETS = "/etc/mkinitcpio.d"

-- The presets' assignments of interest: { uki = {path:line...}, cmdline = {...} }.
local function presets(ctx)
  local found = { uki = {}, cmdline = {} }
  for _, n in ipairs(ctx.dir(M.PRESETS) or {}) do
    local p = M.PRESETS .. "/" .. n
    local t = n:match("%.preset$") and ctx.read(p)
    local sc = t and core.scan.shell(t)
    for _, a in ipairs(sc or {}) do
      if a.name:match("_uki$") and a.value ~= "" then found.uki[#found.uki + 1] = p .. ":" .. a.line end
      if a.name:match("_cmdline$") and a.value ~= "" then found.cmdline[#found.cmdline + 1] = p .. ":" .. a.line end
    end
  end
  return found
end

function M.detect(ctx)
  return #presets(ctx).uki > 0
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
  local over = presets(ctx).cmdline[1]
  if over then
    return nil, ("%s: sets the UKI's command line itself; vfioinit edits /etc/cmdline.d, add the "
      .. "parameters there by hand or remove that line"):format(over)
  end
  local files, err = sources(ctx)
  if not files then return nil, err end
  local base = #files == 0 and words.running() or nil
  local changes, why = wordfiles.plan(files, M.FILE, wants, base)
  if not changes then return nil, ("%s: %s"):format(M.FILE, why) end
  return changes
end

function M.regenerate() return nil end

function M.readback(ctx, wants, kver, run)
  return bls.readback(ctx, wants, kver, run)
end

return M
