-- Override the shipped Debian policy: one more module, device IDs, no rebuild, own log.
local vfioinit = require "vfioinit"
local debian = assert(vfioinit.policy.load("debian"))
vfioinit.policy.register(debian:extend{
  modules = { "kvmgt" }, ids = { "10de:1b80" }, rebuild = false,
  log = function(msg) io.stderr:write("[vfioinit] ", msg, "\n") end,
})
local root = arg[1] or "/"
local policy, why = assert(vfioinit.policy.for_root(root))
print(("policy %s (%s)"):format(policy.name, why))
local report, err = policy:run{ root = root }
print(report and "configured" or err)
os.exit(report and 0 or 1)
