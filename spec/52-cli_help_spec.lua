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

-- The README's CLI summary is the head of --help as printed (synopsis and commands, each
-- command's options), and every vfioinit command its quick start shows is one the parser
-- takes: an option added, renamed or moved to another command shows here.
describe("README.md's CLI summary", function()
  local readme = assert(h.readfile(h.project .. "/README.md"))

  it("is --help's synopsis and commands, verbatim", function()
    local _, help = h.cli("--help")
    local head = assert(help:match("^(usage: .-)\n\noptions:\n"), help)
    assert.truthy(readme:find("\n```\n" .. head .. "\n```\n", 1, true),
      "README.md's CLI block differs from vfioinit --help; paste this between ``` lines:\n" .. head)
  end)

  it("shows only command lines the parser accepts", function()
    local n = 0
    for block in readme:gmatch("```sh\n(.-)```") do
      for line in block:gmatch("[^\n]+") do
        local cmd = line:match("^%s*vfioinit%s+(.-)%s*$")
        if cmd then
          local argv = {}
          for w in cmd:gsub("%s+#.*$", ""):gmatch("%S+") do argv[#argv + 1] = w end
          local o, err = cli.parse(argv)
          assert.truthy(o, line .. ": " .. tostring(err))
          n = n + 1
        end
      end
    end
    assert.is_true(n >= 4, "README.md shows " .. n .. " vfioinit command lines")
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

-- FILES, SEE ALSO, EXIT STATUS (issue 23 item 11): FILES names every file an apply writes,
-- found by comparing a root before and after real applies (every generator; --ids, --device,
-- --cmdline); SEE ALSO the tools' own pages; the page names no file of the source tree, which
-- an install does not have.
describe("the man page's FILES and SEE ALSO", function()
  local text = h.sh("env -u LD_PRELOAD MANWIDTH=200 man -l " .. q(h.project .. "/doc/vfioinit.1") .. " 2>/dev/null | col -b")
  local function section(name) return text:match("\n" .. name .. "\n(.-)\n%u[%u ]+\n") or text:match("\n" .. name .. "\n(.*)$") end

  -- The paths FILES names, as Lua patterns: NN two digits, <tool> and * one name; a path
  -- ending in / stands for everything under it.
  local function files_patterns()
    local pats = {}
    for p in assert(section("FILES"), text):gmatch("/[%w%._/*<>-]+") do
      local pat = "^" .. p:gsub("%p", "%%%0"):gsub("NN", "%%d%%d"):gsub("%%%*", "[^/]*"):gsub("%%<%a+%%>", "[%%w_-]+")
      pats[#pats + 1] = p:sub(-1) == "/" and pat or (pat .. "$")
    end
    return pats
  end

  -- path and sha256 of every file under root but the kernels' modules
  local function files_of(root)
    local t = {}
    local out = h.sh("cd " .. q(root) .. " && find . -path ./lib/modules -prune -o -type f -print0 | xargs -0 -r sha256sum")
    for sum, path in out:gmatch("(%x+)  %.([^\n]+)") do t[path] = sum end
    return t
  end

  it("FILES names every file apply writes, for each generator with --ids, --device and --cmdline", function()
    local DEBIAN_MKCONFIG = "#!/bin/sh\n. /etc/default/grub\nfor x in ${sysconfdir}/default/grub.d/*.cfg ; do\n  . \"$x\"\ndone\n"
    local roots = {
      { "arch", { ["/etc/mkinitcpio.conf"] = "MODULES=()\nHOOKS=(base udev modconf)\n",
        ["/etc/kernel/cmdline"] = "root=/dev/sda1\n" }, { "/usr/bin/mkinitcpio" }, "--device 00:04.0 --cmdline" },
      { "arch", { ["/etc/mkinitcpio.conf"] = "MODULES=()\nHOOKS=(base udev modconf)\n",
        ["/etc/mkinitcpio.d/linux.preset"] = 'ALL_kver="/boot/vmlinuz-linux"\nPRESETS=(\'default\')\n'
          .. 'default_uki="/efi/EFI/Linux/arch-linux.efi"\n',
        -- the target's own line a new cmdline.d file starts from (nothing is read outside root)
        ["/boot/loader/entries/arch.conf"] = "title Arch Linux\nlinux /vmlinuz-linux\noptions root=/dev/sda1 rw\n" },
        { "/usr/bin/mkinitcpio" }, "--cmdline", "linux\n" },
      { "fedora", { ["/etc/dracut.conf"] = "" }, { "/usr/bin/dracut", "/usr/sbin/grubby" }, "--device 00:04.0 --cmdline" },
      { "debian", { ["/etc/initramfs-tools/modules"] = "# modules\n", ["/etc/default/grub"] = 'GRUB_CMDLINE_LINUX_DEFAULT="quiet"\n',
        ["/usr/sbin/grub-mkconfig"] = DEBIAN_MKCONFIG }, { "/usr/sbin/update-initramfs", "/usr/sbin/update-grub" },
        "--device 00:04.0 --cmdline" },
      { "arch", { ["/etc/booster.yaml"] = "compression: zstd\n" }, { "/usr/bin/booster" }, "" },
    }
    local pats = files_patterns()
    assert.is_true(#pats >= 15, table.concat(pats, " "))
    local written = 0
    for _, r in ipairs(roots) do
      local root = h.make_root({ os = { ID = r[1] }, files = r[2], exec = r[3] })
      finally(function() h.rm(root) end)
      local kver = h.install_kernel(root, "cloud")
      if r[5] then h.writefile(root .. "/lib/modules/" .. kver .. "/pkgbase", r[5]) end
      local before = files_of(root)
      local code, _, err = h.cli(("--root %s --ids 1af4:1000 %s apply --no-rebuild"):format(q(root), r[4]))
      assert.are.equal(0, code, err)
      for path, sum in pairs(files_of(root)) do
        if before[path] ~= sum then
          written = written + 1
          local named = false
          for _, pat in ipairs(pats) do named = named or path:find(pat) ~= nil end
          assert.is_true(named, path .. " (" .. r[1] .. " " .. r[4] .. ") is not in FILES:\n" .. section("FILES"))
        end
      end
    end
    assert.is_true(written >= 20, written)
  end)

  it("SEE ALSO names the generators', modprobe.d's and the boot tools' pages; EXIT STATUS has 0, 1 and 2", function()
    local see = assert(section("SEE ALSO"), text):gsub("%s+", " ")
    for _, page in ipairs({ "dracut(8)", "mkinitcpio(8)", "update-initramfs(8)", "modprobe.d(5)", "kernel-install(8)",
      "bootctl(1)" }) do
      assert.truthy(see:find(page, 1, true), page .. " not in SEE ALSO: " .. see)
    end
    local exit = "\n" .. assert(section("EXIT STATUS"), text)
    for _, n in ipairs({ "0", "1", "2" }) do assert.truthy(exit:find("\n%s+" .. n .. "%s+%S"), n) end
  end)

  it("names no file of the source tree (the install has none of them)", function()
    local flat = " " .. text:gsub("%s+", " ") .. " "
    for f in h.sh("cd " .. q(h.project) .. " && git ls-files"):gmatch("[^\n]+") do
      -- a tracked path, or its last two components (docs/CONTRACT.md), as a word of the page
      local tail = f:match("[^/]+/[^/]+$") or f
      for _, name in ipairs({ f, tail }) do
        assert.is_nil(flat:find("[%s(]" .. name:gsub("%p", "%%%0") .. "[%s),.:;]"), name)
      end
    end
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
