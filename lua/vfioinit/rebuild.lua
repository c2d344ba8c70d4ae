--[[ vfioinit.rebuild: run each generator's own command, keeping the previous
image until the new one has been built and verified.

  local rebuild = require("vfioinit.rebuild")
  local report = rebuild.run(ctx, gens, opts)

`ctx` is the context of lua/vfioinit/context.lua (only `ctx.root` and
`ctx.kernels` are used here, the rest is passed on to the generator);
`gens` is a list of generator tables (docs/INTERNALS.md: `name`,
`image_path(ctx, kver)`, `rebuild_argv(ctx, kvers)`).
`opts`:
  kernels   = list of kernel versions (default ctx.kernels)
  on_output = function(line, stream, gen_name, kernels): every output line, as it comes
              (kernels: the versions its command builds, space-separated: commands
              run side by side, their lines interleave)
  timeout   = seconds per command (default 600)
  verify    = function(gen, kver, image_path) -> true | false, missing_list
              | nil, err. Without it, an image only has to exist and be non-empty.
  leftovers = what the caller's own sweep (lua/vfioinit/leftovers.lua) found (the sweep
              is then not run again)
  log       = function(msg): progress ("booster 6.1.0-13-amd64: building",
              "... done in 1.2 s")
  jobs      = how many commands run at the same time (default: the CPUs this
              process may use, M.default_jobs()); 1 runs them one after the other

Always returns one report table (misuse, e.g. a non-table argument, raises):
  report.leftovers = what leftovers.sweep found first: `<image>.vfioinit-prev` files an
                   interrupted run left ({path=, image=, action="restored"|"removed"})
  report.ok      = true when every kernel was rebuilt and verified
  report.error   = first failure's message (nil when ok)
  report.rebuilt = list, one entry per kernel and command:
    { kernel=, generator=, command=argv, status=exit status|nil,
      signal=|nil, timed_out=bool, seconds=, image= (path inside root),
      size_before= (nil: no image before), size_after= (size of the image left
      in place: the new one, or the restored previous one on failure),
      ok=bool, error=msg|nil, missing=list|nil (modules verify did not find) }

Commands run side by side, at most `jobs` at a time, in the order rebuild_argv gave
them (entries keep that order, whatever ends first); each has its own timeout. For
each command: every affected image is copied to `<image>.vfioinit-prev` just before it
starts (the command is not run when that copy fails); then the command runs
(chrooted into ctx.root unless it is "/"); then each image is verified. A
kernel whose command failed, timed out or whose image does not verify gets
its previous image renamed back (a kernel that had no image keeps whatever
the command left); a verified kernel's backup is removed. An error raised by
on_output (or verify) propagates, after the previous images are put back.
Error messages name the command, its exit status and end with the last 20
lines of its output.
]]
local core = require("vfioinit.core")
local util = require("vfioinit.util")
-- what a rebuild needs only when it rebuilds
local signing = util.lazy "vfioinit.signing"
local leftovers = require("vfioinit.leftovers")

local M = {}

M.DEFAULT_TIMEOUT = 600
M.TAIL = 20

local context = require("vfioinit.context")

local function size_of(root, path)
  local st = core.fs.stat(root, path)
  return st and st.type == "file" and st.size or nil
end

-- Where the command (argv[1]) is inside root, or nil: a path as it is, a name through
-- machine.command (spawn's default PATH, as CONTRACT.md defines "installed").
local function find_command(root, cmd)
  if cmd:find("/", 1, true) then
    return size_of(root, cmd) and cmd or nil
  end
  return context.command_in(root, cmd)
end

M.MAX_SCRIPT = 4 * 1024 * 1024  -- larger commands are binaries: no `#!` line to check

-- A script whose `#!` interpreter is missing inside root fails execve with ENOENT, which
-- would read as "command not found": name the interpreter instead. nil when fine.
local function missing_interpreter(root, path)
  local size = size_of(root, path)
  if not size or size > M.MAX_SCRIPT then return nil end
  local text = core.fs.read(root, path, M.MAX_SCRIPT)
  local interp = text and text:match("^#!%s*(/[^%s]+)")
  if interp and not size_of(root, interp) then
    local host = root == "/" and path or (root:gsub("/+$", "") .. path)
    return ("%s: interpreter %s not found in %s"):format(host, interp, root)
  end
end

local function describe_exit(res)
  if res.timed_out then
    return ("timed out after %.1f s and was killed"):format(res.seconds)
  elseif res.signal then
    return ("was killed by signal %d"):format(res.signal)
  end
  return ("exited with status %d"):format(res.status)
end

local function with_tail(msg, tail)
  if #tail == 0 then return msg .. " (no output)" end
  return ("%s; last %d line%s of output:\n%s"):format(msg, #tail, #tail == 1 and "" or "s",
    table.concat(tail, "\n"))
end

-- One report entry per kernel the command builds.
local function entries_of(ctx, gen, cmd)
  local list = {}
  for _, kver in ipairs(cmd.kernels or {}) do
    local image, ierr = gen.image_path(ctx, kver)
    list[#list + 1] = {
      kernel = kver, generator = gen.name, command = cmd.argv, image = image, image_error = ierr,
      size_before = image and size_of(ctx.root, image), ok = false, timed_out = false,
    }
  end
  return list
end

-- The one way a previous image goes back: its kept copy renamed over the image.
-- Returns true, or nil and why (the copy stays at e.backup then).
local function restore(root, e)
  if not e.backup then return true end
  local ok, err = core.fs.rename(root, e.backup, e.real)
  e.backup, e.real = nil, nil
  return ok, err
end

local function restore_all(root, list)
  for _, e in ipairs(list) do restore(root, e) end
end

-- Every entry fails with `msg` before the command ran; nothing was changed.
local function fail_all(root, list, msg)
  for _, e in ipairs(list) do
    e.error = e.error or msg
    e.backup, e.real, e.image_error = nil, nil, nil
    e.size_after = e.image and size_of(root, e.image)
  end
end

-- Why the command cannot run at all (missing, no interpreter, no image path, an image
-- path that is not a regular file), or nil.
local function precheck(root, gen, argv, list)
  local path = find_command(root, argv[1])
  if not path then return nil, ("%s: command not found in %s"):format(argv[1], root) end
  local noexec = missing_interpreter(root, path)
  if noexec then return nil, noexec end
  for _, e in ipairs(list) do
    if not e.image then
      return nil, e.image_error or ("%s: no image path for kernel %s"):format(gen.name, e.kernel)
    end
    -- a FIFO or device where the image belongs is not ours to replace
    local st = core.fs.stat(root, e.image)
    if st and st.type ~= "file" then
      return nil, ("%s: not a regular file (%s)"):format(e.image, st.kind or st.type)
    end
  end
  return path
end

-- Keep every previous image before the command can touch it. A symlinked image
-- (/boot/initrd.img -> initrd.img-KVER) is backed up and restored as its target, so
-- the link itself stays a link. Returns true, or nil and why (no copy is left then).
local function keep_previous(root, list)
  for _, e in ipairs(list) do
    if e.size_before then
      e.real = core.fs.resolve(root, e.image) or e.image
      local ok, err = core.fs.copy(root, e.real, e.real .. leftovers.BACKUP_SUFFIX)
      if not ok then
        for _, b in ipairs(list) do
          if b.backup then core.fs.remove(root, b.backup) end
        end
        return nil, ("%s: cannot keep a copy of the previous image, not rebuilding: %s"):format(e.image, err)
      end
      e.backup = e.real .. leftovers.BACKUP_SUFFIX
      e.was = signing.before(root, e.image)  -- an EFI image: who signed it
    end
  end
  return true
end

-- What went wrong running the command (nil: it exited 0); records its exit on each entry.
local function run_failure(ctx, gen, argv, path, res, err, tail, list)
  local cmdline = table.concat(argv, " ")
  if not res then
    if err and err:find(": No such file or directory$") and err:sub(1, #argv[1] + 1) == argv[1] .. ":" then
      -- the command is there (checked above): what execve did not find is its loader
      return ("%s: cannot be run in %s: its interpreter or dynamic loader is missing there")
        :format(path, ctx.root)
    end
    return ("%s: %s"):format(cmdline, err)
  end
  for _, e in ipairs(list) do
    e.status, e.signal, e.timed_out, e.seconds = res.status, res.signal, res.timed_out, res.seconds
  end
  if res.timed_out or res.status ~= 0 then
    return with_tail(("%s: `%s` %s"):format(gen.name, cmdline, describe_exit(res)), tail)
  end
end

-- A rebuilt EFI image keeps its signature (vfioinit.signing). nil, or why it may not stay.
local function keep_signed(root, gen, e, opts)
  local why, warning, signed = signing.after(root, e.image, e.was, opts.sign, opts.timeout)
  e.warning, e.signed = warning, signed
  if why then return why .. "; " .. signing.advice(gen, root) end
end

-- Check one freshly built image: true, or sets e.missing / e.error. An error raised by
-- opts.verify propagates after the previous images are back.
local function check_image(root, gen, e, opts, list, tail)
  local size = size_of(root, e.image)
  local ok, missing
  local refused = size and size > 0 and keep_signed(root, gen, e, opts)
  if refused then
    e.error = refused
    return
  end
  if not size or size == 0 then
    ok, missing = nil, ("%s: no image was written"):format(e.image)
  elseif opts.verify then
    local vok
    vok, ok, missing = pcall(opts.verify, gen, e.kernel, e.image)
    if not vok then
      restore_all(root, list)
      error(ok, 0)
    end
  else
    ok = true
  end
  if ok then e.ok = true; return end
  local why
  if ok == false then
    e.missing = missing
    why = ("%s: image lacks %s"):format(e.image, table.concat(missing or {}, ", "))
  else
    why = tostring(missing)
  end
  e.error = with_tail(("%s: `%s` exited with status %d but the image does not verify: %s")
    :format(gen.name, table.concat(e.command, " "), e.status, why), tail)
end

-- A verified kernel's backup goes; a failed one's previous image comes back.
local function settle(root, e, log)
  if e.ok and e.backup then
    local ok, rerr = core.fs.remove(root, e.backup)
    if not ok then log(("%s: could not remove the backup: %s"):format(e.backup, rerr)) end
  elseif e.backup then
    local backup = e.backup
    local ok, rerr = restore(root, e)
    if ok then
      e.error = e.error .. ("\n(previous image %s restored)"):format(e.image)
    else
      e.error = e.error .. ("\n(restoring the previous image failed: %s; it is kept at %s)"):format(rerr, backup)
    end
  end
  e.backup, e.real = nil, nil
  e.size_after = size_of(root, e.image)
end

-- One command over its kernels, up to the point where it runs: its report entries
-- (appended now, in command order), the checks, the previous images kept. Returns the
-- task, or nil when the command cannot run (its entries say why; nothing was changed).
local function prepare(ctx, gen, cmd, entries)
  local root = ctx.root
  local list = entries_of(ctx, gen, cmd)
  for _, e in ipairs(list) do entries[#entries + 1] = e end
  local path, perr = precheck(root, gen, cmd.argv, list)
  if not path then return fail_all(root, list, perr) end
  local kept, kerr = keep_previous(root, list)
  if not kept then return fail_all(root, list, kerr) end
  local names = {}
  for _, e in ipairs(list) do names[#names + 1] = e.kernel end
  return { gen = gen, argv = cmd.argv, path = path, list = list, tail = {}, kernels = table.concat(names, " "),
    what = ("%s %s"):format(gen.name, table.concat(names, " ")) }
end

-- Start the task's command, keeping its last M.TAIL output lines. Returns the handle, or
-- nil and why it could not start.
local function start(ctx, t, opts)
  local on_output, tail = opts.on_output, t.tail
  local log = opts.log or function() end
  log(t.what .. ": building (" .. table.concat(t.argv, " ") .. ")")
  local h, err = core.spawn.start({
    argv = t.argv,
    root = ctx.root ~= "/" and ctx.root or nil,
    timeout = opts.timeout or M.DEFAULT_TIMEOUT,
    on_line = function(stream, line)
      tail[#tail + 1] = line
      if #tail > M.TAIL then table.remove(tail, 1) end
      if on_output then on_output(line, stream, t.gen.name, t.kernels) end
    end,
  })
  t.handle = h
  return h, err
end

-- The command has ended (res) or could not start (nil, err): verify each image, settle
-- each kernel's previous image, log.
local function finish(ctx, t, res, err, opts)
  local root, log = ctx.root, opts.log or function() end
  local failure = run_failure(ctx, t.gen, t.argv, t.path, res, err, t.tail, t.list)
  for _, e in ipairs(t.list) do
    if failure then e.error = failure else check_image(root, t.gen, e, opts, t.list, t.tail) end
    settle(root, e, log)
  end
  if res then
    log(("%s: %s in %.1f s"):format(t.what, failure and "failed" or "done", res.seconds))
  else
    log(("%s: failed"):format(t.what))
  end
end

--- default_jobs() -> how many commands run side by side by default: the CPUs this process may use.
function M.default_jobs()
  return core.spawn.cpus() or 1
end

-- Run the tasks' commands, at most `jobs` at a time, each task's from its backup to its
-- settled images. With jobs = 1 each command ends (and is verified) before the next
-- one's previous images are kept. An error raised by on_output or verify propagates
-- after every running command is killed and reaped and its previous images are back.
local function schedule(ctx, pending, opts, entries)
  local jobs = opts.jobs or M.default_jobs()
  local started, running, nexti = {}, {}, 1
  local function fill()
    while #running < jobs and nexti <= #pending do
      local p = pending[nexti]
      nexti = nexti + 1
      local t = prepare(ctx, p.gen, p.cmd, entries)
      if t then
        started[#started + 1] = t
        local _, serr = start(ctx, t, opts)
        if t.handle then running[#running + 1] = t else finish(ctx, t, nil, serr, opts); t.done = true end
      end
    end
  end
  -- one turn: output passed on, the commands that ended verified and settled
  local function turn()
    local handles = {}
    for i, t in ipairs(running) do handles[i] = t.handle end
    local ok, perr = core.spawn.wait(handles)
    local ended, still = {}, {}
    for _, t in ipairs(running) do
      if not ok then t.handle:close() end
      if ok and not t.handle:done() then still[#still + 1] = t else ended[#ended + 1] = t end
    end
    running = still
    for _, t in ipairs(ended) do
      local res = ok and t.handle:result() or nil
      t.handle:close()
      finish(ctx, t, res, not ok and perr or nil, opts)
      t.done = true
    end
  end
  local ok, err = pcall(function()
    repeat
      fill()
      if #running > 0 then turn() end
    until #running == 0 and nexti > #pending
  end)
  if not ok then
    for _, t in ipairs(started) do
      if not t.done then
        if t.handle then t.handle:close() end
        restore_all(ctx.root, t.list)
      end
    end
    error(err, 0)
  end
end

-- Entries for every kernel of a generator whose rebuild_argv failed.
local function argv_failed(gen, kernels, err, entries)
  for _, kver in ipairs(kernels) do
    entries[#entries + 1] = {
      kernel = kver, generator = gen.name, ok = false, timed_out = false,
      error = ("%s: %s"):format(gen.name, tostring(err)),
    }
  end
end

function M.run(ctx, gens, opts)
  assert(type(ctx) == "table" and type(ctx.root) == "string", "rebuild.run: ctx with a root expected")
  assert(type(gens) == "table", "rebuild.run: list of generators expected")
  opts = opts or {}
  assert(type(opts) == "table", "rebuild.run: opts must be a table")
  assert(opts.jobs == nil or (math.type(opts.jobs) == "integer" and opts.jobs >= 1),
    "rebuild.run: jobs must be a whole number >= 1")
  local kernels = opts.kernels or ctx.kernels or {}
  local report = { ok = true, rebuilt = {} }
  -- a caller that has settled leftovers already (the pipeline, once per run) passes them
  report.leftovers = opts.leftovers or leftovers.sweep(ctx, gens, kernels, opts.log)
  -- sign={key=,cert=} that cannot be used: nothing is rebuilt
  local signable, serr = signing.check(ctx.root, opts.sign)
  local pending = {}
  for _, gen in ipairs(signable and gens or {}) do
    local cmds, err = gen.rebuild_argv(ctx, kernels)
    if not cmds then argv_failed(gen, kernels, err, report.rebuilt) end
    for _, cmd in ipairs(cmds or {}) do
      assert(type(cmd.argv) == "table" and type(cmd.argv[1]) == "string",
        gen.name .. ".rebuild_argv: each command needs an argv list")
      pending[#pending + 1] = { gen = gen, cmd = cmd }
    end
  end
  for _, gen in ipairs(signable and {} or gens) do argv_failed(gen, kernels, serr, report.rebuilt) end
  schedule(ctx, pending, opts, report.rebuilt)
  for _, e in ipairs(report.rebuilt) do
    if not e.ok then
      report.ok = false
      report.error = report.error or e.error
    end
  end
  return report
end

return M
