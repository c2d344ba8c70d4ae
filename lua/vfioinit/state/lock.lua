--- vfioinit.state.lock: one lock per root serialises apply, revert and rebuild: flock on
-- root's own directory (src/lock.c), so it creates nothing inside root and leaves nothing
-- behind. A second vfioinit waits up to LOCK_TIMEOUT seconds (env VFIOINIT_LOCK_TIMEOUT;
-- default 900, more than a rebuild's 600 s timeout), then fails with "/: locked by another
-- process".
local core = require("vfioinit.core")
local util = require("vfioinit.util")

local M = {}

M.LOCK_TIMEOUT, M.LOCK_TIMEOUT_ERROR = util.lock_timeout(os.getenv("VFIOINIT_LOCK_TIMEOUT"), 900)
local held = {}  -- roots this process holds the lock of: with_lock is re-entrant

-- with_lock(root, fn, ...) -> fn(...)'s results, run while holding root's lock.
function M.with_lock(root, fn, ...)
  local key = root:gsub("/+$", "")
  if held[key] then return fn(...) end
  local lk, err = core.lock.acquire(root, "/", M.LOCK_TIMEOUT)
  if not lk then return nil, root .. ": another vfioinit is running on this root (" .. err .. ")" end
  held[key] = true
  local res = util.pack(pcall(fn, ...))
  held[key] = nil
  lk:unlock()
  if not res[1] then error(res[2], 0) end
  return util.unpack(res, 2, res.n)
end

return M
