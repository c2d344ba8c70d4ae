-- The `vfioinit` command: argument parsing, human and --json output, exit codes.
-- Exit: 0 success (plan: nothing to change), 1 error, 2 plan pending / verify failed.
local util = require("vfioinit.util")
-- loaded when used: --version and --help need neither the JSON encoder nor the commands
local json = util.lazy "vfioinit.json"
local commands = util.lazy "vfioinit.commands"

local M = {}

-- One row per option: the parser, --help, the man page (doc/vfioinit.1, tools/gen-man) and
-- the bash completion (contrib/completion) all read this table, so adding an option is one
-- row. arg: the value's name (nil: a flag); key: the field of the parsed options; list: the
-- option may repeat, its values collect in a list; complete: what completes its value;
-- values: the list of names ("generators", "targets") that {values} in its help stands for, taken from
-- the instance's registry when the text is rendered;
-- commands: the commands that take it (nil: every one; --help and --version take none and
-- need no command); needs: command -> options one of which must come with it there.
local CONFIG = { "status", "plan", "apply" }        -- what the configuration is made of
local CHECKED = { "status", "plan", "apply", "verify" }  -- and what verify checks the line against
local SELECT = { "status", "plan", "apply", "rebuild", "verify" }  -- which images
local DEVICES = { "--device", "--match" }
M.OPTIONS = {
  { "--root", arg = "DIR", key = "root", complete = "dir",
    help = "configure the system mounted at DIR instead of / (a chroot being provisioned)" },
  { "--generator", arg = "NAME", key = "generators", list = true, complete = "generator", commands = SELECT,
    values = "generators",
    help = "only this generator (repeatable), one of: {values}; default: the active one, else every installed one" },
  { "--kernel", arg = "KVER", key = "kernels", list = true, complete = "kernel", commands = SELECT,
    help = "only this installed kernel version (repeatable); default: every installed kernel" },
  { "--module", arg = "NAME", key = "modules", list = true, commands = { "status", "plan", "apply", "verify" },
    help = "also load module NAME early, beside the VFIO modules (repeatable)" },
  { "--ids", arg = "VVVV:DDDD[,...]", key = "ids", commands = CHECKED,
    help = "PCI vendor:device IDs vfio-pci must claim: writes /etc/modprobe.d/vfioinit.conf "
      .. "(options vfio-pci ids=, softdeps) into every image" },
  { "--device", arg = "DDDD:BB:DD.F", key = "devices", list = true, commands = CONFIG,
    help = "PCI address vfio-pci must claim (repeatable; for one of two identical devices): "
      .. "a script in the image writes vfio-pci to its driver_override before udev" },
  { "--match", arg = "REGEX", key = "match", commands = CONFIG,
    help = "choose devices of this machine by a PCRE2 pattern over 'vvvv:dddd Vendor Device [Class]' "
      .. "(names from pci.ids); needs --root /" },
  { "--cmdline", key = "cmdline", commands = CHECKED, values = "targets",
    help = "also put intel_iommu=on iommu=pt (and, with --ids, vfio-pci.ids=) on the kernel command "
      .. "line, through each target found in root (targets: {values}); needed when vfio-pci is built "
      .. "into the kernel" },
  { "--softdeps", key = "softdeps", commands = CONFIG,
    help = "write softdeps putting vfio-pci before the GPU drivers even without --ids" },
  { "--timeout", arg = "SECONDS", key = "timeout", commands = { "apply", "rebuild", "commit" },
    help = "time limit of each generator run (default 600; at most 1e9)" },
  { "--sign-key", arg = "KEY", key = "sign_key", commands = { "apply", "rebuild" },
    needs = { apply = { "--sign-cert" }, rebuild = { "--sign-cert" } },
    help = "sign each rebuilt EFI image the generator's own hooks left unsigned with sbsign, run in the "
      .. "root, with this private key (a path inside the root; vfioinit never creates keys)" },
  { "--sign-cert", arg = "CERT", key = "sign_cert", commands = { "apply", "rebuild" },
    needs = { apply = { "--sign-key" }, rebuild = { "--sign-key" } },
    help = "the certificate of --sign-key (PEM, a path inside the root)" },
  { "--jobs", arg = "N", key = "jobs", commands = { "apply", "rebuild" },
    help = "run at most N generator commands (one per kernel) at a time (default: the CPUs)" },
  { "--no-rebuild", key = "no_rebuild", commands = { "apply" },
    help = "write the configuration and verify the images as they are; rebuild nothing" },
  { "--force", key = "force", commands = { "status", "plan", "apply", "revert" },
    needs = { status = DEVICES, plan = DEVICES, apply = DEVICES },
    help = "revert: also restore files edited since vfioinit wrote them, keeping their "
      .. "content as PATH.vfioinit-edited; with --device/--match: pass a device the safety rules refuse "
      .. "(boot VGA, the root disk's controller)" },
  { "--trial", key = "trial", commands = { "apply" },
    help = "try the configuration for one boot: the default entry stays as it is; an image built from a "
      .. "staged copy of the generator's configuration and an entry of its own (GRUB: next_entry; "
      .. "systemd-boot: boot counting +1) start the next boot only; then 'vfioinit commit' or 'vfioinit revert'" },
  { "--trial-cmdline", arg = "ARGS", key = "trial_cmdline", commands = { "apply" }, needs = { apply = { "--trial" } },
    help = "words for the trial entry's command line only, e.g. panic=5 (a panic reboots into the old default)" },
  { "--full", key = "full", commands = { "verify" },
    help = "read every image, even one whose fingerprint says it is unchanged since it was verified" },
  { "--dry-run", key = "dry_run", commands = { "apply", "revert" },
    help = "print the diff the command would make (apply: as plan does, with its exit status); write nothing" },
  { "--json", key = "json", help = "print exactly one JSON object on stdout, whatever happens" },
  { "--version", key = "version", commands = {}, help = "print the version and exit" },
  { "--help", short = "-h", key = "help", commands = {}, help = "print this help and exit" },
}

-- Commands, in the order --help lists them.
M.COMMANDS = {
  { "status", "generators, kernels, module states, whether each config and image has VFIO" },
  { "plan", "print the unified diff of what apply would change; write nothing" },
  { "apply", "write the changes, then rebuild the stale images and verify them" },
  { "rebuild", "rebuild the images of the selected generators and kernels, and verify them" },
  { "verify", "check that every image contains the VFIO modules" },
  { "revert", "undo every change vfioinit made (with a trial pending: only the trial)" },
  { "commit", "after a good trial boot: make the tried configuration permanent, remove the trial" },
}

-- takes(opt, command) -> does `command` take the option row `opt`?
function M.takes(opt, command)
  if not opt.commands then return true end
  for _, c in ipairs(opt.commands) do if c == command then return true end end
  return false
end

M.EXIT = {
  { "0", "success (plan: nothing to change; apply --no-rebuild: nothing failed, even with a stale image)" },
  { "1", "error: one line on stderr, 'vfioinit: PATH:LINE: reason' where a file is at fault" },
  { "2", "plan: changes are pending; verify: an image lacks a module" },
}

M.ENVIRONMENT = {
  { "VFIOINIT_LOCK_TIMEOUT", "seconds apply, rebuild and revert wait for another run's lock "
    .. "of root (a number >= 0, at most 1e9; default 900)" },
}

M.EXAMPLES = {
  { "vfioinit --ids 10de:1b80,10de:10f0 plan",
    "show the diff that makes vfio-pci claim an NVIDIA GPU and its audio function" },
  { "vfioinit --root /mnt/target --ids 10de:1b80 apply",
    "configure a mounted system, rebuild its stale images in a chroot, verify them" },
}

M.STREAMS = "Data (diffs, status, results, JSON) goes to stdout; progress, warnings and notes "
  .. "such as 'nothing to change' go to stderr."

local usage_text = util.lazy "vfioinit.usage"
-- The names the help text lists: the generators and command-line targets of instance `v`
-- (a vfioinit instance), or the built-in ones when none is given.
local function names(v)
  return { generators = v and v.generator_names() or require("vfioinit.generators").new():names(),
    targets = v and v.bootloader_names("cmdline") or require("vfioinit.boot").new():names("cmdline") }
end
--- usage(v) -> the --help text for instance `v` (default: the built-in generators only).
-- Made when it is shown: a command that shows none loads neither the text nor the generators.
function M.usage(v) return usage_text.help(M, names(v)) end
-- a usage error shows the synopsis only, and where the rest is
local function SYNOPSIS() return M.usage():match("^(.-\n)\n") .. "Try 'vfioinit --help' for the commands and options.\n" end

local COMMANDS = {}
for _, c in ipairs(M.COMMANDS) do COMMANDS[c[1]] = true end
local BY_FLAG = {}
for _, opt in ipairs(M.OPTIONS) do
  BY_FLAG[opt[1]] = opt
  if opt.short then BY_FLAG[opt.short] = opt end
end

-- Each option given must be one the command takes (with what it needs there).
local function check_command(o, given)
  if o.help or o.version then return true end
  for _, opt in ipairs(M.OPTIONS) do
    if given[opt[1]] and o.command then
      if not M.takes(opt, o.command) then
        return nil, ("%s does not apply to %s"):format(opt[1], o.command)
      end
      local needs = opt.needs and opt.needs[o.command]
      local found = not needs
      for _, n in ipairs(needs or {}) do found = found or given[n] end
      if not found then
        return nil, ("%s applies to %s only with %s"):format(opt[1], o.command, table.concat(needs, " or "))
      end
    end
  end
  return true
end

function M.parse(argv)
  local o, given = {}, {}
  for _, opt in ipairs(M.OPTIONS) do if opt.list then o[opt.key] = {} end end
  local i = 1
  while i <= #argv do
    local a = argv[i]
    local flag, inline = a:match("^(%-%-[%w-]+)=(.*)$")
    if flag then
      -- --opt=VALUE only for an option that takes a value: --json=1 is not --json and a command
      if BY_FLAG[flag] and not BY_FLAG[flag].arg then return nil, flag .. " takes no value (" .. a .. ")" end
      a = flag; table.insert(argv, i + 1, inline)
    end
    local opt = BY_FLAG[a]
    if opt then given[opt[1]] = true end
    if opt and opt.arg then
      i = i + 1
      local v = argv[i]
      if v == nil then return nil, a .. " needs a value" end
      if opt.list then table.insert(o[opt.key], v) else o[opt.key] = v end
    elseif opt then
      o[opt.key] = true
    elseif a:match("^%-") then return nil, "unknown option " .. a
    elseif not o.command then
      if not COMMANDS[a] then return nil, "unknown command " .. a end
      o.command = a
    else
      return nil, "unexpected argument " .. a
    end
    i = i + 1
  end
  local ok, cerr = check_command(o, given)
  if not ok then return nil, cerr end
  -- a repeated option means the same thing once (vfio-pci and vfio_pci are one module)
  o.generators = util.unique(o.generators)
  o.kernels = util.unique(o.kernels)
  o.modules = util.unique(o.modules, function(m) return util.valid_module(m) and util.norm(m) or m end)
  if #o.generators == 0 then o.generators = nil end
  if #o.kernels == 0 then o.kernels = nil end
  if #o.devices == 0 then o.devices = nil end
  return o
end

-- The man page, roff, from the same tables as --help (tools/gen-man writes doc/vfioinit.1).
function M.manpage() return usage_text.man(M, names()) end

-- The one rule for streams (M.STREAMS): out() for data; lua/vfioinit/commands.lua has the rest.
local function out(s) io.stdout:write(s) end

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
  io.stderr:write("vfioinit: " .. msg .. "\n" .. SYNOPSIS())
  return 1
end

--- main(argv[, v]) -> exit status; `v`: the vfioinit instance to run (default require "vfioinit").
function M.main(argv, v)
  local args = {}
  for i = 1, #(argv or {}) do args[i] = tostring(argv[i]) end
  local as_json = asks_json(args)
  local o, err = M.parse(args)
  if not o then return usage_error(as_json, err) end
  if o.help then
    local usage = M.usage(v)
    out(o.json and (json.encode({ ok = true, usage = usage }) .. "\n") or usage)
    return 0
  end
  if o.version then
    -- without an instance, the version module's: --version loads neither the core nor the API
    local version = v and v._VERSION or ("vfioinit " .. require("vfioinit.version"))
    out(o.json and (json.encode({ ok = true, version = version }) .. "\n") or (version .. "\n"))
    return 0
  end
  if not o.command then return usage_error(o.json, "no command given") end
  return commands.run(v, o)
end

return M
