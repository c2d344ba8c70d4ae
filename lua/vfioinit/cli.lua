-- The `vfioinit` command: argument parsing, human and --json output, exit codes.
-- Exit: 0 success (plan: nothing to change), 1 error, 2 plan pending / verify failed.
local json = require "vfioinit.json"
local util = require "vfioinit.util"

local M = {}

local USAGE = [==[
usage: vfioinit [--root DIR] [--generator NAME]... [--kernel KVER]... [--module NAME]...
                [--ids VVVV:DDDD[,VVVV:DDDD...]] [--softdeps] [--timeout SECONDS] [--json]
                [--no-rebuild] [--cmdline] COMMAND
       vfioinit --version | --help
  status        generators, kernels, module states, whether each config and image has VFIO
  plan          print the unified diff of what apply would change; write nothing
  apply         write the changes, then rebuild and verify [--no-rebuild]
  rebuild       rebuild images of the selected generators and kernels
  verify        check every image contains the VFIO modules
  --cmdline     also put intel_iommu=on iommu=pt (and vfio-pci.ids=) on the kernel command
                line: GRUB's config (then update-grub), /etc/kernel/cmdline or
                /etc/cmdline.d/vfioinit.conf; needed when vfio-pci is built into the kernel
  revert        undo every change vfioinit made [--force: also files edited since,
                keeping their content as PATH.vfioinit-edited] [--dry-run: print the diff]
]==]

local COMMANDS = { status = true, plan = true, apply = true, rebuild = true, verify = true, revert = true }

function M.parse(argv)
  local o = { generators = {}, kernels = {}, modules = {} }
  local i = 1
  local function value(flag)
    i = i + 1
    local v = argv[i]
    if v == nil then return nil, flag .. " needs a value" end
    return v
  end
  while i <= #argv do
    local a = argv[i]
    local flag, inline = a:match("^(%-%-[%w-]+)=(.*)$")
    if flag then a = flag; table.insert(argv, i + 1, inline) end
    local v, err
    if a == "--root" then v, err = value(a); o.root = v
    elseif a == "--generator" then v, err = value(a); o.generators[#o.generators + 1] = v
    elseif a == "--kernel" then v, err = value(a); o.kernels[#o.kernels + 1] = v
    elseif a == "--module" then v, err = value(a); o.modules[#o.modules + 1] = v
    elseif a == "--ids" then v, err = value(a); o.ids = v
    elseif a == "--softdeps" then o.softdeps = true
    elseif a == "--timeout" then v, err = value(a); o.timeout = v
    elseif a == "--version" then o.version = true
    elseif a == "--json" then o.json = true
    elseif a == "--no-rebuild" then o.no_rebuild = true
    elseif a == "--cmdline" then o.cmdline = true
    elseif a == "--force" then o.force = true
    elseif a == "--dry-run" then o.dry_run = true
    elseif a == "-h" or a == "--help" then o.help = true
    elseif a:match("^%-") then return nil, "unknown option " .. a
    elseif not o.command then
      if not COMMANDS[a] then return nil, "unknown command " .. a end
      o.command = a
    else
      return nil, "unexpected argument " .. a
    end
    if err then return nil, err end
    i = i + 1
  end
  -- a repeated option means the same thing once (vfio-pci and vfio_pci are one module)
  o.generators = util.unique(o.generators)
  o.kernels = util.unique(o.kernels)
  o.modules = util.unique(o.modules, function(m) return util.valid_module(m) and util.norm(m) or m end)
  if #o.generators == 0 then o.generators = nil end
  if #o.kernels == 0 then o.kernels = nil end
  return o
end

local function out(s) io.stdout:write(s) end

local function fail(o, msg)
  if o and o.json then out(json.encode({ ok = false, error = msg }) .. "\n") end
  io.stderr:write("vfioinit: " .. tostring(msg) .. "\n")
  return 1
end

local function plan_opts(o)
  return { root = o.root, generators = o.generators, kernels = o.kernels, modules = o.modules,
    ids = o.ids, softdeps = o.softdeps, cmdline = o.cmdline }
end

local function check_input(o)
  if o.root then
    local ok, why = util.check_root(o.root)
    if not ok then return ("--root %s: %s"):format(o.root == "" and "''" or o.root, why) end
  end
  local _, err = util.check_modules(o.modules)
  if err then return err end
  if o.timeout ~= nil then
    -- the generator's time limit: seconds, > 0 (a rebuild that may not run at all is no rebuild)
    local t = tonumber(o.timeout)
    if not t or t <= 0 or t ~= t or t == math.huge then
      return ("--timeout %s: expected a number of seconds > 0"):format(o.timeout)
    end
    o.timeout = t
  end
  if o.ids then
    local ids, ierr = util.check_ids(o.ids)
    if not ids then return ierr end
  end
end

-- status, human-readable: one line per generator, kernel, config and image.
local function print_status(st)
  local d = st.distro
  out(("root: %s\ndistro: %s %s\n"):format(st.root, d.id or "unknown", d.version_id or ""))
  out("generators:\n")
  for _, g in ipairs(st.generators) do
    out(("  %-16s %-13s %s\n"):format(g.name, g.active and "active" or (g.installed and "installed" or "not installed"),
      table.concat(g.evidence, ", ")))
  end
  out("kernels:\n")
  if #st.kernels == 0 then out("  (none in /lib/modules or /usr/lib/modules)\n") end
  for _, k in ipairs(st.kernels) do
    local parts = {}
    for _, m in ipairs(k.modules) do parts[#parts + 1] = m.name .. "=" .. m.state end
    out(("  %s: %s%s\n"):format(k.version, table.concat(parts, " "), k.error and (" (" .. k.error .. ")") or ""))
  end
  for _, k in ipairs(st.builtin_vfio_pci or {}) do
    out(("  %s: vfio-pci is built in: device ids need the kernel command line (--cmdline)\n"):format(k))
  end
  if st.plan_error then
    out("config: " .. tostring(st.plan_error) .. "\n")
  else
    local pending = st.pending_changes
    out(#pending == 0 and "config: VFIO modules configured\n" or ("config: needs changes in " .. table.concat(pending, ", ") .. "\n"))
  end
  for _, e in ipairs(st.cmdline or {}) do
    out(("cmdline: %s (%s, %s): %s\n"):format(e.entry or e.target, e.kernel, e.source or "?",
      e.ok and "has the VFIO parameters" or ("lacks " .. tostring(e.missing or e.error))))
  end
  for _, r in ipairs(st.images) do
    out(("image: %s (%s, %s): %s\n"):format(r.image, r.generator, r.kernel,
      r.ok and "has the VFIO modules" or ("lacks " .. table.concat(r.missing, ", ") .. (r.error and (" — " .. r.error) or ""))))
  end
end

local function cmd_status(v, o)
  local st, err = v.status(plan_opts(o))
  if not st then return fail(o, err) end
  if o.json then out(json.encode(st) .. "\n") else print_status(st) end
  return 0
end

local function cmd_plan(v, o)
  local plan, err = v.plan(plan_opts(o))
  if not plan then return fail(o, err) end
  local changes = {}
  for _, c in ipairs(plan.changes) do changes[#changes + 1] = { generator = c.generator, path = c.path, new = c.before == nil } end
  local d = plan:diff()
  if o.json then
    out(json.encode({ ok = true, pending = #changes > 0, changes = changes, diff = d, modules = plan.modules,
      warnings = plan.warnings }) .. "\n")
  else
    out(d)
    for _, w in ipairs(plan.warnings) do io.stderr:write("vfioinit: warning: " .. w .. "\n") end
    if #changes == 0 then io.stderr:write("vfioinit: nothing to change\n") end
  end
  return #changes > 0 and 2 or 0
end

local function progress(o)
  if o.json then return function() end end
  return function(msg) io.stderr:write("vfioinit: " .. msg .. "\n") end
end

local function cmd_apply(v, o)
  local opts = plan_opts(o)
  opts.rebuild = not o.no_rebuild
  opts.log = progress(o)
  opts.timeout = o.timeout
  local report = v.update_initramfs(opts)
  if o.json then out(json.encode(report) .. "\n") end
  if not report.ok then
    io.stderr:write("vfioinit: " .. tostring(report.error) .. "\n")
    return 1
  end
  if not o.json then
    out(report.diff)
    if #report.changes == 0 then out("vfioinit: configuration already in place; no file changed\n") end
    for _, r in ipairs(report.rebuilt) do
      out(("rebuilt %s for %s (%s) in %.1f s: %s\n"):format(r.image or "?", r.kernel or "?", r.generator or "?",
        r.seconds or 0, r.ok and "ok" or ("FAILED: " .. tostring(r.error))))
    end
    if not o.no_rebuild and #report.rebuilt == 0 then out("vfioinit: every image is up to date; nothing rebuilt\n") end
    for _, r in ipairs(report.regenerated or {}) do
      out(("regenerated with %s in %.1f s: %s\n"):format(r.command, r.seconds or 0, r.ok and "ok" or "FAILED"))
    end
    for _, r in ipairs(report.verified) do
      local lacks = table.concat(r.missing, ", ") .. (r.error and (" — " .. r.error) or "")
      if r.ok then
        out(("verified %s (%s): VFIO modules present\n"):format(r.image, r.kernel))
      elseif r.stale then
        out(("image %s for %s is stale (lacks %s): run 'vfioinit rebuild' to bring it up to date\n")
          :format(r.image or "?", r.kernel, lacks))
      else
        out(("image %s for %s lacks %s\n"):format(r.image or "?", r.kernel, lacks))
      end
    end
  end
  for _, e in ipairs(report.cmdline or {}) do
    if not o.json then
      out(("command line of %s for %s (%s): %s\n"):format(e.entry or e.target, e.kernel, e.source or "?",
        e.ok and "has the VFIO parameters" or ("lacks " .. tostring(e.missing or e.error))
          .. (e.recovery and " (a recovery entry: GRUB gives it GRUB_CMDLINE_LINUX only)" or "")))
    end
  end
  return 0
end

local function cmd_rebuild(v, o)
  local log = progress(o)
  local report, err, partial = v.rebuild({ root = o.root, generators = o.generators, kernels = o.kernels, log = log,
    timeout = o.timeout,
    on_output = (not o.json) and function(line) io.stderr:write("  | " .. line .. "\n") end or nil })
  if o.json then out(json.encode({ ok = report ~= nil, error = err, report = report or partial }) .. "\n") end
  if not report then io.stderr:write("vfioinit: " .. tostring(err) .. "\n"); return 1 end
  if not o.json then
    for _, r in ipairs(report.rebuilt) do
      out(("rebuilt %s for %s (%s) in %.1f s\n"):format(r.image or "?", r.kernel or "?", r.generator or "?", r.seconds or 0))
    end
    if #report.rebuilt == 0 then out("vfioinit: no kernel to rebuild an image for\n") end
  end
  return 0
end

local function cmd_verify(v, o)
  local list, err = v.verify({ root = o.root, kernels = o.kernels, generators = o.generators, modules = o.modules })
  if not list then return fail(o, err) end
  local ok = true
  for _, r in ipairs(list) do if not r.ok then ok = false end end
  if o.json then
    out(json.encode({ ok = ok, images = list }) .. "\n")
  else
    for _, r in ipairs(list) do
      out(("%s %s (%s, %s)%s\n"):format(r.ok and "ok  " or "FAIL", r.image, r.generator, r.kernel,
        r.ok and "" or (": lacks " .. table.concat(r.missing, ", ") .. (r.error and (" — " .. r.error) or ""))))
    end
    if #list == 0 then out("no images to verify\n") end
  end
  return ok and 0 or 2
end

-- revert [--force] [--dry-run]: refusals name each file and the way out (exit 1).
local function cmd_revert(v, o)
  local ok, list, refused = v.revert({ root = o.root, force = o.force, dry_run = o.dry_run })
  if not ok then
    if o.json then out(json.encode({ ok = false, error = list, refused = refused }) .. "\n") end
    for line in (tostring(list) .. "\n"):gmatch("([^\n]*)\n") do io.stderr:write("vfioinit: " .. line .. "\n") end
    return 1
  end
  local paths, diffs = {}, {}
  local diff = require "vfioinit.diff"
  for _, e in ipairs(list) do
    paths[#paths + 1] = { path = e.path, action = e.action, kept = e.kept }
    if e.action ~= "unchanged" then
      local rel = e.path:gsub("^/+", "")
      diffs[#diffs + 1] = diff.unified(e.before, e.after or "", e.before and rel or "/dev/null", e.after and rel or "/dev/null")
    end
  end
  if o.json then
    out(json.encode({ ok = true, dry_run = o.dry_run or false, reverted = paths,
      diff = o.dry_run and table.concat(diffs) or nil }) .. "\n")
  elseif o.dry_run then
    out(table.concat(diffs))
    if #diffs == 0 then io.stderr:write("vfioinit: nothing to revert\n") end
  else
    for _, p in ipairs(paths) do
      out(p.action .. " " .. p.path .. (p.kept and (" (current content kept as " .. p.kept .. ")") or "") .. "\n")
    end
    if #paths == 0 then out("vfioinit: nothing to revert\n")
    else out("vfioinit: run `vfioinit rebuild` to rebuild the images without VFIO\n") end
  end
  return 0
end

local HANDLERS = { status = cmd_status, plan = cmd_plan, apply = cmd_apply, rebuild = cmd_rebuild,
  verify = cmd_verify, revert = cmd_revert }

-- Is --json among the arguments? Looked at before parsing, so a usage error is reported
-- as JSON too when the arguments do not parse.
local function asks_json(argv)
  for _, a in ipairs(argv) do
    if a == "--json" or a:match("^%-%-json=") then return true end
  end
  return false
end

local function usage_error(as_json, msg)
  if as_json then out(json.encode({ ok = false, error = msg, usage = true }) .. "\n") end
  io.stderr:write("vfioinit: " .. msg .. "\n" .. USAGE)
  return 1
end

-- Last resort for a bug: one line naming what failed, never a traceback.
local function one_line(e)
  local msg = tostring(e):gsub("\n.*", "")
  return "internal error: " .. msg
end

function M.main(argv)
  local args = {}
  for i = 1, #(argv or {}) do args[i] = tostring(argv[i]) end
  local as_json = asks_json(args)
  local o, err = M.parse(args)
  if not o then return usage_error(as_json, err) end
  if o.help then
    out(o.json and (json.encode({ ok = true, usage = USAGE }) .. "\n") or USAGE)
    return 0
  end
  if o.version then
    local v = require("vfioinit")._VERSION
    out(o.json and (json.encode({ ok = true, version = v }) .. "\n") or (v .. "\n"))
    return 0
  end
  if not o.command then return usage_error(o.json, "no command given") end
  local ierr = check_input(o)
  if ierr then return fail(o, ierr) end
  local handler = HANDLERS[o.command]
  -- a closure, not xpcall's extra arguments: Lua 5.1 does not pass them on
  local ok, code = xpcall(function() return handler(require "vfioinit", o) end, one_line)
  if not ok then return fail(o, code) end
  return code
end

return M
