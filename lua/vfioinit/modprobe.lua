-- /etc/modprobe.d/vfioinit.conf: `options vfio-pci ids=` and softdeps that make
-- vfio-pci load before a device's native driver, wherever the native driver is loaded from.
local machine = require("vfioinit.machine")
local util = require("vfioinit.util")
local context = require("vfioinit.context")

local M = {}

M.FILE = "/etc/modprobe.d/vfioinit.conf"

-- content(ids, drivers) -> text. drivers: sorted list of native driver module names.
function M.content(ids, drivers)
  local out = { "# Written by vfioinit: vfio-pci claims these devices before their native drivers.",
    "# Undo with `vfioinit revert`." }
  if ids and #ids > 0 then
    out[#out + 1] = "options vfio-pci ids=" .. table.concat(ids, ",")
  end
  for _, d in ipairs(drivers) do
    out[#out + 1] = ("softdep %s pre: vfio-pci"):format(d)
  end
  return table.concat(out, "\n") .. "\n"
end

-- modprobe.d(5) as kmod reads it (libkmod-config.c): a backslash before a newline joins
-- the next line, a backslash before any other character drops out (`\\` is one `\`), and a
-- logical line starting with `#` is a comment. vfioinit also drops `#...` later in a line
-- (kmod would hand it on as option text, which modules ignore).
local function logical_lines(text)
  local out, buf, first, n = {}, {}, nil, 0
  for line, nl in text:gmatch("([^\n]*)(\n?)") do
    if line == "" and nl == "" then break end  -- the empty match past the last line
    n = n + 1
    first = first or n
    local k = #line  -- count the trailing backslashes (a loop: `\\*$` is quadratic on a long run)
    while k > 0 and line:byte(k) == 92 do k = k - 1 end
    local joined = (#line - k) % 2 == 1  -- an odd run: the last one escapes the newline
    buf[#buf + 1] = joined and line:sub(1, -2) or line
    if not joined or nl == "" then
      out[#out + 1] = { line = first, text = table.concat(buf):gsub("\\(.)", "%1") }
      buf, first = {}, nil
    end
  end
  return out
end

-- What each command needs after its name (kmod's syntax_error cases); the words after the
-- module name are the directive's args.
local NEEDS = {
  alias = "a name and a module", options = "a module and options", install = "a module and a command",
  remove = "a module and a command", softdep = "a module and its dependencies", blacklist = "a module",
  weakdep = "a module and its dependencies",
}

local function directive(n, words)
  local cmd = words[1]
  local need = NEEDS[cmd]
  if not need then
    if cmd == "include" or cmd == "config" then
      return nil, ("%d: '%s' is obsolete and modprobe ignores it"):format(n, cmd)
    end
    return nil, ("%d: unknown command '%s' (modprobe ignores this line)"):format(n, cmd)
  end
  if #words < (cmd == "blacklist" and 2 or 3) then
    return nil, ("%d: %s needs %s"):format(n, cmd, need)
  end
  local d = { line = n, cmd = cmd, module = words[2], args = {} }
  for i = 3, #words do d.args[i - 2] = words[i] end
  if cmd == "alias" then
    d.name, d.module = words[2], words[3]
  elseif cmd == "softdep" then  -- `pre:`/`post:` switch lists; words before either are ignored
    d.pre, d.post = {}, {}
    local into
    for _, w in ipairs(d.args) do
      if w == "pre:" then into = d.pre elseif w == "post:" then into = d.post
      elseif into then into[#into + 1] = w end
    end
  end
  return d
end

-- parse(text[, lenient]) -> directives | nil, "LINE: reason". Pure: never raises.
-- A directive: { line = first line, cmd =, module =, args = {words after the module} }
-- (+ name for alias, pre/post for softdep). A malformed line is an error, or with
-- `lenient` skipped the way modprobe skips it (its "LINE: reason" goes to a second list).
function M.parse(text, lenient)
  local list, skipped = {}, {}
  for _, l in ipairs(logical_lines(text)) do
    if l.text:sub(1, 1) ~= "#" then
      local words = {}
      for w in l.text:gsub("#.*", ""):gmatch("%S+") do words[#words + 1] = w end
      if #words > 0 then
        local d, err = directive(l.line, words)
        if d then list[#list + 1] = d
        elseif lenient then skipped[#skipped + 1] = err
        else return nil, err end
      end
    end
  end
  return list, skipped
end

local function is_vfio_pci(name) return name and util.norm(name) == "vfio_pci" end

-- The reason directive `d` would defeat vfio-pci claiming `want` (ids joined by ","), or nil.
local function conflict(d, want)
  if d.cmd == "blacklist" and is_vfio_pci(d.module) then
    return "blacklists vfio_pci, which would keep it from claiming the devices"
  elseif d.cmd == "install" and is_vfio_pci(d.module) then
    return ("an install command replaces loading vfio_pci (%s)"):format(table.concat(d.args, " "))
  elseif d.cmd == "options" and is_vfio_pci(d.module) and want then
    for _, a in ipairs(d.args) do
      local v = a:match("^ids=(.*)$")
      if v then
        local theirs = util.check_ids(v)
        if not theirs or table.concat(theirs, ",") ~= want then
          return ("already sets vfio-pci ids=%s (vfioinit would set ids=%s)"):format(v, want)
        end
      end
    end
  end
end

-- The ids an `options vfio-pci ids=` line of vfioinit's file sets (the last one: the kernel
-- keeps the last value of a parameter), as a list, or nil.
function M.ids_of(text)
  local ids
  for _, d in ipairs(M.parse(text or "", true)) do
    if d.cmd == "options" and is_vfio_pci(d.module) then
      for _, a in ipairs(d.args) do
        local v = a:match("^ids=(.*)$")
        if v then ids = util.check_ids(v) end
      end
    end
  end
  return ids
end

-- The modprobe.d files kmod reads, as `read(dir)`/`read_file(path)` see them: each `*.conf`
-- name once, from the first of machine.MODPROBE_DIRS that has it (an /etc file masks a
-- /usr/lib one of the same name), vfioinit's own apart. `list(dir)` -> names;
-- `read(path)` -> text | nil, err. Returns { {path=, text=} ... } | nil, err.
-- `own`: vfioinit's file too.
local function effective(list, read, own)
  local out, seen = {}, {}
  for _, dir in ipairs(machine.MODPROBE_DIRS) do
    for _, name in ipairs(list(dir)) do
      local path = dir .. "/" .. name
      if name:match("%.conf$") and not seen[name] then
        seen[name] = true
        if own or path ~= M.FILE then
          local text, err = read(path)
          if err then return nil, err end
          out[#out + 1] = { path = path, text = text or "" }
        end
      end
    end
  end
  return out
end

-- modprobe_d(ctx) -> effective(...) over ctx's root with vfioinit's own file too | nil, err. A
-- run's context (ctx.once) lists and reads modprobe.d once for the run: alias_lines (per
-- kernel, for --ids) and conflicts both ask. vfioinit's own file is the one modprobe.d file a
-- run writes: it keeps its place in the order with no text, and is read when asked.
local function modprobe_d(ctx)
  return context.once(ctx, "modprobe.d", function()
    return effective(function(dir) return ctx.dir(dir) or {} end,
      function(path) if path == M.FILE then return "", nil end return ctx.read(path) end, true)
  end)
end

-- alias_lines(root[, ctx]) -> "alias PATTERN MODULE\n"... | nil, err: every `alias` line of
-- the modprobe.d files kmod reads in root (vfioinit's own included), for core.moddep.aliases.
-- `ctx`: a run's context over root (context.new), which then lists modprobe.d once.
function M.alias_lines(root, ctx)
  ctx = ctx or context.new({ root = root })
  local list, err = modprobe_d(ctx)
  if not list then return nil, err end
  local out = {}
  for _, f in ipairs(list) do
    local text = f.text
    if f.path == M.FILE then
      text, err = ctx.read(M.FILE)
      if err then return nil, err end
    end
    for _, d in ipairs(M.parse(text or "", true)) do
      if d.cmd == "alias" and d.name and d.module then out[#out + 1] = ("alias %s %s\n"):format(d.name, d.module) end
    end
  end
  return table.concat(out)
end

-- The one rule (apply refuses it in root, verify fails an image for it): the first setting
-- in `files` that would defeat vfio-pci claiming `ids` -> "path:line: reason", or nil.
-- Lines modprobe itself ignores (malformed, unknown commands) are ignored here too.
local function first_conflict(files, ids)
  local want = ids and table.concat(ids, ",") or nil
  for _, f in ipairs(files) do
    for _, d in ipairs(M.parse(f.text, true)) do
      local why = conflict(d, want)
      if why then return ("%s:%d: %s"):format(f.path, d.line, why) end
    end
  end
  return nil
end

-- conflicts(ctx, ids) -> nil | "path:line: reason": settings in root that would defeat ours.
function M.conflicts(ctx, ids)
  local list, err = modprobe_d(ctx)
  if not list then return err end
  local others = {}
  for _, f in ipairs(list) do
    if f.path ~= M.FILE then others[#others + 1] = f end
  end
  return first_conflict(others, ids)
end

-- image_conflicts(entries, contents, ids) -> nil | "path:line: reason": the same rule over
-- an initramfs's modprobe.d (image.list with M.IMAGE_WANT); paths as the image names them.
M.IMAGE_WANT = {}
for _, d in ipairs(machine.MODPROBE_DIRS) do M.IMAGE_WANT[#M.IMAGE_WANT + 1] = d:sub(2) .. "/" end
function M.image_conflicts(entries, contents, ids)
  local names = {}
  for _, e in ipairs(entries) do
    local n = e.name:gsub("^%./", ""):gsub("^/+", "")
    local dir, base = n:match("^(.*)/([^/]+)$")
    if dir and e.type == "file" then
      names[dir] = names[dir] or {}
      table.insert(names[dir], base)
    end
  end
  for _, l in pairs(names) do table.sort(l) end
  local files = effective(function(dir) return names[dir:sub(2)] or {} end,
    function(path) return contents[path:sub(2)] end)
  return first_conflict(files, ids)
end

return M
