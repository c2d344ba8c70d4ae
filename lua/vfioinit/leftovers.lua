--[[ vfioinit.leftovers: what an interrupted rebuild left, settled before anything else
runs under the lock. A rebuild (lua/vfioinit/rebuild.lua) keeps each image it replaces
as `<image>.vfioinit-prev` until the new one verifies; a no-op apply sweeps for such
copies without loading the rebuild itself.
]]
local core = require("vfioinit.core")
local util = require("vfioinit.util")
local imagelib = util.lazy "vfioinit.image"

local M = {}

M.BACKUP_SUFFIX = ".vfioinit-prev"

-- A leftover `<image>.vfioinit-prev` means an earlier run was killed between keeping
-- the previous image and putting it back or removing it. Under the lock, decide by
-- the image: missing, empty or not a readable initramfs -> put the previous one back;
-- otherwise the new image stands and the copy goes. Returns a list of
-- {path=, image=, action="restored"|"removed", message=, error=nil|msg}.
function M.sweep(ctx, gens, kernels, log)
  local root = ctx.root
  local out, seen = {}, {}
  log = log or function() end
  for _, gen in ipairs(gens) do
    for _, kver in ipairs(kernels or {}) do
      local image = gen.image_path(ctx, kver)
      local real = image and (core.fs.resolve(root, image) or image)
      local prev = real and real .. M.BACKUP_SUFFIX
      local pst = prev and not seen[prev] and core.fs.stat(root, prev, true)
      if pst and pst.type == "file" then
        seen[prev] = true
        local st = core.fs.stat(root, real)
        local good = st and st.type == "file" and st.size > 0 and imagelib.list(root, real) ~= nil
        local e = { path = prev, image = image }
        local ok, err
        if good then
          e.action = "removed"
          e.message = ("removed leftover %s"):format(prev)
          ok, err = core.fs.remove(root, prev)
        else
          e.action = "restored"
          e.message = ("restored %s from %s (an earlier run was interrupted)")
            :format(real, prev:match("[^/]+$"))
          ok, err = core.fs.rename(root, prev, real)
        end
        if not ok then e.error = err; e.message = e.message .. " failed: " .. tostring(err) end
        log(e.message)
        out[#out + 1] = e
      end
    end
  end
  return out
end

return M
