--[[ vfioinit.state: what vfioinit changed in a root, kept under <root>/var/lib/vfioinit so
`revert` can restore every file byte for byte (or remove the ones it created) -- but only
files that still hold exactly what vfioinit last wrote: a later hand edit is never lost.
One concern per module:
  state/lock.lua      one lock per root (apply, revert, rebuild)
  state/manifest.lua  where the state lives; the manifest's format and codec (pure)
  state/store.lua     the manifest and backups on disk: load, save, originals
  state/journal.lua   apply's journal: pending writes recorded first, settled after
  state/revert.lua    revert: check every file, then restore each durably
]]
local M = {}

for _, name in ipairs({ "lock", "manifest", "store", "journal", "revert" }) do
  for k, v in pairs(require("vfioinit.state." .. name)) do M[k] = v end
end

return M
