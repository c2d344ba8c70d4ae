--[[ vfioinit.trial: try the VFIO configuration for one boot; the machine falls back by itself.

  apply(run, plan, opts, report)  `apply --trial`: the plan is NOT applied. The default
                                  entry, its image and command line stay as they are; the
                                  trial's own files are written through the journal
                                  (generator "trial"), its image is built from a staged copy
                                  of the generator's configuration, and the loader starts it
                                  on the next boot only (lua/vfioinit/trial/grub.lua, bls.lua;
                                  a kernel booted as a UKI: a trial UKI, trial/uki.lua)
  commit(opts, registry)          after a good trial boot: the plain apply of the recorded
                                  options, then the trial's files go
  drop(root, opts)                revert with a trial recorded: only the trial goes
  status(root, opts)              the pending trial and what the loader says of it

The trial's files, in order of writing (a kill anywhere leaves a state the next commit or
revert settles): 1. the record /etc/vfioinit/trial/record and the staged configuration
(journaled), 2. the image <default initrd>.vfioinit-trial (named in the record before it is
built; a trial UKI is built as `<entry>+1.efi.part`, which systemd-boot does not read), 3. the
loader entry (journaled; GRUB: grub.cfg regenerated; a UKI: renamed to `+1.efi`), 4. GRUB
only: grubenv's next_entry, last, so the next boot never points at a half-made trial.
]]
local core = require("vfioinit.core")
local state = require("vfioinit.state")
local cmdline = require("vfioinit.edit.cmdline")
local bootloaders = require("vfioinit.boot.cmdline")
local record = require("vfioinit.trial.record")
local stage = require("vfioinit.trial.stage")
local grub = require("vfioinit.trial.grub")
local bls = require("vfioinit.trial.bls")
local uki = require("vfioinit.trial.uki")

local M = {}

M.SUFFIX = ".vfioinit-trial"   -- the trial image: beside the default entry's initramfs
M.MARKER = "vfioinit.trial"    -- the trial entry's kernel parameter: vfioinit.trial=<id>
M.GENERATOR = "trial"          -- the journal's name for the trial's files

local ENOENT = 2

local function dirname(p) return (p:match("^(.*)/[^/]*$")) end

-- The kernel a trial boots and its default chain: the one the loader starts by default
-- (or the only kernel, or the only one selected).
local function pick_chain(run)
  local picks = {}
  for _, k in ipairs(run.kernels) do
    local chains, err = run:boot_chains(k)
    if not chains then return nil, err end
    for _, c in ipairs(chains) do
      if c.default then picks[#picks + 1] = c; break end
    end
    if #run.kernels == 1 and #picks == 0 and chains[1] then picks[1] = chains[1] end
  end
  if #picks == 0 then return nil, run.root .. ": no boot entry starts " .. table.concat(run.kernels, ", ") end
  if #picks > 1 then
    local names = {}
    for _, c in ipairs(picks) do names[#names + 1] = c.kernel end
    return nil, "--trial boots one kernel; the loaders' defaults start " .. table.concat(names, ", ")
      .. ": choose one with --kernel"
  end
  local c = picks[1]
  if c.kind == "uki" then
    local _, err = uki.base(c.path)
    if err then return nil, err end
    if not c.exists then return nil, c.path .. ": the UKI this kernel boots is not there (build it first)" end
    return c
  end
  if c.loader ~= "grub" and c.loader ~= "bls" or c.via then
    return nil, ("%s: a trial needs a GRUB menu entry or a systemd-boot (BLS) entry to copy; %s boots by %s")
      :format(c.entry, c.kernel, c.via or c.loader)
  end
  if not c.initramfs then return nil, c.entry .. ": loads no initramfs; a trial has nothing to replace" end
  return c
end

-- The generator whose image the chain loads.
local function pick_generator(run, plan)
  for _, g in ipairs(plan.generators) do if run:boots(g) then return g end end
  if #plan.generators == 1 then return plan.generators[1] end
  return nil, "--trial: which generator's image boots is not known (several selected, none active): use --generator"
end

-- The trial's kernel command line: the default entry's, with what --cmdline adds, the
-- staged modprobe.d options a generator takes from there (stage.cmdline_words), the marker
-- and the user's trial words.
local function trial_line(run, chain, id, extra, words)
  local line = chain.cmdline or ""
  if run.opts.cmdline then
    local s, why = cmdline.add(line, bootloaders.wants(run))
    if not s then return nil, chain.cmdline_source .. ": " .. why end
    line = s
  end
  for _, w in ipairs(words) do line = line .. (line == "" and "" or " ") .. w end
  line = line .. (line == "" and "" or " ") .. M.MARKER .. "=" .. id
  if extra and extra:match("%S") then line = line .. " " .. extra:gsub("^%s+", ""):gsub("%s+$", "") end
  return line
end

-- A new trial's id: eight hex digits, different for each trial of a root.
local function new_id(run, plan)
  return core.hash.sha256(table.concat({ tostring(os.time()), tostring(os.clock()), run.root,
    table.concat(run.kernels, ","), plan:diff(), tostring({}) }, "\0")):sub(1, 8)
end

-- Loader facts and texts: {kind=, files={change...}, rec fields}
local function loader_part(run, chain, t)
  local ctx = run.ctx
  if chain.loader == "grub" then
    local ok, err = grub.check_header(ctx)
    if not ok then return nil, err end
    local cfg_path = chain.cmdline_source
    local text, rerr = ctx.read(cfg_path)
    if not text then return nil, rerr or (cfg_path .. ": missing") end
    local titles = chain.entry:gsub("^grub: ", "")
    -- the GRUB path of the trial image: the default entry's last initrd, renamed
    local probe = require("vfioinit.boot.cfg").grub(text)
    local last
    for _, e in ipairs(probe.entries) do
      if table.concat(e.titles, " > ") == titles then last = e.initrd[#e.initrd] end
    end
    if not last then return nil, ("%s: entry %q loads no initrd"):format(cfg_path, titles) end
    local title = titles:match("([^>]*)$"):gsub("^%s+", "") .. " (vfioinit trial " .. t.id .. ")"
    local entry, eerr = grub.entry(text, cfg_path, titles, { title = title, id = t.id, cmdline = t.cmdline,
      initrd = last .. M.SUFFIX })
    if not entry then return nil, eerr end
    local envp = dirname(cfg_path) .. "/grubenv"
    local envtext = core.fs.stat(run.root, envp) and core.fs.read(run.root, envp) or nil
    local env = grub.grubenv(envtext)
    local newenv, nerr = grub.grubenv_set(envtext, { next_entry = grub.ID, [grub.VAR] = false }, envp)
    if not newenv then return nil, nerr end
    return { entry = grub.SCRIPT, text = grub.script(t, entry), mode = 493, grubenv = envp, envtext = newenv,
      grubenv_was = env.next_entry or "-", grubenv_created = envtext and "no" or "yes", next_entry = grub.ID }
  end
  local ok, err = bls.check(ctx, require("vfioinit.boot.loaders.bls").read(ctx) or {})
  if not ok then return nil, err end
  if chain.kind == "uki" then
    local base = uki.base(chain.path)
    local osrel = ctx.read("/etc/os-release") or ctx.read("/usr/lib/os-release")
    return { entry = base, path = base .. "+1" .. uki.EXT, uki = { cmdline = t.cmdline, osrel = uki.osrel(osrel, t.id) } }
  end
  local path = chain.cmdline_source
  local text, rerr = ctx.read(path)
  if not text then return nil, rerr or (path .. ": missing") end
  local e = require("vfioinit.boot.cfg").bls(text)
  local base = bls.base(dirname(path), chain.kernel)
  return { entry = base, path = base .. "+1.conf",
    text = bls.entry(text, { id = t.id, cmdline = t.cmdline, initrd = e.initrd[#e.initrd] .. M.SUFFIX }) }
end

-- A Plan (lua/vfioinit/plan.lua's) that writes `files` as the trial's: its apply journals
-- them like any change (created files; revert removes them).
local function trial_plan(plan, files)
  local changes = {}
  for _, f in ipairs(files) do
    local before, err = plan.run.ctx.read(f.path)
    if err then return nil, err end
    changes[#changes + 1] = { generator = M.GENERATOR, path = f.path, before = before, after = f.after, mode = f.mode }
  end
  return setmetatable({ root = plan.root, run = plan.run, changes = changes }, getmetatable(plan))
end

-- What the trial image must carry: the staged modprobe.d file and bind script.
local function expected(run, plan, gen)
  local mp = core.fs.stat(run.root, "/etc/modprobe.d/vfioinit.conf") and core.fs.read(run.root, "/etc/modprobe.d/vfioinit.conf") or nil
  local script = require("vfioinit.bind").expected(run.root, gen)
  for _, c in ipairs(plan.changes) do
    if c.path == "/etc/modprobe.d/vfioinit.conf" then mp = c.after end
    if gen.bind and c.path == gen.bind.script then script = c.after end
  end
  return mp, script
end

local function fail(report, msg, root)
  -- the trial's files so far go again; the configuration was never touched
  local _, derr = M.drop(root, {})
  report.error = derr and (msg .. "; removing the trial's files failed too: " .. derr) or msg
  return false
end

-- What each image-based system's own tool calls going back to the previous deployment.
local ROLLBACK = { ["rpm-ostree"] = "rpm-ostree rollback", bootc = "bootc rollback" }

--- refuses(run) -> nil, or why `apply --trial` does not apply to run's root: an ostree
-- deployment keeps the previous deployment as its rollback (a plain apply makes a new one),
-- and an image build root has no boot of its own to try.
function M.refuses(run)
  local o, root = run.ostree, run.opts.root or "/"  -- the root asked for, not the deployment acted on
  if not o then return nil end
  if o.kind == "image" then
    return ("%s: an image build root (%s): nothing boots from it, so there is no next boot to try; "
      .. "apply without --trial and boot the image it builds"):format(root, o.manager)
  end
  local back = ROLLBACK[o.manager]
  return ("%s: an ostree deployment (%s): --trial does not apply there; a plain `vfioinit apply` makes a new "
    .. "deployment and keeps the current one in the boot menu as the rollback%s, and `vfioinit revert` "
    .. "removes the new one"):format(root, o.manager, back and (" (`" .. back .. "`)") or "")
end

--- apply(run, plan, opts, report) -> true | false (report.error set)
function M.apply(run, plan, opts, report)
  local root, log = run.root, opts.log or function() end
  local old, rerr = record.load(root)
  if old == nil then report.error = rerr; return false end
  if old then report.error = M.blocks(root); return false end
  if #plan.changes == 0 then report.error = root .. ": nothing to try: the configuration is in place already"; return false end
  local chain, cerr = pick_chain(run)
  if not chain then report.error = cerr; return false end
  local gen, gerr = pick_generator(run, plan)
  if not gen then report.error = gerr; return false end
  local kver, id = chain.kernel, new_id(run, plan)
  local words, werr = stage.cmdline_words(gen, plan.changes)
  if not words then report.error = werr; return false end
  local line, lerr = trial_line(run, chain, id, opts.trial_cmdline, words)
  if not line then report.error = lerr; return false end
  local t = { id = id, kernel = kver, cmdline = line }
  local lp, perr = loader_part(run, chain, t)
  if not lp then report.error = perr; return false end
  -- a UKI is the entry itself: built under a name systemd-boot skips, renamed when checked
  local image = lp.uki and lp.path or chain.initramfs .. M.SUFFIX
  local build = lp.uki and image .. uki.PART or image
  local s, serr = stage.plan(run.ctx, gen, plan.changes, kver, build, lp.uki, plan.wants)
  if not s then report.error = serr; return false end
  local loader = lp.uki and "uki" or chain.loader
  local rec = { id = id, kernel = kver, generator = gen.name, loader = loader, image = image, entry = lp.entry,
    grubenv = lp.grubenv, next_entry = lp.next_entry, grubenv_was = lp.grubenv_was,
    grubenv_created = lp.grubenv_created, cmdline = line, default = chain.entry, opts = {} }
  for _, k in ipairs(record.LISTS) do rec.opts[k] = run.opts[k] end
  for _, k in ipairs(record.VALUES) do rec.opts[k] = run.opts[k] end
  rec.opts.ids = run.ids

  -- 1. the record and the staged configuration
  local files = { { path = record.PATH, after = record.serialize(rec), mode = 384 } }
  for _, f in ipairs(s.files) do files[#files + 1] = f end
  local p1, e1 = trial_plan(plan, files)
  if not p1 then report.error = e1; return false end
  log(("trial %s: staging %d file(s) under %s"):format(id, #files - 1, stage.STAGE))
  local ok, aerr = p1:apply()
  if not ok then report.error = aerr; return false end
  -- 2. the image, from the staged configuration
  log("trial: building " .. build .. " with " .. table.concat(s.argv, " "))
  local b = bootloaders.run_command(root, { target = gen.name, argv = s.argv },
    { timeout = opts.timeout or 600, on_output = opts.on_output })
  report.rebuilt[#report.rebuilt + 1] = { kernel = kver, generator = gen.name, image = build, command = b.command,
    status = b.status, seconds = b.seconds, ok = b.ok, error = b.error }
  if not b.ok then return fail(report, b.error, root) end
  if s.osrel then
    local r, oerr = uki.set_osrel(root, build, s.osrel, lp.uki.osrel, bootloaders.run_command, { timeout = opts.timeout })
    if not r then return fail(report, oerr, root) end
    report.regenerated = { r }
  end
  local mp, script = expected(run, plan, gen)
  if not stage.image_carries_modprobe(gen) then mp = nil end  -- its options are on the trial's line
  local v = require("vfioinit.verify").check(run.ctx, gen, kver, { facts = run, modules = run.extra, modprobe_content = mp,
    bind_script = gen.bind and script or nil, chain = { initramfs = build, entry = "trial " .. id } })
  report.verified[#report.verified + 1] = v
  if not v.ok then
    return fail(report, ("%s: the trial image lacks %s"):format(build, v.error or table.concat(v.missing, ", ")), root)
  end
  -- 3. the loader entry
  if lp.uki then
    ok, aerr = core.fs.rename(root, build, image)
    if not ok then return fail(report, aerr, root) end
  else
    local p3, e3 = trial_plan(plan, { { path = lp.path or lp.entry, after = lp.text, mode = lp.mode } })
    if not p3 then return fail(report, e3, root) end
    ok, aerr = p3:apply()
    if not ok then return fail(report, aerr, root) end
  end
  if chain.loader == "grub" then
    local argv = require("vfioinit.boot.loaders.grub").regenerate(run.ctx)
    if not argv then return fail(report, "no update-grub or grub-mkconfig in " .. root, root) end
    local r = bootloaders.run_command(root, { target = "grub", argv = argv }, { timeout = opts.timeout, on_output = opts.on_output })
    report.regenerated = { r }
    if not r.ok then return fail(report, r.error, root) end
    local cfg = require("vfioinit.boot.cfg").grub(run.ctx.read(chain.cmdline_source) or "")
    local found = false
    for _, e in ipairs(cfg.entries) do found = found or e.id == grub.ID end
    if not found then
      return fail(report, ("%s: %s did not add the trial entry (is %s executable, is grub-mkconfig the one of %s?)")
        :format(chain.cmdline_source, r.command, grub.SCRIPT, root), root)
    end
    -- 4. the next boot, and only it, starts the trial
    ok, aerr = core.fs.write_atomic(root, lp.grubenv, lp.envtext, 420)
    if not ok then return fail(report, aerr, root) end
  end
  report.trial = { id = id, kernel = kver, loader = loader, entry = lp.path or lp.entry, image = image,
    cmdline = line, default = chain.entry, generator = gen.name }
  report.ok = true
  return true
end

-- The running kernel's command line: root / reads /proc/cmdline; `sysfs` (a directory
-- standing for the live system's /sys and /proc, as for --device) its proc/cmdline.
local function running_cmdline(root, opts)
  local p = (opts.sysfs and opts.sysfs .. "/proc/cmdline") or (root == "/" and "/proc/cmdline") or nil
  if not p then return nil end
  local f = io.open(p, "r")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

--- evidence(root, rec, opts) -> {state=, why=, booted=bool}: states pending (the loader has
-- not started it), running (the running kernel carries vfioinit.trial=<id>), booted (root's
-- loader record: GRUB's last boot was the trial entry; systemd-bless-boot marked it good),
-- started (systemd-boot started it, nothing marked it good), failed (the loader started it,
-- then the machine booted something else).
function M.evidence(root, rec, opts)
  opts = opts or {}
  local ctx = require("vfioinit.context").new({ root = root })
  local live = running_cmdline(root, opts)
  local word = M.MARKER .. "=" .. rec.id
  if live and cmdline.find(live, M.MARKER) and cmdline.find(live, M.MARKER).text == word then
    return { state = "running", booted = true, why = "the running kernel's command line carries " .. word }
  end
  local st, why
  if rec.loader == "grub" then
    local text = ctx.read(rec.grubenv)
    st, why = grub.state(rec, grub.grubenv(text))
    if st == "started" and live then st, why = "failed", why .. ", but the running kernel lacks " .. word end
    if st == "later" then st = "failed" end
    if st == "gone" then st = "unknown" end
    return { state = st == "started" and "booted" or st, booted = st == "started", why = why }
  end
  local ext = rec.loader == "uki" and uki.EXT or ".conf"
  local path, s = bls.find(ctx, rec.entry, ext)
  if not path then return { state = "unknown", booted = false, why = rec.entry .. "*" .. ext .. ": the trial entry is gone" } end
  if s == "good" then return { state = "booted", booted = true, why = path .. ": systemd-bless-boot marked it good" } end
  if s == "pending" then return { state = "pending", booted = false, why = path .. ": systemd-boot has not started it" } end
  if live then
    return { state = "failed", booted = false, why = path .. ": systemd-boot started it (counter used up), but the "
      .. "running kernel lacks " .. word }
  end
  return { state = "started", booted = false, why = path .. ": systemd-boot started it, nothing marked it good "
    .. "(run `vfioinit commit` on the trial boot itself)" }
end

--- status(root, opts) -> nil (no trial) | {id=, kernel=, loader=, entry=, image=, default=,
-- cmdline=, state=, booted=, why=} | {error=}
function M.status(root, opts)
  local rec, err = record.load(root)
  if rec == false then return nil end
  if not rec then return { error = err } end
  local ev = M.evidence(root, rec, opts)
  return { id = rec.id, kernel = rec.kernel, loader = rec.loader, entry = rec.entry, image = rec.image,
    default = rec.default, cmdline = rec.cmdline, generator = rec.generator, state = ev.state, booted = ev.booted,
    why = ev.why }
end

-- The loader's part of a trial, undone: the image and any renamed BLS entry removed,
-- grubenv's next_entry and vfioinit_trial taken back when they are the trial's.
local function undo_loader(root, rec)
  local ok, err, code
  for _, p in ipairs({ rec.image, rec.loader == "uki" and rec.image .. uki.PART or nil }) do
    ok, err, code = core.fs.remove(root, p)
    if not ok and code ~= ENOENT then return nil, err end
  end
  if rec.loader == "bls" or rec.loader == "uki" then
    local ctx = require("vfioinit.context").new({ root = root })
    while true do
      local path = bls.find(ctx, rec.entry, rec.loader == "uki" and uki.EXT or nil)
      if not path then break end
      ok, err = core.fs.remove(root, path)
      if not ok then return nil, err end
    end
    return true
  end
  local text = core.fs.stat(root, rec.grubenv) and core.fs.read(root, rec.grubenv)
  if not text then return true end
  local env, vars = grub.grubenv(text), {}
  if env.next_entry == rec.next_entry then vars.next_entry = rec.grubenv_was ~= "-" and rec.grubenv_was or false end
  if env[grub.VAR] == rec.id or env[grub.VAR] == rec.id .. ":later" then vars[grub.VAR] = false end
  if next(vars) == nil then return true end
  local new, nerr = grub.grubenv_set(text, vars, rec.grubenv)
  if not new then return nil, nerr end
  -- a block vfioinit created goes when nothing is left in it (GRUB saves next_entry empty)
  local left = false
  for _, v in pairs(grub.grubenv(new)) do left = left or v ~= "" end
  if rec.grubenv_created == "yes" and not left then return core.fs.remove(root, rec.grubenv) end
  return core.fs.write_atomic(root, rec.grubenv, new, 420)
end

local function drop_locked(root, opts)
  local rec, err = record.load(root)
  if rec == false then return {} end
  if not rec then return nil, err end
  local ok, uerr = undo_loader(root, rec)
  if not ok then return nil, uerr end
  local function ours(e) return e.generator == M.GENERATOR end
  local list, rerr, refused = state.revert(root, { force = opts.force, dry_run = opts.dry_run,
    only = function(e) return ours(e) and e.path ~= record.PATH end })
  if not list then return nil, rerr, refused end
  if opts.dry_run then return list end
  if rec.loader == "grub" then
    -- grub.cfg without the trial entry (its script is gone)
    local argv = require("vfioinit.boot.loaders.grub").regenerate(require("vfioinit.context").new({ root = root }))
    if argv then
      local r = bootloaders.run_command(root, { target = "grub", argv = argv }, { timeout = opts.timeout })
      list.regenerated = { r }
      if not r.ok then return nil, r.error end
    end
  end
  -- the record goes last: until then, the next revert knows there is a trial to drop
  local last, lerr = state.revert(root, { force = opts.force,
    only = function(e) return e.path == record.PATH or (ours(e) and e.kind == "dir") end })
  if not last then return nil, lerr end
  for _, e in ipairs(last) do list[#list + 1] = e end
  list.trial = rec.id
  return list
end

--- drop(root, opts) -> list (revert's) | nil, err, refused. opts: force, dry_run, timeout.
function M.drop(root, opts)
  return state.with_lock(root, drop_locked, root, opts or {})
end

--- pending(root) -> rec | false | nil, err
function M.pending(root) return record.load(root) end

M.blocks = record.blocks  -- lua/vfioinit/trial/record.lua: a plain apply asks it without loading this

--- commit(opts, registry) -> report | nil, err, report
function M.commit(opts, registry)
  local root = opts.root or "/"
  return state.with_lock(root, function()
    local rec, err = record.load(root)
    if rec == nil then return nil, err end
    if not rec then return nil, root .. ": no trial to commit (`vfioinit apply --trial` makes one)" end
    local ev = M.evidence(root, rec, opts)
    if not ev.booted then
      return nil, ("trial %s was not seen booting (%s): %s"):format(rec.id, ev.state, ev.why)
    end
    local uopts = { root = opts.root, log = opts.log, on_output = opts.on_output, timeout = opts.timeout, committing = true }
    for k, v in pairs(rec.opts) do uopts[k] = v end
    if uopts.cmdline then uopts.cmdline = true end
    local report = require("vfioinit.pipeline").update(uopts, registry)
    if not report.ok then return nil, report.error, report end
    local list, derr = drop_locked(root, { timeout = opts.timeout })
    if not list then report.error = derr; report.ok = false; return nil, derr, report end
    report.committed = { id = rec.id, evidence = ev.why, removed = list }
    return report
  end)
end

return M
