-- CLI conventions (issue 17 item 3): --help and the man page vfioinit(1) come from one
-- option table (cli.OPTIONS), so every option the parser takes is in both; --help has exit
-- codes, environment and examples that run; data on stdout, notes about the run on stderr.
local h = require "helpers"
local cli = require "vfioinit.cli"
local q = h.q

local function arch_root()
  return h.make_root({ os = { ID = "arch" }, corpus = { ["/etc/mkinitcpio.conf"] = "mkinitcpio/mkinitcpio.conf" },
    exec = { "/usr/bin/mkinitcpio" } })
end

-- Every option word the parser accepts, found by asking the parser (not the table): a
-- candidate is each --word and -x in cli.lua's source; the parser rejects unknown ones.
local function parser_options()
  local src = assert(h.readfile(h.project .. "/lua/vfioinit/cli.lua"))
  local found, seen = {}, {}
  for word in src:gmatch("\"(%-%-?[%w][%w-]*)\"") do
    if not seen[word] then
      seen[word] = true
      local argv = { word, "x", "status" }
      local o, err = cli.parse(argv)
      if o or not (err or ""):find("unknown option", 1, true) then found[#found + 1] = word end
    end
  end
  table.sort(found)
  return found
end

describe("vfioinit --help", function()
  local code, help = h.cli("--help")

  it("describes every option the parser accepts, with its value's name", function()
    assert.are.equal(0, code)
    local opts = parser_options()
    assert.is_true(#opts >= 13, table.concat(opts, " "))
    for _, word in ipairs(opts) do
      -- an option's row: two spaces, the option (and its value), then a description
      local row = help:match("\n  [^\n]-" .. word:gsub("%-", "%%-") .. "[^\n]-   +(%S[^\n]*)\n")
      assert.truthy(row, word .. " has no described row in --help:\n" .. help)
    end
    for _, opt in ipairs(cli.OPTIONS) do
      if opt.arg then assert.truthy(help:find(opt[1] .. " " .. opt.arg, 1, true), opt[1]) end
    end
  end)

  it("lists the commands, the exit codes, the environment and the stream rule", function()
    for _, c in ipairs({ "status", "plan", "apply", "rebuild", "verify", "revert" }) do
      assert.truthy(help:find("\n  " .. c .. " +%S"), c)
    end
    local exit = help:match("\nexit status:\n(.-)\n\n")
    assert.truthy(exit, help)
    for _, n in ipairs({ "0", "1", "2" }) do assert.truthy(exit:find("\n?  " .. n .. "   %S"), n) end
    -- every environment variable the Lua code reads is described, except test hooks: those
    -- are read only in a -DVFIOINIT_TESTING build (a line that also tests core._TESTING)
    local env = help:match("\nenvironment:\n(.-)\n\n")
    for f in h.sh("ls " .. q(h.project .. "/lua/vfioinit") .. "/*.lua"):gmatch("[^\n]+") do
      for line in h.readfile(f):gmatch("[^\n]+") do
        for var in line:gmatch("getenv%(\"([%w_]+)\"%)") do
          if not line:find("_TESTING", 1, true) then
            assert.truthy(env:find(var, 1, true), var .. " (read in " .. f .. ") is not in --help")
          end
        end
      end
    end
    assert.truthy(help:find("\noutput: Data", 1, true))
  end)

  it("has two examples, and both run as printed", function()
    local examples = help:match("\nexamples:\n(.*)$")
    local cmds = {}
    for cmd in examples:gmatch("\n?  (vfioinit [^\n]+)\n") do cmds[#cmds + 1] = cmd end
    assert.are.equal(2, #cmds, examples)
    for _, cmd in ipairs(cmds) do
      local root = arch_root()
      finally(function() h.rm(root) end)
      -- a root of our own in place of / or /mnt/target; --no-rebuild: the stub generator
      local args = cmd:gsub("^vfioinit ", ""):gsub("%-%-root %S+ ", "")
      local c, out, err = h.cli("--root " .. q(root) .. " " .. args:gsub("apply$", "apply --no-rebuild"))
      assert.is_true(c == 0 or c == 2, cmd .. ": " .. err)
      assert.truthy(out:find("vfio-pci", 1, true) or h.readfile(root .. "/etc/modprobe.d/vfioinit.conf"), cmd)
    end
  end)

  it("usage errors print the synopsis and point at --help", function()
    local c, out, err = h.cli("--bogus plan")
    assert.are.equal(1, c)
    assert.are.equal("", out)
    assert.matches("^vfioinit: unknown option %-%-bogus\nusage: vfioinit ", err)
    assert.truthy(err:find("vfioinit --help", 1, true))
  end)
end)

describe("the man page doc/vfioinit.1", function()
  local page = h.readfile(h.project .. "/doc/vfioinit.1")

  it("is what tools/gen-man makes from the option table (no drift)", function()
    assert.are.equal(cli.manpage(), page)
  end)

  it("documents every option the parser accepts, as man renders it", function()
    -- without tools/test's sanitizer preload, which groff's troff does not survive
    local text = h.sh("env -u LD_PRELOAD MANWIDTH=200 man -l " .. q(h.project .. "/doc/vfioinit.1") .. " 2>&1 | col -b")
    for _, section in ipairs({ "SYNOPSIS", "COMMANDS", "OPTIONS", "EXIT STATUS", "ENVIRONMENT", "EXAMPLES" }) do
      assert.truthy(text:find("\n" .. section .. "\n", 1, true), section .. "\n" .. text)
    end
    local options = "\n" .. text:match("\nOPTIONS\n(.-)\nEXIT STATUS\n")
    for _, word in ipairs(parser_options()) do
      assert.truthy(options:find("\n%s+[^\n]-" .. word:gsub("%-", "%%-") .. "[%s,]"), word .. " not in OPTIONS:\n" .. options)
    end
    assert.truthy(text:find("VFIOINIT_LOCK_TIMEOUT", 1, true))
  end)
end)

-- The rule: data (diffs, status, results, JSON) on stdout; progress, warnings and notes
-- (nothing to change, already in place, nothing rebuilt, nothing to revert) on stderr.
describe("streams", function()
  it("a no-op plan, apply, rebuild, verify and revert print nothing on stdout, their notes on stderr", function()
    local root = arch_root()
    finally(function() h.rm(root) end)
    local R = "--root " .. q(root) .. " "
    local c, out = h.cli(R .. "apply --no-rebuild")
    assert.are.equal(0, c)
    assert.truthy(out:find("+++ etc/mkinitcpio.conf", 1, true), out)  -- the diff is data
    local cases = {
      { "plan", 0, "vfioinit: nothing to change\n" },
      { "apply --no-rebuild", 0, "vfioinit: configuration already in place; no file changed\n" },
      { "apply", 0, "vfioinit: every image is up to date; nothing rebuilt\n" },
      { "rebuild", 0, "vfioinit: no kernel to rebuild an image for\n" },
      { "verify", 0, "vfioinit: no images to verify\n" },
    }
    for _, case in ipairs(cases) do
      local code, o, err = h.cli(R .. case[1])
      assert.are.equal(case[2], code, case[1] .. ": " .. err)
      assert.are.equal("", o, case[1])
      assert.truthy(err:find(case[3], 1, true), case[1] .. ": " .. err)
    end
    -- revert: what was restored is data, the hint to rebuild a note
    local code, o, err = h.cli(R .. "revert")
    assert.are.equal(0, code, err)
    assert.are.equal("restored /etc/mkinitcpio.conf\n", o)
    assert.truthy(err:find("run `vfioinit rebuild`", 1, true), err)
    code, o, err = h.cli(R .. "revert")
    assert.are.equal(0, code, err)
    assert.are.equal("", o)
    assert.are.equal("vfioinit: nothing to revert\n", err)
    -- with --json stdout holds the one object and stderr no notes
    code, o, err = h.cli(R .. "--json plan")
    assert.are.equal(2, code)
    assert.are.equal("True", h.pyjson(o, "d['pending']"))
    assert.are.equal("", err)
  end)
end)
