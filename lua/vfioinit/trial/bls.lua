--[[ vfioinit.trial.bls: a Boot Loader Specification trial is an entry with boot counting
(docs/AUTOMATIC_BOOT_ASSESSMENT.md of systemd): `<dir>/vfioinit-trial-<kver>+1.conf`.

systemd-boot 252 (src/boot/efi/boot.c) sorts entries whose "tries left" is 0 to the end,
then entries with a `sort-key` before those without, sort keys in strcmp order; with no
`default` in loader.conf (nor a LoaderEntryOneShot/LoaderEntryDefault variable) it starts
the first. The trial entry carries the sort key "0vfioinit-trial" and `+1`: the next boot
starts it, and systemd-boot renames it `+0-1` first; if that boot fails, the entry is
"bad", sorted last, and the boot after it starts the old default. systemd-bless-boot drops
the counter after a good boot (`vfioinit-trial-<kver>.conf`).
]]
local bootcfg = require("vfioinit.boot.cfg")
local places = require("vfioinit.boot.places")

local M = {}

M.SORT_KEY = "0vfioinit-trial"

--- base(dir, kver) -> the entry's path without its counter and `.conf`
function M.base(dir, kver) return dir .. "/vfioinit-trial-" .. kver end

--- check(ctx, bls) -> true | nil, err: would systemd-boot start the trial first? A
-- `default` in loader.conf (a glob, `@saved`) decides instead of the order: refused.
function M.check(ctx, bls)
  for _, d in ipairs(places.boot_dirs(ctx, "loader")) do
    local p = d.path .. "/loader.conf"
    local n = 0
    for line in ((ctx.read(p) or "") .. "\n"):gmatch("([^\n]*)\n") do
      n = n + 1
      local glob = line:match("^%s*default%s+(%S+)")
      if glob then
        return nil, ("%s:%d: `default %s` chooses what systemd-boot starts, not the order a trial entry "
          .. "relies on: remove it, or apply without --trial"):format(p, n, glob)
      end
    end
  end
  for _, b in ipairs(bls) do
    local k = b.e["sort-key"]
    if k and k <= M.SORT_KEY and not b.name:match("^vfioinit%-trial%-") then
      return nil, ("%s:%d: sort-key %s sorts before the trial's (%s): systemd-boot would start it first"):format(
        b.path, b.e.lines["sort-key"], k, M.SORT_KEY)
    end
  end
  return true
end

--- entry(text, t) -> the trial entry's text from the default entry's: title marked, sort key
-- first, t.initrd in place of the last initrd, `options` = t.cmdline (one line).
function M.entry(text, t)
  local e = bootcfg.bls(text)
  local last = e and e.initrd[#e.initrd]
  local out, options_done, n_initrd = {}, false, 0
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do
    local k, v = line:match("^%s*(%S+)%s*(.-)%s*$")
    if k == "title" then line = "title " .. v .. " (vfioinit trial " .. t.id .. ")"
    elseif k == "sort-key" then line = nil
    elseif k == "initrd" then
      n_initrd = n_initrd + 1
      if n_initrd == #e.initrd and v == last then line = "initrd " .. t.initrd end
    elseif k == "options" then
      line = not options_done and ("options " .. t.cmdline) or nil
      options_done = true
    end
    if line then out[#out + 1] = line end
  end
  while out[#out] == "" do out[#out] = nil end
  if not options_done then out[#out + 1] = "options " .. t.cmdline end
  table.insert(out, 2, "sort-key " .. M.SORT_KEY)
  return table.concat(out, "\n") .. "\n"
end

--- find(ctx, base [, ext]) -> name of the entry file now (any counter) and its state:
-- "pending" (+1), "started" (+0-1: systemd-boot booted it; not marked good), "good"
-- (no counter: systemd-bless-boot marked it good), or nil when it is gone. `ext` is the
-- entry's suffix: ".conf" (type #1, the default) or ".efi" (a type #2 UKI).
function M.find(ctx, base, ext)
  ext = ext or ".conf"
  local dir, stem = base:match("^(.*)/([^/]+)$")
  local e = ext:gsub("%p", "%%%0")
  for _, n in ipairs(ctx.dir(dir) or {}) do
    if n == stem .. ext then return dir .. "/" .. n, "good" end
    local left, done = n:match("^" .. stem:gsub("%p", "%%%0") .. "%+(%d+)%-?(%d*)" .. e .. "$")
    if left then
      if tonumber(left) > 0 and (done == "" or done == "0") then return dir .. "/" .. n, "pending" end
      return dir .. "/" .. n, "started"
    end
  end
  return nil
end

return M
