-- fuzz/capture.lua: a busted --helper that records every text the specs pass to
-- core.scan.shell / core.scan.yaml into $FUZZ_CAPTURE/<fn>_scan/, deduplicated, to
-- seed the fuzzers (fuzz/seed). Specs run unchanged: the wrapped core table is
-- what `require "vfioinit.core"` returns in every insulated spec file.
local dir = assert(os.getenv("FUZZ_CAPTURE"), "FUZZ_CAPTURE not set")
local core = require "vfioinit.core"
local seen, n = {}, 0
for _, kind in ipairs({ "shell", "yaml" }) do
  local fn = kind .. "_scan"  -- the directory is named after the fuzz harness
  local real = core.scan[kind]
  os.execute("mkdir -p '" .. dir .. "/" .. fn .. "'")
  core.scan[kind] = function(text, ...)
    if type(text) == "string" and #text <= 4096 and not seen[fn .. "\0" .. text] then
      seen[fn .. "\0" .. text] = true
      n = n + 1
      local f = io.open(("%s/%s/spec-%04d"):format(dir, fn, n), "wb")
      if f then f:write(text); f:close() end
    end
    return real(text, ...)
  end
end
package.preload["vfioinit.core"] = function() return core end
