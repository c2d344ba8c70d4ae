-- initramfs-tools (Debian, Ubuntu and derivatives): `/etc/initramfs-tools/modules`.
--
-- Upstream facts this relies on (initramfs-tools 0.142, Debian 12):
-- * mkinitramfs reads "${CONFDIR}/modules" (CONFDIR=/etc/initramfs-tools) with
--   hook-functions' add_modules_from_file: `grep '^[^#]' FILE | while read -r module
--   args; do force_load "$module" "$args"; done`, and force_load appends
--   "module args" to ${DESTDIR}/conf/modules (member `conf/modules` of the image).
-- * scripts/functions load_modules() runs `modprobe $m` for each line of
--   /conf/modules in order, skipping empty lines and lines whose first
--   non-blank character is `#`: the file's order is the load order, and a second
--   line for a module already loaded changes nothing (its arguments are ignored).
-- * mkinitramfs copies /etc/modprobe.d/*.conf into every image, so
--   /etc/modprobe.d/vfioinit.conf needs no extra configuration here.
-- * /etc/kernel/postinst.d/initramfs-tools runs `update-initramfs -c -k <kver>`
--   on kernel install; images are /boot/initrd.img-<kver>.
local machine = require("vfioinit.machine")
local order = require("vfioinit.edit.order")
local util = require("vfioinit.util")
local bind = require("vfioinit.bind")

local M = require("vfioinit.generators").identity("initramfs-tools", {
  image_want = { "conf/modules" },
})

-- The module a line names, as `read -r module args` splits it; nil for blank and
-- comment lines.
local function module_of(line)
  local w = line:match("^[ \t]*([^ \t]+)")
  if not w or w:sub(1, 1) == "#" then return nil end
  return w
end

-- Split into lines, each {text=without "\n", nl="\n"|""}.
local function lines_of(text)
  local t, pos = {}, 1
  while pos <= #text do
    local nl = text:find("\n", pos, true)
    if nl then
      t[#t + 1] = { text = text:sub(pos, nl - 1), nl = "\n" }
      pos = nl + 1
    else
      t[#t + 1] = { text = text:sub(pos), nl = "" }
      pos = #text + 1
    end
  end
  return t
end

-- edit_text(text, want, opts) -> new text | nil, msg, line
-- Missing wanted modules, and wanted modules listed after a GPU driver (moved with
-- their arguments), go right before the first GPU driver line, or to the end
-- (vfioinit.edit.order). Later lines naming a wanted module again are dropped: they never
-- took effect.
function M.edit_text(text, want, opts)
  opts = opts or {}
  text = text or ""
  local nul = util.nul_line(text)
  if nul then return nil, "binary file (NUL byte), not a module list", nul end
  local lines = lines_of(text)
  local out, changed = order.before_gpu(lines, want or {}, opts.gpu or util.gpu_set(),
    { name = function(l) return module_of(l.text) end })
  if not changed then return text end
  -- a new line is a `want` string; every line ends in "\n" but an unmoved last one
  local t = {}
  for i, l in ipairs(out) do
    if type(l) == "string" then t[i] = l .. "\n"
    else t[i] = l.text .. (i == #out and l.nl or "\n") end
  end
  return table.concat(t)
end

function M.edits(ctx)
  return util.file_edit(ctx, M.config, function(text)
    return M.edit_text(text, ctx.modules, { gpu = ctx.gpu })
  end)
end

-- The Debian family's name for it (machine.FAMILIES), whatever the os-release says:
-- update-initramfs names images so everywhere.
function M.image_path(_, kver)
  return machine.initrd({ id = "debian" }, kver)
end

-- `-u` refuses to create a missing image; `-c` creates it.
function M.rebuild_argv(ctx, kvers)
  local cmds = {}
  for _, k in ipairs(kvers) do
    local mode = "-u"
    if ctx and ctx.exists and not ctx.exists(M.image_path(ctx, k)) then mode = "-c" end
    cmds[#cmds + 1] = { argv = { "update-initramfs", mode, "-k", k }, kernels = { k } }
  end
  return cmds
end

-- conf/modules inside the image, read the way load_modules() does.
function M.early_modules(contents)
  local set = {}
  local text = util.member(contents, "conf/modules")
  if not text then return set end
  for _, l in ipairs(lines_of(text)) do
    local m = module_of(l.text)
    if m then set[m] = true end
  end
  return set
end

-- Binding by address (lua/vfioinit/bind/init.lua): an init-top script. init-top runs
-- before udev's coldplug, which is itself the init-top script `udev`; mkinitramfs
-- orders the scripts with `tsort` over their PREREQ pairs (hook-functions
-- cache_run_scripts), which lists scripts without prerequisites by name, so "00-"
-- sorts ours before `udev`. mkinitramfs only takes executable scripts (set_initlist).
local BIND_NAME = "00-" .. bind.NAME
local BIND_MEMBER = "scripts/init-top/" .. BIND_NAME
local ORDER = "scripts/init-top/ORDER"

M.bind = {
  script = "/etc/initramfs-tools/" .. BIND_MEMBER,
  want = { BIND_MEMBER, ORDER },
  files = function(ctx)
    local text = "#!/bin/sh\n" .. [[
PREREQ=""
prereqs() { echo "$PREREQ"; }
case "$1" in prereqs) prereqs; exit 0 ;; esac
]] .. ctx.bind.body .. "exit 0\n"
    return { { path = M.bind.script, after = text, mode = 493 } }
  end,
  -- ours is in the image as written, and ORDER runs it before udev's
  check = function(contents, text)
    if util.member(contents, BIND_MEMBER) ~= text then return { M.bind.script } end
    local runs, pos = util.member(contents, ORDER) or "", {}
    local n = 0
    for line in runs:gmatch("[^\n]+") do
      n = n + 1
      local name = line:match("^/scripts/init%-top/(%S+) ")
      if name and not pos[name] then pos[name] = n end
    end
    if not pos[BIND_NAME] then return { BIND_NAME .. " (not in " .. ORDER .. ")" } end
    if pos.udev and pos.udev < pos[BIND_NAME] then return { BIND_NAME .. " (runs after udev in " .. ORDER .. ")" } end
    return {}
  end,
}

return M
