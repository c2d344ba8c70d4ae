-- bash completion (issue 17 item 3): contrib/completion/vfioinit.bash, run under bash with
-- COMP_WORDS/COMP_CWORD as bash's programmable completion sets them, completes commands,
-- every option of the CLI, generator names and the kernels of --root.
local h = require "helpers"
local cli = require "vfioinit.cli"
local q = h.q

local SCRIPT = h.project .. "/contrib/completion/vfioinit.bash"

-- complete_for(program, words...) -> sorted list of COMPREPLY for the last word being
-- completed, `program` standing for vfioinit (the completion reads its --help).
local function complete_for(program, ...)
  local words = { program, ... }
  local quoted = {}
  for i, w in ipairs(words) do quoted[i] = q(w) end
  local script = ("source %s; complete -p vfioinit >/dev/null || exit 3; COMP_WORDS=(%s); COMP_CWORD=%d; "
    .. "COMP_LINE=\"${COMP_WORDS[*]}\"; _vfioinit; printf '%%s\\n' \"${COMPREPLY[@]}\"")
    :format(q(SCRIPT), table.concat(quoted, " "), #words - 1)
  local out, ok = h.sh("bash --norc --noprofile -c " .. q(script) .. " 2>&1")
  assert(ok, out)
  local list = {}
  for l in out:gmatch("([^\n]+)\n") do list[#list + 1] = l end
  table.sort(list)
  return list
end

local function complete(...) return complete_for(h.project .. "/bin/vfioinit", ...) end

describe("bash completion", function()
  it("completes the commands", function()
    assert.are.same({ "apply" }, complete("ap"))
    assert.are.same({ "apply", "commit", "plan", "rebuild", "revert", "status", "verify" }, complete(""))
    assert.are.same({ "rebuild", "revert" }, complete("--root", "/", "re"))
  end)

  it("completes every option of the CLI's option table from --", function()
    local want = {}
    for _, opt in ipairs(cli.OPTIONS) do want[#want + 1] = opt[1] end
    table.sort(want)
    assert.are.same(want, complete("--"))
    assert.are.same({ "--dry-run" }, complete("revert", "--dr"))
  end)

  it("after a command, completes only the options that command takes", function()
    -- what the parser accepts with that command is the oracle
    for _, c in ipairs(cli.COMMANDS) do
      local want = {}
      for _, opt in ipairs(cli.OPTIONS) do
        local argv = { opt[1] }
        if opt.arg then argv[2] = opt.key == "devices" and "0000:01:00.0" or "x" end
        if opt.key == "force" and c[1] ~= "revert" then argv[#argv + 1] = "--match"; argv[#argv + 1] = "x" end
        -- the other half of --sign-key/--sign-cert, where the command takes them
        local other = ({ sign_key = "--sign-cert", sign_cert = "--sign-key" })[opt.key]
        if other then argv[#argv + 1] = other; argv[#argv + 1] = "x" end
        if opt.key == "trial_cmdline" then table.insert(argv, 1, "--trial") end
        argv[#argv + 1] = c[1]
        if opt.key ~= "help" and opt.key ~= "version" and cli.parse(argv) then want[#want + 1] = opt[1] end
      end
      table.sort(want)
      assert.are.same(want, complete(c[1], "--"), c[1])
      assert.are.same(want, complete("--root", "/", c[1], "--json", "--"), c[1])
    end
    assert.are.same({}, complete("rebuild", "--no"))
    assert.are.same({ "--no-rebuild" }, complete("apply", "--no"))
  end)

  it("completes the generator names the module knows", function()
    local names = require("vfioinit").generator_names()
    table.sort(names)
    assert.are.same(names, complete("--generator", ""))
    assert.are.same({ "dracut" }, complete("--generator", "dr"))
  end)

  it("completes the generators of the instance whose --help it reads (one with its own generator)", function()
    local dir = h.tmpdir()
    finally(function() h.rm(dir) end)
    -- the smallest generator register_generator accepts (docs/INTERNALS.md "Generator interface")
    local extra = [[{ name = "mygen", command = "mygen", edits = function() return {} end,
      image_path = function() return "/boot/mygen.img" end, rebuild_argv = function() return {} end }]]
    local bin = dir .. "/vfioinit"
    h.writefile(bin, ("#!/bin/sh\nexec %s -e %s\n"):format(h.lua, q(([[
      package.path = %q .. "/lua/?.lua;" .. %q .. "/lua/?/init.lua;" .. package.path
      package.cpath = %q .. "/?.so;" .. package.cpath
      local v = require("vfioinit").new()
      v.register_generator(%s)
      io.write(require("vfioinit.cli").usage(v))]]):format(h.project, h.project,
        h.project .. "/" .. (os.getenv("VFIOINIT_BUILD") or "build"), extra))))
    h.sh("chmod +x " .. q(bin))
    local v = require("vfioinit").new()
    v.register_generator(assert(load("return " .. extra))())
    local names = v.generator_names()
    table.sort(names)
    assert.are.same(names, complete_for(bin, "--generator", ""))
    assert.are.same({ "mygen" }, complete_for(bin, "--generator", "my"))
  end)

  it("completes the kernels installed in --root, and nothing after an option that takes a free value", function()
    local root = h.tmpdir()
    finally(function() h.rm(root) end)
    h.sh("mkdir -p " .. q(root .. "/lib/modules/6.1.0-13-amd64") .. " " .. q(root .. "/usr/lib/modules/6.9.1-arch1-1"))
    assert.are.same({ "6.1.0-13-amd64", "6.9.1-arch1-1" }, complete("--root", root, "--kernel", ""))
    assert.are.same({ "6.9.1-arch1-1" }, complete("--root", root, "--kernel", "6.9"))
    assert.are.same({}, complete("--ids", ""))
    assert.are.same({}, complete("--timeout", ""))
  end)

  it("completes directories after --root", function()
    local dir = h.tmpdir()
    finally(function() h.rm(dir) end)
    h.sh("mkdir -p " .. q(dir .. "/target-a") .. " " .. q(dir .. "/target-b") .. " && touch " .. q(dir .. "/target-file"))
    assert.are.same({ dir .. "/target-a", dir .. "/target-b" }, complete("--root", dir .. "/target"))
  end)
end)
