--[[ vfioinit.boot.loaders.limine: Limine (limine.conf, the format of Limine 8 and later), one plugin.

Not packaged by Debian: written against upstream's CONFIG.md and common/lib/config.c.
* Where: on each partition (the ESPs /efi, /boot, /boot/efi, and /), the first of
  /EFI/limine/limine.conf (newer Limine: the EFI application's directory), /limine.conf,
  /limine/limine.conf, /boot/limine.conf, /boot/limine/limine.conf, /EFI/BOOT/limine.conf.
* Lines are trimmed (blanks at both ends, CRs dropped). `${NAME}=value` lines define macros
  (the last definition wins; ARCH is x86-64); `${NAME}` anywhere else is replaced (unknown:
  empty), an unclosed `${` is an error. `#` lines are comments.
* `/Title` opens an entry (`//Sub` one level deeper, `+` after the slashes: expanded); an
  entry followed by a deeper one is a directory. Options are `key: value` at a line's start,
  the key case-insensitive, the first occurrence in the entry counting. Global options
  (`default_entry`, `remember_last_entry`) are read before the first entry only.
* A Linux entry (`protocol: linux`) boots `path:` (else `kernel_path:`) with
  `kernel_cmdline:` (else `cmdline:`) and every `module_path:` as initrds. Paths are
  `resource(arg):/path`, `boot():` the config's partition; a `#<hash>` suffix (after the
  last `#`) pins the file: 128 hex digits BLAKE2b, 64 or 256 BLAKE3.
* `default_entry: N` counts the menu as shown (a collapsed directory is one line); with
  `remember_last_entry: yes` the default is in NVRAM: unknown.

Edits: the parameters go on the command-line option of every Linux entry that boots one of
the run's kernels (a `cmdline:` line is added after the heading when it has none), in place.
A word a macro supplies is not edited through the entry (the error names the line). After a
rebuild, a BLAKE2b pin on a file whose contents changed gets the file's new hash
(`repin`); a BLAKE3 pin on a changed file is an error naming file and line. A config whose
own hash is enrolled in the Limine binary (`limine enroll-config`) is not edited.
]]
local core = require("vfioinit.core")
local cmdline = require("vfioinit.edit.cmdline")
local machine = require("vfioinit.machine")
local places = require("vfioinit.boot.places")
local ownids = require("vfioinit.boot.cmdline.ownids")
local words = require("vfioinit.boot.cmdline.words")

local M = { name = "limine", order = 80, stale_images = false, reads = { "limine" }, title = "limine.conf" }

M.CANDIDATES = { "/EFI/limine/limine.conf", "/limine.conf", "/limine/limine.conf", "/boot/limine.conf",
  "/boot/limine/limine.conf", "/EFI/BOOT/limine.conf" }
M.PARTITIONS = { "/efi", "/boot", "/boot/efi", "/" }
M.BUILTIN = { ARCH = "x86-64" }

local function trim(s) return (s:gsub("\r", ""):gsub("^[ \t]+", ""):gsub("[ \t]+$", "")) end

-- Physical lines: { {text= (trimmed), raw=, n=, at= (offset of raw in text)} ... }
local function lines(text)
  local out, n, at = {}, 0, 1
  for raw, nl in text:gmatch("([^\n]*)(\n?)") do
    n = n + 1
    out[#out + 1] = { text = trim(raw), raw = raw, n = n, at = at }
    at = at + #raw + #nl
    if nl == "" then break end
  end
  return out
end

-- `${NAME}` of s replaced from macros; nil, reason for an unclosed one.
local function expand(s, macros)
  local out, i = {}, 1
  while true do
    local a = s:find("${", i, true)
    if not a then out[#out + 1] = s:sub(i); break end
    local b = s:find("}", a + 2, true)
    if not b then return nil, "malformed macro usage (`${` without `}`)" end
    out[#out + 1] = s:sub(i, a - 1) .. (macros[s:sub(a + 2, b - 1)] or "")
    i = b + 1
  end
  return table.concat(out)
end

local function option(l)
  local key, value = l.text:match("^([^:/#][^:]-):[ \t]*(.*)$")
  if key and not key:find("[ \t]") then return key:lower(), value end
end

--- parse(text, path) -> {globals = {key = {value=, line=}}, entries = { {title=, depth=, line=,
-- expanded=, dir=, opts = {key = {value= (expanded), raw=, line=, l=}}, modules = {...}} }}
-- | nil, "path:line: reason"
function M.parse(text, path, builtin)
  local ls, macros = lines(text), {}
  for k, v in pairs(builtin or M.BUILTIN) do macros[k] = v end
  for _, l in ipairs(ls) do
    local name, value = l.text:match("^%${([^}]*)}=(.*)$")
    if name then macros[name], l.macro = value, true end
  end
  local conf, cur = { globals = {}, entries = {} }, nil
  for _, l in ipairs(ls) do
    if not l.macro then
      local v, why = expand(l.text, macros)
      if not v then return nil, ("%s:%d: %s"):format(path, l.n, why) end
      l.value = v
      local slashes, rest = v:match("^(/+)(.*)$")
      if slashes then
        local plus = rest:sub(1, 1) == "+"
        cur = { title = (plus and rest:sub(2) or rest):gsub("^ +", ""), depth = #slashes, line = l.n, l = l,
          expanded = plus, opts = {}, modules = {} }
        local prev = conf.entries[#conf.entries]
        if prev and cur.depth == prev.depth + 1 then prev.dir = true
        elseif cur.depth > 1 and not (prev and cur.depth <= prev.depth + 1) then
          return nil, ("%s:%d: `%s` has no parent entry (Limine: \"Parentless child\")"):format(path, l.n, slashes)
        end
        conf.entries[#conf.entries + 1] = cur
      else
        local key, value = option({ text = v })
        local into = cur and cur.opts or conf.globals
        if key and not into[key] then into[key] = { value = value, raw = select(2, option(l)), line = l.n, l = l } end
        if key == "module_path" and cur then cur.modules[#cur.modules + 1] = { value = value, line = l.n, l = l } end
      end
    end
  end
  return conf
end

--- split_path(value) -> {resource=, arg=, path=, hash=} of a Limine path (`$` gzip mark dropped)
function M.split_path(value)
  local v = value:gsub("^%$", "")
  local hash
  local at = v:match(".*()#")
  if at then v, hash = v:sub(1, at - 1), v:sub(at + 1) end
  local res, arg, p = v:match("^(%w+)%((.-)%):(.*)$")
  return { resource = res, arg = arg, path = p or v, hash = hash }
end

-- The config files of root: { {path=, part=} ... }, one per partition (its first candidate).
function M.configs(ctx)
  local out, seen = {}, {}
  for _, part in ipairs(M.PARTITIONS) do
    -- one listing of the partition instead of a stat per candidate: most are absent
    local names = {}
    for _, n in ipairs(ctx.dir(part) or {}) do names[n] = true end
    for _, c in ipairs(M.CANDIDATES) do
      local p = (part == "/" and "" or part) .. c
      local st = names[c:match("^/([^/]+)")] and ctx.stat(p)
      local real = st and st.type == "file" and core.fs.resolve(ctx.root, p)
      if real then
        if not seen[real] then seen[real] = true; out[#out + 1] = { path = p, part = part } end
        break
      end
    end
  end
  return out
end

-- A Limine path as a path in root: boot() is the config's partition; another resource
-- names a partition root cannot tell: wherever the file is (the config's, /boot, /).
function M.resolve(ctx, part, value)
  local sp = M.split_path(value)
  local p = sp.path
  if p:sub(1, 1) ~= "/" then p = "/" .. p end
  if sp.resource == "boot" and (sp.arg or "") == "" then return places.on_partition(ctx, part, p), sp end
  local r = places.on_partition(ctx, part, p)
  if ctx.stat(r) == nil then r = places.on_partition(ctx, "/boot", p) end
  return r, sp
end

-- The entry Limine selects at startup (default_entry over the menu as shown), or nil.
function M.default(conf)
  local g = conf.globals
  if g.remember_last_entry and g.remember_last_entry.value:lower() == "yes" then return nil end
  local want = tonumber((g.default_entry and g.default_entry.value or "1"):match("^%d+") or "1") or 1
  local shown, hidden_below = {}, nil
  for _, e in ipairs(conf.entries) do
    -- an entry inside a collapsed directory is not a line of the menu
    if not (hidden_below and e.depth > hidden_below) then
      hidden_below = nil
      shown[#shown + 1] = e
      if e.dir and not e.expanded then hidden_below = e.depth end
    end
  end
  local e = shown[want > 0 and want or 1]
  if not e then e = shown[1] end
  if e and not e.dir then return e end
end

-- The command line option an entry boots with (kernel_cmdline first, as boot() reads it).
local function cmdline_opt(e) return e.opts.kernel_cmdline or e.opts.cmdline end
local function kernel_opt(e) return e.opts.path or e.opts.kernel_path end

local function is_linux(e)
  return not e.dir and e.opts.protocol and e.opts.protocol.value == "linux" and kernel_opt(e) ~= nil
end

-- Every config, read and parsed: { {path=, part=, text=, conf=} } | nil, err.
function M.state(ctx)
  local out = {}
  for _, c in ipairs(M.configs(ctx)) do
    local text, err = ctx.read(c.path)
    if not text then return nil, err or (c.path .. ": unreadable") end
    local conf, perr = M.parse(text, c.path)
    if not conf then return nil, perr end
    out[#out + 1] = { path = c.path, part = c.part, text = text, conf = conf }
  end
  return out
end

--- entries(ctx, kver [, st]) -> list of boot chains (loader "limine") | nil, err
function M.entries(ctx, kver, st)
  local err
  if not st then st, err = M.state(ctx) end
  if not st then return nil, err end
  local out, base = {}, machine.pkgbase(ctx.read, kver)
  for _, c in ipairs(st) do
    local def = M.default(c.conf)
    for _, e in ipairs(c.conf.entries) do
      local kpath = is_linux(e) and M.resolve(ctx, c.part, kernel_opt(e).value)
      if kpath and places.names_kernel(kpath, kver, base) then
        local initrds = {}
        for i, m in ipairs(e.modules) do initrds[i] = M.resolve(ctx, c.part, m.value) end
        local ird, cl = initrds[#initrds], cmdline_opt(e)
        out[#out + 1] = { kernel = kver, kind = "image", path = kpath, initramfs = ird, initrds = initrds,
          cmdline = cl and cl.value or "", cmdline_source = c.path, entry = ("limine: %s:%d %s"):format(c.path, e.line, e.title),
          loader = "limine", default = def == e or nil, default_by = def == e and { "Limine (" .. c.path .. ")" } or nil,
          exists = ird ~= nil and ctx.stat(ird) ~= nil }
      end
    end
  end
  return out
end

-- The plugin's (lua/vfioinit/boot/init.lua): the configs read once per run, then per kernel.
function M.read(ctx) return M.state(ctx) end
function M.chains(st, kver) return M.entries(st.ctx, kver, st.of.limine) end

function M.detect(ctx) return #M.configs(ctx) > 0 end

function M.files(ctx)
  local out = {}
  for _, c in ipairs(M.configs(ctx)) do out[#out + 1] = c.path end
  return out
end

function M.regenerate() return nil end

M.SIGNATURE = "++CONFIG_B2SUM_SIGNATURE++"
M.BINARIES = { "EFI/BOOT/BOOTX64.EFI", "EFI/limine/BOOTX64.EFI", "EFI/BOOT/BOOTIA32.EFI" }

-- A Limine binary on root's ESPs with a config hash enrolled (`limine enroll-config`): its
-- path, or nil. Such a binary refuses any config but the one it was enrolled with.
function M.enrolled(ctx)
  for _, d in ipairs(places.boot_dirs(ctx, "EFI")) do
    for _, b in ipairs(M.BINARIES) do
      local p = d.dir .. "/" .. b
      local data = ctx.stat(p) and core.fs.read(ctx.root, p, 16 * 1024 * 1024)
      local at = data and data:find(M.SIGNATURE, 1, true)
      local sum = at and data:sub(at + #M.SIGNATURE, at + #M.SIGNATURE + 127)
      if sum and sum:match("^%x+$") and #sum == 128 and sum:find("[^0]") then return p end
    end
  end
end

-- Where an option's value starts and ends in its raw line (bytes of text).
local function value_span(l)
  local a = l.raw:find(":", 1, true)
  local first = a + #(l.raw:sub(a + 1):match("^[ \t]*"))
  local last = #l.raw - #(l.raw:match("[ \t\r]*$"))
  return l.at + first, l.at + last - 1
end

-- The Linux entries of one config that boot one of `ks`.
local function targets(ctx, c, ks)
  local out = {}
  for _, e in ipairs(c.conf.entries) do
    local kpath = is_linux(e) and M.resolve(ctx, c.part, kernel_opt(e).value)
    for _, k in ipairs(kpath and ks or {}) do
      if places.names_kernel(kpath, k, machine.pkgbase(ctx.read, k)) then out[#out + 1] = e; break end
    end
  end
  return out
end

-- The replacement for one entry's command line, or nil, reason.
local function entry_edit(c, e, wants, drop)
  local cl = cmdline_opt(e)
  if not cl then
    -- no command line yet: one after the heading, indented as the entry's first option
    local first = e.opts.protocol and e.opts.protocol.l or e.l
    local indent = first.raw:match("^[ \t]*")
    local lf = c.text:find("\n", e.l.at, true)
    local at = lf and lf + 1 or #c.text + 1
    local eol = e.l.raw:sub(-1) == "\r" and "\r\n" or "\n"
    local v = assert(cmdline.add("", wants))
    return { at = at, last = at - 1, text = (lf and "" or eol) .. indent .. "cmdline: " .. v .. eol }
  end
  for _, w in ipairs(wants) do
    if cmdline.find(cl.value, w.name) and not cmdline.find(cl.raw:gsub("%${[^}]*}", ""), w.name) then
      return nil, ("%s:%d: %s comes from a macro on this line: set it in the macro's definition"):format(c.path, cl.line, w.name)
    end
  end
  local raw = next(drop) and cmdline.drop_values(cl.raw, ownids.NAME, drop) or cl.raw
  local v, why = cmdline.add(raw, wants)
  if not v then return nil, ("%s:%d: %s"):format(c.path, cl.line, why) end
  if v == cl.raw then return nil end
  local a, b = value_span(cl.l)
  return { at = a, last = b, text = v }
end

--- edits(ctx, wants) -> list of {path=, before=, after=} | nil, "path:line: reason"
function M.edits(ctx, wants)
  local st, err = M.state(ctx)
  if not st then return nil, err end
  local ks, out = words.kernels(ctx), {}
  for _, c in ipairs(st) do
    local list = targets(ctx, c, ks)
    local function words_of(t)
      local parsed = t and M.parse(t, c.path)
      local all = {}
      for _, e in ipairs(parsed and parsed.entries or {}) do
        local cl = cmdline_opt(e)
        all[#all + 1] = cl and cl.value or nil
      end
      return table.concat(all, " ")
    end
    local drop = ownids.drop(ctx, c.path, c.text, words_of, nil, wants)
    local reps = {}
    for _, e in ipairs(list) do
      local r, why = entry_edit(c, e, wants, drop)
      if why then return nil, why end
      reps[#reps + 1] = r
    end
    if #reps > 0 then
      local bin = M.enrolled(ctx)
      if bin then
        return nil, ("%s: the hash of the Limine config is enrolled in %s (limine enroll-config): an edited %s "
          .. "would not boot; put the parameters on its command line by hand and enroll the config again"):format(c.path, bin, c.path)
      end
      out[#out + 1] = { path = c.path, before = c.text, after = words.splice(c.text, reps) }
    end
  end
  return out
end

M.HEX = { [128] = "BLAKE2b", [64] = "BLAKE3", [256] = "BLAKE3" }

--- repin(ctx, changed) -> list of {path=, before=, after=} | nil, "path:line: reason": every
-- path option of root's configs whose `#hash` pins a file in `changed` (a set of root paths:
-- the images a rebuild wrote) gets that file's BLAKE2b now; a BLAKE3 pin cannot be computed
-- here and is an error.
function M.repin(ctx, changed)
  local st, err = M.state(ctx)
  if not st then return nil, err end
  local out = {}
  for _, c in ipairs(st) do
    local reps = {}
    for _, l in ipairs(lines(c.text)) do
      local key, value = option(l)
      local sp = key and value:find("#", 1, true) and M.split_path(value)
      local p = sp and sp.resource and sp.hash and M.resolve(ctx, c.part, value)
      if p and changed[core.fs.resolve(ctx.root, p) or p] then
        if #sp.hash ~= 128 then
          return nil, ("%s:%d: %s is pinned by a %s hash, which vfioinit cannot compute; the rebuild changed %s: "
            .. "pin it again (b2sum, 128 hex digits)"):format(c.path, l.n, p, M.HEX[#sp.hash] or "malformed", p)
        end
        local sum, serr = core.sig.blake2b(ctx.root, p)
        if not sum then return nil, serr end
        if sum ~= sp.hash:lower() then
          local _, b = value_span(l)
          reps[#reps + 1] = { at = b - #sp.hash + 1, last = b, text = sum }
        end
      end
    end
    if #reps > 0 then out[#out + 1] = { path = c.path, before = c.text, after = words.splice(c.text, reps) } end
  end
  return out
end

return M
