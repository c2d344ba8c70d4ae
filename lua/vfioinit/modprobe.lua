-- /etc/modprobe.d/vfioinit.conf: `options vfio-pci ids=` and softdeps that make
-- vfio-pci load before a device's native driver, wherever the native driver is loaded from.
local util = require "vfioinit.util"

local M = {}

M.FILE = "/etc/modprobe.d/vfioinit.conf"
M.DIRS = { "/etc/modprobe.d", "/run/modprobe.d", "/usr/local/lib/modprobe.d", "/lib/modprobe.d", "/usr/lib/modprobe.d" }

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

local function is_vfio_pci(name) return name and util.norm(name) == "vfio_pci" end

-- conflicts(ctx, ids) -> nil | "path:line: reason": settings elsewhere that would defeat ours.
function M.conflicts(ctx, ids)
  local want = ids and table.concat(ids, ",") or nil
  for _, dir in ipairs(M.DIRS) do
    for _, name in ipairs(ctx.dir(dir) or {}) do
      local path = dir .. "/" .. name
      if name:match("%.conf$") and path ~= M.FILE then
        local text, err = ctx.read(path)
        if err then return err end
        local n = 0
        for line in (text or ""):gmatch("([^\n]*)\n?") do
          n = n + 1
          local words = {}
          for w in line:gsub("#.*", ""):gmatch("%S+") do words[#words + 1] = w end
          local cmd, mod = words[1], words[2]
          if cmd == "blacklist" and is_vfio_pci(mod) then
            return ("%s:%d: blacklists vfio_pci, which would keep it from claiming the devices"):format(path, n)
          elseif cmd == "install" and is_vfio_pci(mod) then
            return ("%s:%d: an install command replaces loading vfio_pci (%s)"):format(path, n, table.concat(words, " ", 3))
          elseif cmd == "options" and is_vfio_pci(mod) and want then
            for i = 3, #words do
              local v = words[i]:match("^ids=(.*)$")
              if v then
                local theirs = util.check_ids(v)
                if not theirs or table.concat(theirs, ",") ~= want then
                  return ("%s:%d: already sets vfio-pci ids=%s (vfioinit would set ids=%s)"):format(path, n, v, want)
                end
              end
            end
          end
        end
      end
    end
  end
  return nil
end

return M
