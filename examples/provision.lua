#!/usr/bin/env lua5.4
-- vfioinit embedded in a provisioning run: the policy for ROOT is picked from its
-- os-release, progress goes to a custom log sink (timestamped, to stderr and into the
-- report), and one JSON report is printed on stdout for the provisioning tool.
--
--   lua5.4 examples/provision.lua ROOT [--ids VVVV:DDDD,...] [--no-rebuild] [--dry-run]
local vfioinit = require "vfioinit"
local json = require "vfioinit.json"

local root, opts = nil, {}
local i = 1
while arg[i] do
  local a = arg[i]
  if a == "--no-rebuild" then opts.rebuild = false
  elseif a == "--dry-run" then opts.dry_run = true
  elseif a == "--ids" then i = i + 1; opts.ids = arg[i]
  elseif not root then root = a
  else root = nil; break end
  i = i + 1
end
if not root then
  io.stderr:write("usage: provision.lua ROOT [--ids VVVV:DDDD,...] [--no-rebuild] [--dry-run]\n")
  os.exit(1)
end
opts.root = root

-- The log sink: every message, with the seconds since start, kept for the report.
local started, log = os.time(), {}
opts.log = function(msg)
  local line = ("[+%ds] %s"):format(os.time() - started, msg)
  log[#log + 1] = line
  io.stderr:write(line, "\n")
end

local policy, why = vfioinit.policy.for_root(root)
local report
if not policy then
  report = { ok = false, root = root, error = why }
else
  opts.log(("policy %s (%s)"):format(policy.name, why))
  -- a failed run returns nil, the message and the report so far: print that report too
  local ok, _, partial = policy:run(opts)
  report = ok or partial
  report.policy_reason = why
end
report.log = log
report.diff = nil -- a provisioning tool wants the list of changes, not the text
print(json.encode(report))
os.exit(report.ok and 0 or 1)
