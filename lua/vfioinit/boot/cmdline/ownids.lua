-- One rule for `vfio-pci.ids=` on every command-line target (docs/REFERENCE.md "The kernel command
-- line"), the rule modprobe.d's own file follows: after an apply with --ids, the ids on
-- the line are the user's own + exactly the ones this apply names. An id an earlier apply
-- added that this one does not name is taken out again; an id the user wrote is never
-- taken out. An apply without --ids leaves the ids as they are.
--
-- Which ids vfioinit added to a file is read from the manifest (lua/vfioinit/state/):
-- the ids the file holds now minus those of its first original (the backup), or minus
-- those of what it was created from. When the file no longer holds exactly what vfioinit
-- last wrote (a hand edit), nothing is known about who wrote which id: none is dropped.
local core = require("vfioinit.core")
local state = require("vfioinit.state.manifest")
local cmdline = require("vfioinit.edit.cmdline")

local M = {}

M.NAME = "vfio-pci.ids"

-- The ids this run names (a set, lowercased), or nil when it names none.
function M.wanted(wants)
  for _, w in ipairs(wants) do
    if cmdline.norm(w.name) == cmdline.norm(M.NAME) then return cmdline.values(M.NAME .. "=" .. w.value, M.NAME) end
  end
end

-- The manifest entry of path (nil: vfioinit never wrote it, or the state cannot be read).
local function entry(ctx, path)
  local text = ctx.read(state.MANIFEST)
  local list = text and state.parse_manifest(text)
  for _, e in ipairs(list or {}) do
    if e.path == path then return e end
  end
end

-- added(ctx, path, now, words_of, base) -> set of the ids vfioinit put into `path`, whose
-- text is `now`; words_of(text) gives a file's command line; base = the line a created
-- file started from, as vfioinit recorded it (nil: none, all of it is vfioinit's; false:
-- not known, none is taken for vfioinit's).
function M.added(ctx, path, now, words_of, base)
  local e = entry(ctx, path)
  if not e or e.flags.reverted or e.flags.edited or now == nil then return {} end
  local sum = core.hash.sha256(now)
  if sum ~= e.last and sum ~= e.next then return {} end
  local user
  if e.kind == "created" then
    if base == false then return {} end
    user = base or ""
  else
    local orig = ctx.read(e.backup)
    if not orig then return {} end
    user = words_of(orig)
  end
  local mine, theirs = cmdline.values(words_of(now), M.NAME), cmdline.values(user, M.NAME)
  for id in pairs(theirs) do mine[id] = nil end
  return mine
end

-- drop(ctx, path, now, words_of, base, wants) -> the set of ids to take out of `path` for
-- this run (empty unless the run names ids).
function M.drop(ctx, path, now, words_of, base, wants)
  local want = M.wanted(wants)
  if not want then return {} end
  local out = {}
  for id in pairs(M.added(ctx, path, now, words_of, base)) do
    if not want[id] then out[id] = true end
  end
  return out
end

return M
