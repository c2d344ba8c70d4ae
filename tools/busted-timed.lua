-- A busted output handler: utfTerminal's output, plus one line per spec file with its wall time
-- appended to $VFIOINIT_SPEC_TIMES ("SECONDS FILE"), so tools/test can name the slow files.
return function(options)
  local busted = require "busted"
  local handler = require("busted.outputHandlers.utfTerminal")(options)
  local path, started = os.getenv("VFIOINIT_SPEC_TIMES"), {}
  local function now()
    local p = io.popen("date +%s.%N")
    local t = tonumber(p:read("l")); p:close()
    return t
  end
  if path then
    busted.subscribe({ "file", "start" }, function(file)
      started[file.name] = now()
      return nil, true
    end)
    busted.subscribe({ "file", "end" }, function(file)
      local t0 = started[file.name]
      local f = t0 and io.open(path, "a")
      if f then f:write(("%.1f %s\n"):format(now() - t0, file.name)); f:close() end
      return nil, true
    end)
  end
  return handler
end
