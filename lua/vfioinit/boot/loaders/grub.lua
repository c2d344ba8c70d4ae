-- GRUB (grub-mkconfig): the kernel parameters go where grub-mkconfig reads them, then
-- the distribution's own command regenerates grub.cfg.
--   * grub-mkconfig sources /etc/default/grub.d/*.cfg (Debian, Ubuntu: the script says
--     so): new parameters go into the drop-in /etc/default/grub.d/vfioinit.cfg as
--     GRUB_CMDLINE_LINUX_DEFAULT="$GRUB_CMDLINE_LINUX_DEFAULT ...", so later edits of
--     /etc/default/grub still count;
--   * else GRUB_CMDLINE_LINUX_DEFAULT in /etc/default/grub is edited in place.
-- A parameter already set (vfio_pci.ids=X in GRUB_CMDLINE_LINUX) is merged where it is
-- written, never added a second time. The generated grub.cfg is like an image: not
-- backed up, regenerated after apply and after revert.
local machine = require("vfioinit.machine")
local words = require("vfioinit.boot.cmdline.words")
local util = require("vfioinit.util")  -- what only edits need is loaded when they run
local grubvars = util.lazy "vfioinit.boot.cmdline.grubvars"
local bootcfg = require("vfioinit.boot.cfg")
local cmdline = require("vfioinit.edit.cmdline")
local ownids = require("vfioinit.boot.cmdline.ownids")
local wordfiles = util.lazy "vfioinit.boot.cmdline.wordfiles"
local places = require("vfioinit.boot.places")
local trial = require("vfioinit.trial.record")

local M = { name = "grub", order = 30, title = "update-grub, grub-mkconfig, grub2-mkconfig" }

M.DEFAULT = "/etc/default/grub"
M.DROPIN_DIR = "/etc/default/grub.d"
M.DROPIN = M.DROPIN_DIR .. "/vfioinit.cfg"
M.TOOLS = { "update-grub", "grub-mkconfig", "grub2-mkconfig" }

local function find(ctx, cmd) return machine.command(ctx, cmd) end

-- The regeneration tool of root: {name=, path=} or nil (GRUB is not installed).
function M.tool(ctx)
  for _, t in ipairs(M.TOOLS) do
    local p = find(ctx, t)
    if p then return { name = t, path = p } end
  end
end

-- grub.cfg: the one that exists, else where the tool writes it.
function M.config(ctx)
  local cfgs = places.GRUB_CFGS
  for _, c in ipairs(cfgs) do if ctx.exists(c) then return c end end
  local t = M.tool(ctx)
  return (t and t.name == "grub2-mkconfig") and cfgs[2] or cfgs[1]
end

-- True when root's grub-mkconfig sources /etc/default/grub.d/*.cfg (Debian's patch).
function M.dropins(ctx)
  for _, t in ipairs({ "grub-mkconfig", "grub2-mkconfig" }) do
    local p = find(ctx, t)
    local text = p and ctx.read(p)
    if text then return text:find("/default/grub.d/", 1, true) ~= nil end
  end
  return false
end

-- The files this target may edit (revert regenerates grub.cfg when one of them changed).
function M.files(ctx)
  local out = { M.DEFAULT }
  for _, n in ipairs(ctx.dir(M.DROPIN_DIR) or {}) do out[#out + 1] = M.DROPIN_DIR .. "/" .. n end
  out[#out + 1] = M.DROPIN
  return out
end

function M.detect(ctx)
  return M.tool(ctx) ~= nil
end

-- The files grub-mkconfig sources, in its order; our own drop-in apart.
local function sources(ctx, with_dropins)
  local files = {}
  local text, err = ctx.read(M.DEFAULT)
  if err then return nil, err end
  if text then files[#files + 1] = { path = M.DEFAULT, text = text } end
  local own, at
  if with_dropins then
    for _, n in ipairs(ctx.dir(M.DROPIN_DIR) or {}) do
      if n:match("%.cfg$") then
        local p = M.DROPIN_DIR .. "/" .. n
        local t, rerr = ctx.read(p)
        if rerr then return nil, rerr end
        if p == M.DROPIN then own = { path = p, text = t, index = #files + 1 }
        elseif t then files[#files + 1] = { path = p, text = t } end
        -- where ours is (or would be) sourced: before the first name that sorts after it
        if not own and n > "vfioinit.cfg" and not at then at = #files end
      end
    end
  end
  own = own or { index = at or #files + 1 }
  return files, own
end

-- Parameters already written somewhere are merged where they are written, one at a
-- time, evaluating again after each edit so every offset stays true. Each edit makes the
-- effective line's word for one parameter as wanted, so #wants edits are enough: a run
-- needing more is refused, never looped. Returns the evaluation of the edited files, or
-- nil, reason.
local function merges(files, wants, edited)
  for _ = 0, #wants do
    local ev, err = grubvars.evaluate(files)
    if not ev then return nil, err end
    local list, why = words.to_merge(grubvars.line(ev), wants)
    if not list then return nil, ("%s: %s"):format(M.DEFAULT, why) end
    local want = list[1]
    if not want then return ev end
    local w, werr = grubvars.word_at(ev, want.name)
    local new = w and cmdline.add(w.text, { want })
    if not new or new == w.text then
      return nil, ("%s: %s"):format(w and (w.file.path .. ":" .. w.a.line) or M.DEFAULT,
        werr or (want.name .. " is set through a variable vfioinit cannot edit"))
    end
    w.file.text = w.file.text:sub(1, w.lo - 1) .. new .. w.file.text:sub(w.hi + 1)
    edited[w.file.path] = w.file
  end
  return nil, ("%s: the parameters are set through variables vfioinit cannot edit"):format(M.DEFAULT)
end

-- The ids vfioinit added to the user's files before and this run does not name come out
-- first (lua/vfioinit/boot/cmdline/ownids.lua), from the values they are written in.
local function words_of(path)
  return function(text)
    local ev = grubvars.evaluate({ { path = path, text = text } })
    return ev and grubvars.line(ev) or ""
  end
end

local function drop_ids(ctx, files, wants, edited)
  for _, f in ipairs(files) do
    local set = ownids.drop(ctx, f.path, f.text, words_of(f.path), "", wants)
    if next(set) ~= nil then
      local ev, err = grubvars.evaluate({ f })
      if not ev then return nil, err end
      local parts = {}
      for _, var in ipairs(grubvars.VARS) do
        for _, p in ipairs(ev.parts[var]) do parts[#parts + 1] = p end
      end
      table.sort(parts, function(a, b) return a.lo > b.lo end)
      local text = f.text
      for _, p in ipairs(parts) do
        local raw = text:sub(p.lo, p.hi)
        local new = cmdline.drop_values(raw, ownids.NAME, set)
        if new ~= raw then text = text:sub(1, p.lo - 1) .. new .. text:sub(p.hi + 1) end
      end
      if text ~= f.text then f.text = text; edited[f.path] = f end
    end
  end
  return true
end

-- What follows a `--` is init's: in GRUB_CMDLINE_LINUX (written first on the `linux` line)
-- it leaves no place in GRUB_CMDLINE_LINUX_DEFAULT for a kernel parameter.
local function init_in_linux(ev)
  if not select(2, cmdline.split(ev.values.GRUB_CMDLINE_LINUX)) then return nil end
  local parts = ev.parts.GRUB_CMDLINE_LINUX
  for _, p in ipairs(parts) do
    if select(2, cmdline.split(p.file.text:sub(p.lo, p.hi))) then
      return ("%s:%d: GRUB_CMDLINE_LINUX holds `--`, after which every word is init's, not the kernel's: "
        .. "vfioinit cannot add kernel parameters after it; add them before the `--` by hand"):format(p.file.path, p.a.line)
    end
  end
  return ("%s: GRUB_CMDLINE_LINUX holds `--`, after which every word is init's; add the kernel parameters "
    .. "before it by hand"):format(M.DEFAULT)
end

local DROPIN_HEAD = "# Written by vfioinit --cmdline: kernel parameters for VFIO (`vfioinit revert` removes it).\n"

-- The drop-in's text for the words to add (nil: no drop-in needed).
-- After the user's words, unless they hold a `--`: then before them.
local function dropin_text(add, before)
  if #add == 0 then return nil end
  local fmt = before and 'GRUB_CMDLINE_LINUX_DEFAULT="%s $GRUB_CMDLINE_LINUX_DEFAULT"\n'
    or 'GRUB_CMDLINE_LINUX_DEFAULT="$GRUB_CMDLINE_LINUX_DEFAULT %s"\n'
  return DROPIN_HEAD .. fmt:format(table.concat(add, " "))
end

-- In /etc/default/grub itself: append to the last GRUB_CMDLINE_LINUX_DEFAULT, or add one.
local function inplace_add(ev, files, add, edited)
  if #add == 0 then return end
  local parts = ev.parts.GRUB_CMDLINE_LINUX_DEFAULT
  local p = parts[#parts]
  -- the value's `--` (what follows it is init's): the words go before it, where it is written
  for _, q in ipairs(parts) do
    if select(2, cmdline.split(q.file.text:sub(q.lo, q.hi))) then p = q; break end
  end
  local f = p and p.file or files[1]
  if not f then f = { path = M.DEFAULT }; files[1] = f end
  local words_ = table.concat(add, " ")
  if p then
    local t = f.text
    local raw = t:sub(p.lo, p.hi)
    local sep = (raw == "" or raw:match("%s$")) and "" or " "
    local grown = select(2, cmdline.split(raw)) and wordfiles.insert(raw, add) or (raw .. sep .. words_)
    local new = grubvars.bare(p) and ('"' .. grown .. '"') or grown
    f.text = t:sub(1, p.lo - 1) .. new .. t:sub(p.hi + 1)
  else
    -- a new line, with the file's line ends (CRLF stays CRLF)
    local t = f.text or ""
    local eol = t:find("\r\n", 1, true) and "\r\n" or "\n"
    if t ~= "" and not t:match("\n$") then t = t .. eol end
    f.text = t .. ('GRUB_CMDLINE_LINUX_DEFAULT="%s"'):format(words_) .. eol
  end
  edited[f.path] = f
end

-- A run without ids keeps the vfio-pci.ids our drop-in already carries (as modprobe.d keeps
-- its file): the drop-in is written afresh each time, and would otherwise drop them.
local function keep_ids(own, line, wants, add)
  for _, w in ipairs(wants) do if cmdline.norm(w.name) == "vfio_pci.ids" then return end end
  local had = own.text and cmdline.find(own.text:match('GRUB_CMDLINE_LINUX_DEFAULT="(.*)"') or "", "vfio-pci.ids")
  if had and not cmdline.find(line, "vfio-pci.ids") then add[#add + 1] = had.text end
end

-- plan(files, own, use_dropin, wants, edited, before) -> changes | nil, "PATH:LINE: reason":
-- the edits of the files grub-mkconfig sources (pure text; `edited`: the files already
-- changed, `before`: each file's text as read).
local function plan(files, own, use_dropin, wants, edited, before)
  local ev, err = merges(files, wants, edited)
  if not ev then return nil, err end
  local add = words.missing(grubvars.line(ev), wants)
  if use_dropin then keep_ids(own, grubvars.line(ev), wants, add) end
  if #add > 0 then
    local why = init_in_linux(ev)
    if why then return nil, why end
  end
  local changes = {}
  if use_dropin then
    local after = dropin_text(add, select(2, cmdline.split(ev.values.GRUB_CMDLINE_LINUX_DEFAULT)) ~= nil)
    local was = own.text
    if after ~= was then changes[#changes + 1] = { path = M.DROPIN, before = was, after = after } end
    -- a drop-in sourced after ours that sets the variable again would drop the parameters
    for i = own.index, after and #files or 0 do
      local later = grubvars.evaluate({ files[i] })
      for _, p in ipairs(later and later.parts.GRUB_CMDLINE_LINUX_DEFAULT or {}) do
        if not p.selfref then
          return nil, ("%s:%d: sets GRUB_CMDLINE_LINUX_DEFAULT after %s, which would drop vfioinit's "
            .. "parameters; rename it to sort before vfioinit.cfg"):format(files[i].path, p.a.line, M.DROPIN)
        end
      end
    end
  else
    inplace_add(ev, files, add, edited)
  end
  for path, f in pairs(edited) do
    if f.text ~= before[path] then changes[#changes + 1] = { path = path, before = before[path], after = f.text } end
  end
  table.sort(changes, function(a, b) return a.path < b.path end)
  return changes
end

-- edits(ctx, wants) -> list of {path=, before=, after=} | nil, "PATH:LINE: reason"
function M.edits(ctx, wants)
  local use_dropin = M.dropins(ctx)
  local files, own = sources(ctx, use_dropin)
  if not files then return nil, own end
  local edited, before = {}, {}
  for _, f in ipairs(files) do before[f.path] = f.text end
  local ok, derr = drop_ids(ctx, files, wants, edited)
  if not ok then return nil, derr end
  return plan(files, own, use_dropin, wants, edited, before)
end

-- The plan for /etc/default/grub holding `text` alone, edited in place with ids: what the
-- fuzz harness fuzz/grub_vars.c drives (every input ends, as changes or nil, reason).
function M.edit_default(text)
  return plan({ { path = M.DEFAULT, text = text } }, { index = 2 }, false, words.wants({ "10de:1b80" }), {},
    { [M.DEFAULT] = text })
end

-- The command that regenerates grub.cfg (run chrooted, after apply and after revert).
function M.regenerate(ctx)
  local t = M.tool(ctx)
  if not t then return nil end
  if t.name == "update-grub" then return { "update-grub" } end
  return { t.name, "-o", M.config(ctx) }
end

-- A recovery entry (10_linux: "(recovery mode)", `single` before GRUB_CMDLINE_LINUX): its
-- `single` is a kernel word; one after a `--` is init's (`quiet -- single` in
-- GRUB_CMDLINE_LINUX_DEFAULT) and leaves the entry a normal one.
-- `e`: a grub.cfg entry (its `title`) or a chain of this loader (its `entry`).
function M.recovery(e)
  return cmdline.find(e.cmdline or "", "single") ~= nil
    or (e.title or e.entry or ""):find("recovery mode", 1, true) ~= nil
end

-- read(ctx) -> every grub.cfg that may hold menu entries (places.grub_cfgs), parsed, with
-- the grubenv beside it: { {path=, cfg=bootcfg.grub, env=bootcfg.grubenv} ... } | nil, err.
function M.read(ctx)
  local out = {}
  for _, p in ipairs(places.grub_cfgs(ctx)) do
    local text, rerr = ctx.read(p)
    if rerr then return nil, rerr end
    if text then
      local env, eerr = places.grubenv(ctx, p)
      if not env then return nil, eerr end
      out[#out + 1] = { path = p, cfg = bootcfg.grub(text), env = env }
    end
  end
  return out
end

-- grub.cfg's menu entries that boot kver (places.names_kernel: also Arch's
-- `vmlinuz-<pkgbase>`), its default ones first (bootcfg.grub_defaults: grubenv's
-- next_entry, then the default).
function M.chains(st, kver)
  local ctx, out = st.ctx, {}
  local src = ctx.stat(M.DEFAULT) and M.DEFAULT or nil
  for _, g in ipairs(st.of.grub or {}) do
    local defs = {}
    for _, i in ipairs(bootcfg.grub_defaults(g.cfg, g.env)) do defs[i] = true end
    local list, first = {}, 0
    for i, e in ipairs(g.cfg.entries) do
      if st:names_kernel(e.linux, kver) and not trial.owns_entry(e.id) then
        local initrds = {}
        for k, p in ipairs(e.initrd) do initrds[k] = places.grub_path(ctx, p) end
        local ird = initrds[#initrds]
        local c = { kernel = kver, kind = "image", path = places.grub_path(ctx, e.linux), initramfs = ird,
          initrds = initrds, cmdline = e.cmdline, cmdline_source = g.path, cmdline_line = e.linux_line,
          generated_from = src, entry = "grub: " .. table.concat(e.titles, " > "), loader = "grub", default = defs[i],
          default_by = defs[i] and { "GRUB (" .. g.path .. ")" } or nil,
          exists = ird ~= nil and ctx.stat(ird) ~= nil }
        if defs[i] then first = first + 1 end
        table.insert(list, defs[i] and first or #list + 1, c)
      end
    end
    for _, c in ipairs(list) do out[#out + 1] = c end
  end
  return out
end

-- Read back through the chains of grub.cfg; a kernel none of them boots fails.
M.reads = { "grub" }

function M.unbooted(ctx, kver)
  local path = M.config(ctx)
  if not ctx.exists(path) then return path .. ": no grub.cfg (run update-grub)" end
  return ("no grub.cfg entry boots kernel %s"):format(kver)
end

return M
