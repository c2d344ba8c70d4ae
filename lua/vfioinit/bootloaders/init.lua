--[[ vfioinit.bootloaders: the kernel command line (`--cmdline`, Lua `cmdline = true`).

One module per place a boot path reads its command line from (lua/vfioinit/bootloaders/):
  grubby          `grubby --update-kernel=ALL --args` (record: /etc/vfioinit/grubby.cmdline)
  kernelstub      `kernelstub -a` / `-d` (record: /etc/vfioinit/kernelstub.cmdline)
  grub            /etc/default/grub.d/vfioinit.cfg or /etc/default/grub, then update-grub /
                  grub-mkconfig -o / grub2-mkconfig -o regenerates grub.cfg
  dracut_cmdline  /etc/dracut.conf.d/99-vfioinit-cmdline.conf (dracut's UKIs: its own uefi=yes,
                  and kernel-install layout=uki with uki_generator=dracut)
  kernel_cmdline  /etc/kernel/cmdline (kernel-install, systemd-boot, UKIs)
  cmdline_d       /etc/cmdline.d/vfioinit.conf (mkinitcpio UKIs)
  refind          refind_linux.conf lines and refind.conf stanzas' `options`, edited in place
  limine          limine.conf entries' `cmdline:`; BLAKE2b pins on rebuilt images repinned
  rpm_ostree_kargs  `rpm-ostree kargs --append-if-missing` (record: /etc/vfioinit/rpm_ostree_kargs.cmdline)
  ostree_kargs    `ostree admin instutil set-kargs` (record: /etc/vfioinit/ostree_kargs.cmdline)
  bootc_kargs     /usr/lib/bootc/kargs.d/vfioinit.toml (bootc image build roots)
Each: { name=, detect(ctx) -> bool, edits(ctx, wants) -> changes | nil, err,
regenerate(ctx) -> argv | nil, readback(ctx, wants, kver, run) -> entries | nil, err,
stale_images = true when images embed the file (UKIs) }.

Stages (lua/vfioinit/pipeline.lua): `changes` (part of the plan, so diff, apply, journal,
backups and revert are the generator configs' ones), `regenerate` (after apply and after
revert: the generated grub.cfg is like an image, never backed up), `readback` (verify).
]]
local core = require "vfioinit.core"
local words = require "vfioinit.bootloaders.words"

local M = {}

M.TARGETS = { "grubby", "kernelstub", "grub", "dracut_cmdline", "kernel_cmdline", "cmdline_d", "refind", "limine",
  "rpm_ostree_kargs", "ostree_kargs", "bootc_kargs" }
-- an ostree root's command line is its deployments' (lua/vfioinit/ostree.lua): only these
M.OSTREE = { rpm_ostree_kargs = true, ostree_kargs = true, bootc_kargs = true }
-- owners of files whose revert runs commands first, before the targets' (the deployment
-- vfioinit made goes before its words leave the default one)
M.HOOKED = { "vfioinit.ostree_initramfs" }

function M.get(name) return require("vfioinit.bootloaders." .. name) end

-- The targets of root: every one whose files or tools are there (kernel_cmdline covers
-- mkinitcpio's UKIs too: it is their first source), or nil, err when none is.
function M.select(ctx)
  local list, have = {}, {}
  for _, n in ipairs(M.TARGETS) do
    local t = M.get(n)
    -- grubby keeps /etc/default/grub in step itself; kernel_cmdline feeds mkinitcpio's UKIs too
    -- dracut's UKIs never read /etc/kernel/cmdline: not created for them alone
    local covered = (n == "grub" and have.grubby) or (n == "cmdline_d" and have.kernel_cmdline)
      or (n == "kernel_cmdline" and have.dracut_cmdline and not ctx.exists("/etc/kernel/cmdline"))
      or (ctx.ostree ~= nil) ~= (M.OSTREE[n] == true)
    if not covered and t.detect(ctx) then
      list[#list + 1] = t; have[n] = true
    end
  end
  if #list == 0 and ctx.ostree then
    return nil, ("%s: --cmdline: an ostree image tree without bootc (kargs.d): its kernel arguments are the "
      .. "deployment's, set where it is deployed"):format(ctx.root)
  end
  if #list == 0 then
    return nil, ("%s: --cmdline: no boot loader configuration found (looked for update-grub, grub-mkconfig, "
      .. "grub2-mkconfig, /etc/kernel/cmdline, kernel-install layout=uki|bls, mkinitcpio presets with _uki=, "
      .. "dracut uefi=yes, rEFInd refind.conf or refind_linux.conf, limine.conf)")
      :format(ctx.root)
  end
  return list
end

function M.wants(run) return words.wants(run.ids) end

-- The kernels of the run into which vfio_pci is built (ids must go on the command line).
function M.builtin(run)
  local out = {}
  for _, k in ipairs(run.kernels) do
    local st = run:module_state(k, "vfio_pci")
    if st == "builtin" then out[#out + 1] = k end
  end
  return out
end

-- Item 5: ids for a kernel with vfio-pci built in need the command line.
function M.check_builtin(run)
  if not (run.ids and #run.ids > 0) then return true end
  local ks = M.builtin(run)
  if #ks == 0 then return true end
  local where = ("/lib/modules/%s/modules.builtin"):format(ks[1])
  if not run.opts.cmdline then
    return nil, ("%s: vfio-pci is built into kernel %s, which never reads modprobe.d options: the ids "
      .. "must go on the kernel command line as vfio-pci.ids=%s; run again with --cmdline"):format(
      where, table.concat(ks, ", "), table.concat(run.ids, ","))
  end
  run.ctx.warn(("%s: vfio-pci is built into kernel %s: the modprobe.d `options vfio-pci ids=` line does "
    .. "nothing there; vfio-pci.ids= on the kernel command line binds the devices"):format(where, table.concat(ks, ", ")))
  return true
end

-- changes(run) -> list of plan changes (generator = "cmdline") | nil, err. Also keeps the
-- selected targets on the run (run.bootloaders) for the later stages.
function M.changes(run)
  local targets, err = M.select(run.ctx)
  if not targets then return nil, err end
  run.bootloaders = targets
  local wants, out = M.wants(run), {}
  for _, t in ipairs(targets) do
    local list, terr = t.edits(run.ctx, wants)
    if not list then return nil, terr end
    for _, c in ipairs(list) do
      c.generator, c.bootloader, c.stale_images = "cmdline", t.name, t.stale_images
      out[#out + 1] = c
    end
  end
  return out
end

-- argv, a command {argv=, bind=}, or a list of either -> list of either
local function argvs(x)
  if not x then return {} end
  if type(x[1]) == "table" then return x end
  return { x }
end

-- One command of target t: {target=, argv=, bind=}.
local function command(t, x)
  if x.argv then return { target = t.name, argv = x.argv, bind = x.bind } end
  return { target = t.name, argv = x }
end

-- The regeneration commands of the run's targets: { {target=, argv=} ... }.
function M.commands(run, targets)
  local out = {}
  for _, t in ipairs(targets or run.bootloaders or {}) do
    for _, x in ipairs(argvs(t.regenerate(run.ctx))) do out[#out + 1] = command(t, x) end
  end
  return out
end

M.TIMEOUT = 300
M.TAIL = 10

-- Run one regeneration command chrooted into root (like a rebuild): an entry
-- {target=, command=, status=, signal=, timed_out=, seconds=, ok=, error=}.
function M.run_command(root, c, opts)
  local tail = {}
  local e = { target = c.target, command = table.concat(c.argv, " "), ok = false }
  local res, err = core.spawn.run({ argv = c.argv, root = root ~= "/" and root or nil, bind = c.bind,
    timeout = opts.timeout or M.TIMEOUT,
    on_line = function(_, line)
      tail[#tail + 1] = line
      if #tail > M.TAIL then table.remove(tail, 1) end
      if opts.on_output then opts.on_output(line) end
    end })
  if not res then e.error = ("%s: %s"):format(e.command, err); return e end
  e.status, e.signal, e.timed_out, e.seconds = res.status, res.signal, res.timed_out, res.seconds
  e.ok = res.status == 0
  if not e.ok then
    local how = res.timed_out and "timed out" or res.signal and ("was killed by signal " .. res.signal)
      or ("exited with status " .. tostring(res.status))
    e.error = ("%s %s; last lines of output:\n%s"):format(e.command, how, table.concat(tail, "\n"))
  end
  return e
end

-- regenerate stage: each target's command; returns the entries and the first error.
function M.regenerate(run, opts)
  local out, first = {}, nil
  for _, c in ipairs(M.commands(run)) do
    if opts.log then opts.log("regenerating with " .. table.concat(c.argv, " ")) end
    local e = M.run_command(run.root, c, opts)
    out[#out + 1] = e
    first = first or e.error
  end
  return out, first
end

--- after_rebuild(run, rebuilt) -> true | nil, err: the images a rebuild wrote (rebuild.run
-- entries) may be pinned by hash in a loader's file (Limine's `path#blake2b`): each found
-- target's `repin(ctx, changed)` gives the edits, applied as a follow-up plan (journaled,
-- reverted like the plan's own). Runs with or without --cmdline.
function M.after_rebuild(run, rebuilt)
  local changed = {}
  for _, e in ipairs(rebuilt or {}) do
    if e.ok and e.image then changed[core.fs.resolve(run.root, e.image) or e.image] = true end
  end
  if not next(changed) then return true end
  local all = {}
  for _, n in ipairs(M.TARGETS) do
    local t = M.get(n)
    if t.repin and t.detect(run.ctx) then
      local list, err = t.repin(run.ctx, changed)
      if not list then return nil, err end
      for _, c in ipairs(list) do
        c.generator, c.bootloader = "cmdline", t.name
        all[#all + 1] = c
      end
    end
  end
  if #all == 0 then return true end
  return require("vfioinit.plan").follow_up(run, all):apply()
end

-- The target (found in ctx) one of whose files is path, or nil.
local function owner(ctx, path)
  for _, m in ipairs(M.HOOKED) do
    if path == require(m).RECORD then return require(m) end
  end
  for _, n in ipairs(M.TARGETS) do
    local t = M.get(n)
    for _, p in ipairs(t.files and t.files(ctx) or {}) do
      if p == path then return t.detect(ctx) and t or nil end
    end
  end
end

-- Run commands {target=, argv=}, each result appended to `out`; true, or nil and the
-- first failure's message (every command runs).
local function run_all(root, cmds, opts, out)
  local first
  for _, c in ipairs(cmds) do
    local e = M.run_command(root, c, opts)
    out[#out + 1] = e
    first = first or e.error
  end
  if first then return nil, first end
  return true
end

--- revert_hooks(root, opts, out) -> {undo=, after=}, the hooks of state.revert (run while the
-- manifest still names the file, so a failed or killed command runs again at the next
-- revert); each command's result is appended to `out`.
-- undo(step): before a tool's record goes, the tool runs the record's inverse.
-- after(steps): once every file is restored, each target with a file in the manifest
-- regenerates what it feeds: grub.cfg is generated again, kernel-install writes its BLS
-- entries again (`revert_argvs`). Also when the file was already back (`unchanged`): an
-- interrupted revert may have restored it and died before this.
function M.revert_hooks(root, opts, out)
  local context = require "vfioinit.context"
  local hooks = {}
  local function ctx_of()
    local ctx = context.new({ root = root })
    ctx.ostree = opts.ostree
    return ctx
  end
  function hooks.undo(step)
    local t = owner(ctx_of(), step.entry.path)
    if not (t and t.undo) then return true end
    local cmds = {}
    for _, x in ipairs(argvs(t.undo(step.before))) do cmds[#cmds + 1] = command(t, x) end
    return run_all(root, cmds, opts, out)
  end
  function hooks.after(steps)
    local ctx = ctx_of()
    local touched, before = {}, {}
    for _, s in ipairs(steps) do
      local t = s.entry.kind ~= "dir" and owner(ctx, s.entry.path)
      if t and not t.undo then touched[t.RECORD or t.name] = t; before[t] = s.before end
    end
    local cmds, names = {}, {}
    for _, m in ipairs(M.HOOKED) do names[#names + 1] = require(m).RECORD end
    for _, n in ipairs(M.TARGETS) do names[#names + 1] = n end
    for _, n in ipairs(names) do
      local t = touched[n]
      local list = t and (t.revert_argvs and t.revert_argvs(ctx, before[t]) or argvs(t.regenerate(ctx))) or {}
      for _, x in ipairs(list) do cmds[#cmds + 1] = command(t, x) end
    end
    return run_all(root, cmds, opts, out)
  end
  return hooks
end

-- Per kernel: does what boots it carry the parameters? A grub kernel needs every
-- normal entry right (recovery entries get GRUB_CMDLINE_LINUX alone, by design) and at
-- least one; BLS and UKI entries all. Returns ok, first problem.
function M.judge(run, list)
  local seen = {}
  for _, e in ipairs(list) do
    if e.error then return false, e.error end
    if not e.recovery then
      seen[e.target .. "\0" .. e.kernel] = true
      if not e.ok then
        return false, ("%s (%s): the kernel command line lacks %s"):format(e.entry, e.source, e.missing or "?")
      end
    end
  end
  for _, t in ipairs(run.bootloaders or {}) do
    if t.name == "grub" then
      for _, k in ipairs(run.kernels) do
        if not seen["grub\0" .. k] then return false, ("no grub.cfg entry boots kernel %s"):format(k) end
      end
    end
  end
  return true
end

-- readback(run) -> per kernel and entry {kernel=, target=, entry=, source=, cmdline=, ok=,
-- missing=, error=}, read from what the loader boots.
function M.readback(run)
  local wants, out = M.wants(run), {}
  for _, t in ipairs(run.bootloaders or select(1, M.select(run.ctx)) or {}) do
    for _, k in ipairs(run.kernels) do
      local list, err = t.readback(run.ctx, wants, k, run)
      if not list then out[#out + 1] = { kernel = k, target = t.name, ok = false, error = err }
      else
        for _, e in ipairs(list) do e.kernel, e.target = k, t.name; out[#out + 1] = e end
      end
    end
  end
  return out
end

return M
