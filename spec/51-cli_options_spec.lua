-- CLI options of the contract's usage block: --version and --timeout SECONDS (the
-- generator's time limit, as rebuild{timeout=} in Lua), run through bin/vfioinit.
local h = require "helpers"

local STANDIN = h.project .. "/spec/fixtures/standin-booster"
local APPLETS = "sh cat echo printf mkdir mktemp find cpio mv rm sleep"
local root_it = h.chroot_it(it, pending)

-- run(args) -> exit code, stdout, stderr, seconds
local function run(args)
  local t0 = os.time()
  local code, out, err = h.cli(args)
  return code, out, err, os.time() - t0
end

describe("vfioinit --version", function()
  it("prints the module's version, as text and as one JSON object", function()
    local code, out = run("--version")
    assert.are.equal(0, code)
    local want = require("vfioinit")._VERSION
    assert.are.equal(want .. "\n", out)
    assert.matches("^vfioinit %d+%.%d+%.%d+", out)
    code, out = run("--json --version")
    assert.are.equal(0, code)
    assert.are.equal("True " .. want, h.pyjson(out, "d['ok'], d['version']"))
  end)

  -- what a user waits for most often costs least. The command, as run: a hook on require
  -- (set before bin/vfioinit runs) names every module asked for.
  it("loads the version module and nothing else", function()
    local hook = 'local r = require; require = function(n, ...) io.stderr:write("require ", n, "\\n"); return r(n, ...) end'
    local out, ok = h.sh(h.lua .. " -e " .. h.q(hook) .. " " .. h.q(h.project .. "/bin/vfioinit") .. " --version 2>&1")
    assert.is_true(ok, out)
    assert.are.equal("require vfioinit.version\n" .. require("vfioinit")._VERSION .. "\n", out)
  end)

  -- through the parser (--json, or cli.main called from Lua): the option table, its parser
  -- and the version; not the core, the commands, the help text or the Lua API
  it("through the parser, loads the parser and the version only", function()
    local script = ([[
package.path = %q .. "/lua/?.lua;" .. package.path
package.cpath = %q .. "/?.so;" .. package.cpath
io.stdout:setvbuf("full")
local code = require("vfioinit.cli").main({ "--version" })
local loaded = {}
for name in pairs(package.loaded) do if name:match("^vfioinit") then loaded[#loaded + 1] = name end end
table.sort(loaded)
io.stderr:write(code, " ", table.concat(loaded, " "))
]]):format(h.project, h.project .. "/" .. (os.getenv("VFIOINIT_BUILD") or "build"))
    local f = os.tmpname()
    finally(function() os.remove(f) end)
    h.writefile(f, script)
    local out = h.sh("lua5.4 " .. h.q(f) .. " 2>&1 >/dev/null")
    assert.are.equal("0 vfioinit.cli vfioinit.machine vfioinit.util vfioinit.version", out)
  end)
end)

describe("vfioinit --timeout", function()
  it("refuses what is not a number of seconds > 0, before anything runs", function()
    -- one finite range for every number of seconds: 1e400 (inf once read) is inf
    for _, bad in ipairs({ "0", "-5", "abc", "nan", "inf", "''", "1e400", "1e10", "-inf" }) do
      for _, cmd in ipairs({ "rebuild", "apply" }) do
        local code, out, err = run("--timeout " .. bad .. " --root / " .. cmd)
        assert.are.equal(1, code, bad)
        assert.are.equal("", out)
        assert.matches("^vfioinit: %-%-timeout .*: expected a number of seconds > 0 and at most 1e9\n$", err)
      end
    end
    local code, _, err = run("--timeout")
    assert.are.equal(1, code)
    assert.matches("--timeout needs a value", err, 1, true)
  end)

  -- A booster root whose generator (the stand-in, run chrooted with busybox) sleeps: the
  -- rebuild is killed after --timeout and the previous image stays.
  root_it("kills a generator that outlives it and keeps the previous image", function()
    local root = h.make_root({ os = { ID = "arch" }, files = { ["/etc/booster.yaml"] = "" } })
    finally(function() h.rm(root) end)
    local kver = h.install_kernel(root, "cloud")
    h.sh("mkdir -p " .. h.q(root .. "/bin") .. " " .. h.q(root .. "/usr/bin") .. " " .. h.q(root .. "/boot") .. " " .. h.q(root .. "/tmp"))
    h.sh("cp " .. h.q(h.static_busybox()) .. " " .. h.q(root .. "/bin/busybox"))
    h.sh("cd " .. h.q(root .. "/bin") .. " && for a in " .. APPLETS .. "; do ln -s busybox $a; done")
    h.sh("cp " .. h.q(STANDIN) .. " " .. h.q(root .. "/usr/bin/booster"))
    h.writefile(root .. "/etc/standin-booster.mode", "sleep\n")
    local image = root .. "/boot/booster-" .. kver .. ".img"
    h.sh(("d=$(mktemp -d) && echo old > $d/old && (cd $d && echo old | cpio -o -H newc --quiet) > %s && rm -rf $d"):format(h.q(image)))
    local old = assert(h.readfile(image))
    local code, _, err, secs = run("--root " .. h.q(root) .. " --generator booster --timeout 2 rebuild")
    assert.are.equal(1, code, err)
    assert.matches("timed out", err)
    assert.is_true(secs < 60, "took " .. secs .. " s: the 600 s default applied, not --timeout")
    assert.are.equal(old, h.readfile(image))
    assert.is_nil(h.readfile(image .. ".vfioinit-prev"))
  end)
end)

describe("vfioinit --jobs", function()
  it("refuses what is not a whole number >= 1, before anything runs", function()
    for _, bad in ipairs({ "0", "-1", "1.5", "two", "''" }) do
      local code, out, err = run("--jobs " .. bad .. " --root / rebuild")
      assert.are.equal(1, code, bad)
      assert.are.equal("", out)
      assert.matches("^vfioinit: %-%-jobs .*: expected a whole number >= 1\n$", err)
    end
  end)

  -- Two kernels of a booster root (the stand-in, chrooted with busybox): --jobs 1 builds
  -- them one after the other, --jobs 2 at the same time (each stand-in of the barrier mode
  -- waits for the other to start).
  root_it("runs the kernels' builds one at a time or side by side", function()
    local root = h.make_root({ os = { ID = "arch" }, files = { ["/etc/booster.yaml"] = "" } })
    finally(function() h.rm(root) end)
    local k1 = h.install_kernel(root, "cloud")
    local k2 = h.install_kernel(root, "cloud", k1 .. "-two")
    h.sh("mkdir -p " .. h.q(root .. "/bin") .. " " .. h.q(root .. "/usr/bin") .. " " .. h.q(root .. "/boot") .. " " .. h.q(root .. "/tmp"))
    h.sh("cp " .. h.q(h.static_busybox()) .. " " .. h.q(root .. "/bin/busybox"))
    h.sh("cd " .. h.q(root .. "/bin") .. " && for a in " .. APPLETS .. "; do ln -s busybox $a; done")
    h.sh("cp " .. h.q(STANDIN) .. " " .. h.q(root .. "/usr/bin/booster"))
    h.writefile(root .. "/etc/standin-booster.mode", "order\n")
    local code, _, err = run("--root " .. h.q(root) .. " --generator booster --jobs 1 rebuild")
    assert.are.equal(0, code, err)
    local order = {}
    for l in h.readfile(root .. "/var/log/standin-booster.order"):gmatch("[^\n]+") do order[#order + 1] = l:match("^%S+ %S+") end
    assert.are.same({ "start " .. k1, "end " .. k1, "start " .. k2, "end " .. k2 }, order)
    h.writefile(root .. "/etc/standin-booster.mode", "barrier\n")
    h.sh("rm -f " .. h.q(root) .. "/tmp/standin-started.*")
    code, _, err = run("--root " .. h.q(root) .. " --generator booster --jobs 2 rebuild")
    assert.are.equal(0, code, err)
    h.sh("rm -f " .. h.q(root) .. "/tmp/standin-started.*")
    code, _, err = run("--root " .. h.q(root) .. " --generator booster --jobs 1 rebuild")
    assert.are.equal(1, code)
    assert.matches("no other build started within 10 s", err, 1, true)
  end)
end)

-- The option table says which command takes which option; `--help` lists them under each
-- command. The parser refuses every other pairing (a usage error, nothing run), so an
-- option is never silently ignored.
describe("options a command does not take", function()
  local cli = require "vfioinit.cli"
  local R
  local root, before
  setup(function()
    root = h.make_root({ os = { ID = "arch" }, corpus = { ["/etc/mkinitcpio.conf"] = "mkinitcpio/mkinitcpio.conf" },
      exec = { "/usr/bin/mkinitcpio" } })
    R = "--root " .. h.q(root) .. " "
    before = h.tree_hash(root)
  end)
  teardown(function() h.rm(root) end)

  it("are refused with a usage error naming the option and the command, writing nothing", function()
    for _, c in ipairs({
      { "--no-rebuild rebuild", "--no-rebuild does not apply to rebuild" },
      { "--full apply", "--full does not apply to apply" },
      { "--force plan", "--force applies to plan only with --device or --match" },
      { "--force apply", "--force applies to apply only with --device or --match" },
      { "--dry-run plan", "--dry-run does not apply to plan" },
      { "--dry-run rebuild", "--dry-run does not apply to rebuild" },
      { "--module virtio_net rebuild", "--module does not apply to rebuild" },
      { "--softdeps verify", "--softdeps does not apply to verify" },
      { "--timeout 5 verify", "--timeout does not apply to verify" },
      { "--jobs 2 verify", "--jobs does not apply to verify" },
      { "--cmdline revert", "--cmdline does not apply to revert" },
      { "--generator mkinitcpio revert", "--generator does not apply to revert" },
      { "revert --softdeps", "--softdeps does not apply to revert" },
    }) do
      local code, out, err = run(R .. c[1])
      assert.are.equal(1, code, c[1])
      assert.are.equal("", out, c[1])
      assert.are.equal("vfioinit: " .. c[2] .. "\n", err:match("^[^\n]*\n"), c[1])
      assert.truthy(err:find("Try 'vfioinit --help'", 1, true), c[1])
      code, out = run("--json " .. R .. c[1])
      assert.are.equal(1, code, c[1])
      assert.are.equal("False True " .. c[2], h.pyjson(out, "d['ok'], d['usage'], d['error']"), c[1])
    end
    assert.are.equal(before, h.tree_hash(root))
  end)

  it("are exactly those --help does not list under the command", function()
    local _, help = run("--help")
    local section = help:match("\ncommands[^\n]*\n(.-)\n\n")
    local global = help:match("^usage: vfioinit (.-) COMMAND")
    for _, c in ipairs(cli.COMMANDS) do
      -- the command's row to the next row (or the end): its "options:" list
      local row = ("\n" .. section .. "\n  end"):match("\n  " .. c[1] .. " (.-)\n  %S")
      local listed = row:match("options: (.*)$") or ""
      for _, opt in ipairs(cli.OPTIONS) do
        if opt.key ~= "help" and opt.key ~= "version" then
          local argv = { opt[1] }
          if opt.arg then argv[2] = opt.key == "devices" and "0000:01:00.0" or "x" end
          if opt.key == "force" and c[1] ~= "revert" then argv[#argv + 1] = "--match"; argv[#argv + 1] = "x" end
          if opt.key == "trial_cmdline" then table.insert(argv, 1, "--trial") end
          -- the other half of --sign-key/--sign-cert, where the command takes them
          local other = ({ sign_key = "--sign-cert", sign_cert = "--sign-key" })[opt.key]
          if other then argv[#argv + 1] = other; argv[#argv + 1] = "x" end
          argv[#argv + 1] = c[1]
          local o, err = cli.parse(argv)
          local takes = global:find(opt[1], 1, true) or listed:find(opt[1]:gsub("%-", "%%-") .. "%f[^%w-]")
          assert.are.equal(takes and true or false, o ~= nil, c[1] .. " " .. opt[1] .. ": " .. tostring(err))
        end
      end
    end
  end)

  it("--json=1 is refused: a flag takes no value (not --json and a command 1)", function()
    for _, args in ipairs({ "--json=1", "--json=1 plan", "--softdeps=yes plan" }) do
      local code, out, err = run(R .. args)
      assert.are.equal(1, code, args)
      local flag, given = args:match("^(%-%-[%w-]+)(=%S+)")
      assert.are.equal("vfioinit: " .. flag .. " takes no value (" .. flag .. given .. ")\n", err:match("^[^\n]*\n"), args)
      assert.are.equal(args:find("json", 1, true) and "False True" or "", out ~= "" and h.pyjson(out, "d['ok'], d['usage']") or "")
    end
    assert.are.equal(before, h.tree_hash(root))
  end)

  it("an unknown --generator is an error for every command that takes one", function()
    for _, cmd in ipairs({ "status", "plan", "apply", "rebuild", "verify" }) do
      local code, out, err = run(R .. "--generator bogus " .. cmd)
      assert.are.equal(1, code, cmd)
      assert.are.equal("", out, cmd)
      assert.are.equal('vfioinit: unknown generator "bogus" (known: mkinitcpio, dracut, initramfs-tools, booster)\n', err, cmd)
    end
    assert.are.equal(before, h.tree_hash(root))
  end)
end)
