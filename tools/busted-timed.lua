-- A busted output handler: utfTerminal's output, plus one line per spec file with its wall time
-- appended to $VFIOINIT_SPEC_TIMES ("SECONDS FILE"), so tools/test can name the slow files.
return function(options)
  local busted = require "busted"
  local handler = require("busted.outputHandlers.utfTerminal")(options)
  local path, started = os.getenv("VFIOINIT_SPEC_TIMES"), {}
  local function now() -- seconds since boot, without a process per file
    local f = io.open("/proc/uptime")
    local t = f and tonumber(f:read("l"):match("^[%d.]+"))
    if f then f:close() end
    return t or os.time()
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
