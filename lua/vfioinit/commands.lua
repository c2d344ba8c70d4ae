-- vfioinit.commands: the CLI's commands (lua/vfioinit/cli.lua parses their options), each
-- through the Lua API, with its human and --json output and exit status.
local json = require("vfioinit.json")
local util = require("vfioinit.util")

local M = {}

-- The one rule for streams (cli.STREAMS): out() for data, note() for everything about the run.
local function out(s) io.stdout:write(s) end
local function note(o, msg)
  if not o.json then io.stderr:write("vfioinit: " .. msg .. "\n") end
end

local function fail(o, msg)
  if o and o.json then out(json.encode({ ok = false, error = msg }) .. "\n") end
  io.stderr:write("vfioinit: " .. tostring(msg) .. "\n")
  return 1
end

local function plan_opts(o)
  return { root = o.root, generators = o.generators, kernels = o.kernels, modules = o.modules,
    ids = o.ids, softdeps = o.softdeps, devices = o.devices, match = o.match, force = o.force,
    cmdline = o.cmdline }
end

-- --sign-key/--sign-cert as the Lua API's sign={key=,cert=} (parse makes them come together)
local function sign_opt(o)
  return o.sign_key and { key = o.sign_key, cert = o.sign_cert } or nil
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
    local t = util.seconds(o.timeout, true)
    if not t then
      return ("--timeout %s: expected a number of seconds > 0 and at most %s"):format(o.timeout, util.MAX_SECONDS_TEXT)
    end
    o.timeout = t
  end
  if o.jobs ~= nil then
    local n = tonumber(o.jobs)
    if not n or n < 1 or n == math.huge or n ~= math.floor(n) then
      return ("--jobs %s: expected a whole number >= 1"):format(o.jobs)
    end
    o.jobs = math.floor(n)
  end
  if o.ids then
    local ids, ierr = util.check_ids(o.ids)
    if not ids then return ierr end
  end
  -- required here: --help and the man page (tools/gen-man) need no built core
  local sel, berr = require("vfioinit.bind").check_options(o)  -- addresses and the --match pattern
  if sel == nil then return berr end
  -- checked here too for apply --dry-run, which is plan and rebuilds nothing
  if o.no_rebuild and o.sign_key then return "--sign-key: --no-rebuild rebuilds nothing to sign" end
  if o.sign_key then
    local signable, serr = require("vfioinit.signing").check(o.root or "/", sign_opt(o))
    if not signable then return (serr:gsub("^sign (%a+)", "--sign-%1")) end
  end
end

-- One line per boot chain: entry → kernel → initramfs|UKI (cmdline from X).
local function chain_line(c)
  local what = c.kind == "uki" and ("UKI " .. c.path) or ((c.path or "?") .. " → " .. (c.initramfs or "no initramfs"))
  local from = c.cmdline_source and ("cmdline from " .. c.cmdline_source
    .. (c.generated_from and (", generated from " .. c.generated_from) or "")) or "no command line known"
  return ("  %s%s → %s → %s (%s)%s\n"):format(c.entry, c.default and " [default]" or "", c.kernel, what, from,
    c.exists == false and " [missing]" or "")
end

-- Under a chain: whether its image is signed, by whom, and which known certificate it verifies against.
local function signature_line(g)
  if g.error then return "    signature: " .. g.error .. "\n" end
  if not g.signed then return "    unsigned\n" end
  return ("    signed by %s%s; %s\n"):format(table.concat(g.signers, ", "),
    g.digest_ok and "" or " (the image changed after signing: its digest does not match)",
    #g.trusted_by > 0 and ("verifies against " .. table.concat(g.trusted_by, ", "))
      or "verifies against none of the known certificates")
end

-- Secure Boot: the firmware's state (the running system only) and the root's signing keys.
local function print_secure_boot(sb)
  if not sb then return end
  local state = "not known (the firmware is read for --root / only)"
  if sb.efi == false then state = "off (no EFI variables: not booted with UEFI)"
  elseif sb.efi then
    state = (sb.secure_boot == nil and "not known (no SecureBoot variable)" or sb.secure_boot and "on" or "off")
      .. (sb.setup_mode and ", setup mode" or "") .. (", db: %d certificates"):format(#sb.db)
  end
  out("secure boot: " .. state .. "\n")
  for _, e in ipairs(sb.errors or {}) do out("  " .. e .. "\n") end
  for _, k in ipairs(sb.keys) do
    out(("  signing key (%s%s): %s\n"):format(k.source, k.from and (", " .. k.from) or "",
      k.error or (k.path .. " " .. k.subject)))
  end
end

local function print_chains(st)
  out("boot chains:\n")
  if st.boot_chains_error then out("  " .. tostring(st.boot_chains_error) .. "\n") end
  for _, c in ipairs(st.boot_chains or {}) do
    out(chain_line(c))
    if c.signature then out(signature_line(c.signature)) end
  end
  if #(st.boot_chains or {}) == 0 and not st.boot_chains_error then out("  (none)\n") end
end

-- An image-based root: who manages it, and what each deployment boots.
local function print_ostree(o)
  if not o then return end
  out(("ostree: %s root managed by %s%s\n"):format(o.kind, o.manager, o.mode and (", VFIO early load: " .. o.mode) or ""))
  for _, d in ipairs(o.deployments or {}) do
    local tags = {}
    for _, t in ipairs({ "booted", "pending", "default" }) do if d[t] then tags[#tags + 1] = t end end
    out(("  %s %s.%s%s: %s, initrd %s, options %s\n"):format(d.osname, d.checksum, d.serial,
      #tags > 0 and (" [" .. table.concat(tags, ", ") .. "]") or "", d.entry, table.concat(d.initrds, " + "),
      d.cmdline or ""))
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
    out(("image: %s (%s, %s%s): %s\n"):format(r.image, r.generator, r.kernel, r.chain and (", booted by " .. r.chain) or "",
      r.ok and "has the VFIO modules" or ("lacks " .. table.concat(r.missing, ", ") .. (r.error and (" — " .. r.error) or ""))))
  end
  print_secure_boot(st.secure_boot)
  print_chains(st)
  print_ostree(st.ostree)
  local t = st.trial
  if t and t.error then out("trial: " .. t.error .. "\n")
  elseif t then
    out(("trial: %s of %s (%s entry %s, image %s): %s — %s\n"):format(t.id, t.kernel, t.loader, t.entry, t.image,
      t.state, t.why))
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
      warnings = plan.warnings, devices = plan.devices, matched = plan.matched }) .. "\n")
  else
    out(d)
    for _, m in ipairs(plan.matched or {}) do
      io.stderr:write(("vfioinit: --match: %s %s\n"):format(m.address, m.description))
    end
    for _, w in ipairs(plan.warnings) do io.stderr:write("vfioinit: warning: " .. w .. "\n") end
    if #changes == 0 then note(o, "nothing to change") end
  end
  return #changes > 0 and 2 or 0
end

local function progress(o)
  if o.json then return function() end end
  return function(msg) io.stderr:write("vfioinit: " .. msg .. "\n") end
end

-- apply's stdout is what it changed (the diff, the images rebuilt, the loader configs
-- regenerated); what it checked (verified images, command lines) and the advice about a
-- stale image are notes on stderr: a no-op apply prints nothing on stdout.
local function print_apply(o, report)
  out(report.diff)
  for _, w in ipairs(report.warnings or {}) do note(o, "warning: " .. w) end
  if #report.changes == 0 then note(o, "configuration already in place; no file changed") end
  for _, r in ipairs(report.rebuilt) do
    out(("rebuilt %s for %s (%s) in %.1f s: %s\n"):format(r.image or "?", r.kernel or "?", r.generator or "?",
      r.seconds or 0, r.ok and (r.signed and "ok, signed with --sign-key" or "ok") or ("FAILED: " .. tostring(r.error))))
  end
  if not o.no_rebuild and #report.rebuilt == 0 then note(o, "every image is up to date; nothing rebuilt") end
  for _, r in ipairs(report.regenerated or {}) do
    out(("regenerated with %s in %.1f s: %s\n"):format(r.command, r.seconds or 0, r.ok and "ok" or "FAILED"))
  end
  for _, r in ipairs(report.verified) do
    local lacks = table.concat(r.missing, ", ") .. (r.error and (" — " .. r.error) or "")
    if r.ok then
      note(o, ("verified %s (%s%s): VFIO modules present"):format(r.image, r.kernel,
        r.chain and (", booted by " .. r.chain) or ""))
    elseif r.stale then
      note(o, ("image %s for %s is stale (lacks %s): run 'vfioinit rebuild' to bring it up to date")
        :format(r.image or "?", r.kernel, lacks))
    else
      note(o, ("image %s for %s lacks %s"):format(r.image or "?", r.kernel, lacks))
    end
  end
  for _, e in ipairs(report.cmdline or {}) do
    note(o, ("command line of %s for %s (%s): %s"):format(e.entry or e.target, e.kernel, e.source or "?",
      e.ok and "has the VFIO parameters" or ("lacks " .. tostring(e.missing or e.error))
        .. (e.recovery and " (a recovery entry: GRUB gives it GRUB_CMDLINE_LINUX only)" or "")))
  end
end

-- apply --trial: the configuration tried (a diff of files NOT written), the trial's image, and
-- what boots next.
local function print_trial(o, report)
  local t = report.trial
  out(report.diff)
  for _, r in ipairs(report.rebuilt) do
    out(("built the trial image %s for %s (%s) in %.1f s\n"):format(r.image, r.kernel, r.generator, r.seconds or 0))
  end
  out(("trial %s: the next boot starts %s (%s), command line: %s\n"):format(t.id, t.entry, t.loader, t.cmdline))
  note(o, ("the configuration above is not applied; the default entry (%s) stays as it is. After a good trial "
    .. "boot run 'vfioinit commit'; a failed one falls back to the default by itself ('vfioinit revert' "
    .. "removes the trial)"):format(t.default))
end

local function cmd_apply(v, o)
  -- apply --dry-run is plan: the same diff, JSON and exit status, nothing written
  if o.dry_run then return cmd_plan(v, o) end
  local opts = plan_opts(o)
  opts.rebuild = not o.no_rebuild
  opts.log = progress(o)
  opts.timeout, opts.jobs = o.timeout, o.jobs
  opts.trial, opts.trial_cmdline = o.trial, o.trial_cmdline
  opts.sign = sign_opt(o)
  local report, err, partial = v.update_initramfs(opts)
  if o.json then out(json.encode(report or partial) .. "\n") end
  if not report then return fail(nil, err) end
  if not o.json and report.trial then print_trial(o, report)
  elseif not o.json then print_apply(o, report) end
  return 0
end

local function cmd_commit(v, o)
  local report, err, partial = v.commit({ root = o.root, timeout = o.timeout, log = progress(o) })
  if o.json then out(json.encode(report or partial or { ok = false, error = err }) .. "\n") end
  if not report then return fail(nil, err) end
  if not o.json then
    print_apply(o, report)
    note(o, ("committed trial %s (%s); its entry and image are removed"):format(report.committed.id,
      report.committed.evidence))
  end
  return 0
end

local function cmd_rebuild(v, o)
  local log = progress(o)
  local report, err, partial = v.rebuild({ root = o.root, generators = o.generators, kernels = o.kernels, log = log,
    timeout = o.timeout, jobs = o.jobs, sign = sign_opt(o),
    on_output = (not o.json) and function(line, _, _, kernels)
      io.stderr:write("  | " .. (kernels and kernels .. ": " or "") .. line .. "\n")
    end or nil })
  if o.json then out(json.encode({ ok = report ~= nil, error = err, report = report or partial }) .. "\n") end
  if not report then io.stderr:write("vfioinit: " .. tostring(err) .. "\n"); return 1 end
  if not o.json then
    for _, r in ipairs(report.rebuilt) do
      out(("rebuilt %s for %s (%s) in %.1f s%s\n"):format(r.image or "?", r.kernel or "?", r.generator or "?", r.seconds or 0,
        r.signed and ", signed with --sign-key" or ""))
    end
    for _, w in ipairs(report.warnings) do note(o, "warning: " .. w) end
    if #report.rebuilt == 0 then note(o, "no kernel to rebuild an image for") end
  end
  return 0
end

local function cmd_verify(v, o)
  local list, err = v.verify({ root = o.root, kernels = o.kernels, generators = o.generators, modules = o.modules,
    full = o.full, cmdline = o.cmdline, ids = o.ids })
  if not list then return fail(o, err) end
  local ok = true
  for _, r in ipairs(list) do if not r.ok then ok = false end end
  if o.json then
    out(json.encode({ ok = ok, images = list }) .. "\n")
  else
    for _, r in ipairs(list) do
      out(("%s %s (%s, %s%s)%s\n"):format(r.ok and "ok  " or "FAIL", r.image, r.generator, r.kernel,
        r.chain and (", booted by " .. r.chain .. " instead of " .. tostring(r.generator_image)) or "",
        r.fingerprint and ", unchanged since verified" or r.ok and ""
          or (": lacks " .. table.concat(r.missing, ", ") .. (r.error and (" — " .. r.error) or ""))))
    end
    for _, r in ipairs(list) do if r.note then note(o, r.note) end end
    if #list == 0 then note(o, "no images to verify") end
  end
  return ok and 0 or 2
end

-- revert [--force] [--dry-run]: refusals name each file and the way out (exit 1). A file
-- that cannot be restored fails the revert (exit 1) after the others are: they are listed.
local function cmd_revert(v, o)
  local ok, list, refused = v.revert({ root = o.root, force = o.force, dry_run = o.dry_run })
  local done = ok and list or refused and refused.reverted
  local paths, diffs = {}, {}
  local diff = require("vfioinit.edit.diff")
  for _, e in ipairs(done or {}) do
    paths[#paths + 1] = { path = e.path, action = e.action, kept = e.kept, lost = e.lost }
    if e.action ~= "unchanged" then
      local rel = e.path:gsub("^/+", "")
      diffs[#diffs + 1] = diff.unified(e.before, e.after or "", e.before and rel or "/dev/null", e.after and rel or "/dev/null")
    end
  end
  for _, l in ipairs(done and done.leftovers or {}) do note(o, l.message) end
  if o.json then
    local why = {}
    for i, r in ipairs(refused or {}) do why[i] = { path = r.path, reason = r.reason, lost = r.lost } end
    out(json.encode({ ok = ok or false, error = not ok and list or nil, refused = refused and why, dry_run = o.dry_run or false,
      reverted = done and paths or nil, diff = done and o.dry_run and table.concat(diffs) or nil,
      leftovers = done and done.leftovers or nil, trial = done and done.trial or nil }) .. "\n")
  elseif o.dry_run then
    out(table.concat(diffs))
    if ok and #diffs == 0 then note(o, "nothing to revert") end
  else
    for _, p in ipairs(paths) do
      out(p.action .. " " .. p.path .. (p.kept and (" (current content kept as " .. p.kept .. ")") or "")
        .. (p.lost and (" (cannot be restored, " .. p.lost .. "; left as it is)") or "") .. "\n")
    end
    -- an ostree deployment's mechanism ran its inverse (lua/vfioinit/ostree_initramfs.lua)
    local deployed = false
    for _, e in ipairs(done and done.regenerated or {}) do deployed = deployed or e.target == "ostree" end
    if ok and done.trial then note(o, "dropped trial " .. done.trial .. "; the configuration before it stays")
    elseif ok and #paths == 0 then note(o, "nothing to revert")
    elseif ok and deployed then note(o, "the next boot starts a deployment without vfioinit's initramfs changes")
    elseif ok then note(o, "run `vfioinit rebuild` to rebuild the images without VFIO") end
  end
  if not ok then
    for line in (tostring(list) .. "\n"):gmatch("([^\n]*)\n") do io.stderr:write("vfioinit: " .. line .. "\n") end
    return 1
  end
  return 0
end

local HANDLERS = { status = cmd_status, plan = cmd_plan, apply = cmd_apply, rebuild = cmd_rebuild,
  verify = cmd_verify, revert = cmd_revert, commit = cmd_commit }

-- Last resort for a bug: one line naming what failed, never a traceback.
local function one_line(e)
  local msg = tostring(e):gsub("\n.*", "")
  return "internal error: " .. msg
end

--- run(v, o) -> exit status: o.command with the parsed options `o` (cli.parse), checked
-- first; `v`: the vfioinit instance (default require "vfioinit").
function M.run(v, o)
  local ierr = check_input(o)
  if ierr then return fail(o, ierr) end
  local handler = HANDLERS[o.command]
  -- a closure, not xpcall's extra arguments: Lua 5.1 does not pass them on
  local ok, code = xpcall(function() return handler(v or require "vfioinit", o) end, one_line)
  if not ok then return fail(o, code) end
  return code
end

return M

