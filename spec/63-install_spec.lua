-- A plain CMake install (issue 23 item 8): `cmake -S . -B build && cmake --build build &&
-- cmake --install build --prefix P` with no other option gives an optimised build without
-- -Werror and a complete install under P, the prefix given at install time: the C modules,
-- the Lua modules, the `vfioinit` command, the man page and the bash completion. The install
-- is run from / with only P on Lua's paths. Debug builds (tools/test's) keep -Werror.
local h = require "helpers"
local q = h.q

-- compile_commands.json's compiler command lines, one per source file
local function commands(dir)
  local text = assert(h.readfile(dir .. "/compile_commands.json"))
  local list = {}
  for cmd in text:gmatch('"command": "([^\n]*)",\n') do list[#list + 1] = cmd end
  assert.is_true(#list >= 10, text)
  return list
end

local function each_has(list, flag)
  for _, c in ipairs(list) do
    if not (" " .. c .. " "):find(" " .. flag .. " ", 1, true) then return false, c end
  end
  return true
end

local function none_has(list, flag)
  for _, c in ipairs(list) do
    if (" " .. c .. " "):find(" " .. flag .. " ", 1, true) then return false, c end
  end
  return true
end

-- Nothing of the checkout or the caller's Lua setup on the paths; no sanitizer preload.
local CLEAN = "cd / && env -u LD_PRELOAD -u LUA_PATH -u LUA_CPATH -u LUA_PATH_5_4 -u LUA_CPATH_5_4 "
  .. "-u LUA_INIT -u LUA_INIT_5_4 -u VFIOINIT_BUILD "

describe("cmake --install --prefix", function()
  local tmp, build, prefix, configured
  setup(function()
    tmp = h.tmpdir()
    build, prefix, configured = tmp .. "/build", tmp .. "/prefix", tmp .. "/configured-prefix"
    -- the prefix configured is not the one installed to: --prefix must win
    local out, ok = h.sh(("cmake -S %s -B %s -DCMAKE_EXPORT_COMPILE_COMMANDS=ON -DCMAKE_INSTALL_PREFIX=%s 2>&1 && "
      .. "nice cmake --build %s -j2 2>&1 && cmake --install %s --prefix %s 2>&1")
      :format(q(h.project), q(build), q(configured), q(build), q(build), q(prefix)))
    assert(ok, out)
  end)
  teardown(function() h.rm(tmp) end)

  it("builds optimised, without -Werror, when no build type is given", function()
    local cache = assert(h.readfile(build .. "/CMakeCache.txt"))
    assert.are.equal("Release", cache:match("\nCMAKE_BUILD_TYPE:[A-Z]+=([^\n]*)"))
    local list = commands(build)
    assert.is_true(each_has(list, "-O3"))
    assert.is_true(each_has(list, "-Wall"))
    assert.is_true(none_has(list, "-Werror"))
  end)

  it("installs everything under the prefix given to --install, nothing under the configured one", function()
    assert.are.equal("", h.sh("ls -A " .. q(configured) .. " 2>/dev/null"))
    -- the C modules
    for _, so in ipairs({ "vfioinit/core.so", "vfioinit/core/kmod.so", "vfioinit/core/re.so", "vfioinit/core/sig.so",
        "vfioinit/core/image.so", "vfioinit/core/archive.so" }) do
      assert.truthy(h.readfile(prefix .. "/lib/lua/5.4/" .. so), so)
    end
    -- every Lua module of the checkout, byte for byte
    local files = h.sh("cd " .. q(h.project .. "/lua") .. " && find vfioinit -name '*.lua' | sort")
    local n = 0
    for f in files:gmatch("[^\n]+") do
      n = n + 1
      assert.are.equal(h.readfile(h.project .. "/lua/" .. f), h.readfile(prefix .. "/share/lua/5.4/" .. f), f)
    end
    assert.is_true(n > 30)
    -- the command, executable; the man page and the completion as committed
    assert.truthy(h.sh("test -x " .. q(prefix .. "/bin/vfioinit") .. " && echo yes"):find("yes"))
    assert.are.equal(h.readfile(h.project .. "/doc/vfioinit.1"), h.readfile(prefix .. "/share/man/man1/vfioinit.1"))
    assert.are.equal(h.readfile(h.project .. "/contrib/completion/vfioinit.bash"),
      h.readfile(prefix .. "/share/bash-completion/completions/vfioinit"))
  end)

  -- The command loads each module's bytecode (MODULE.luac, made by lua5.4 at build time)
  -- in place of its source; bytecode this Lua refuses leaves the source to load.
  it("installs each module precompiled, which the command loads, and the source where that fails", function()
    local dir = prefix .. "/share/lua/5.4/"
    local files = h.sh("cd " .. q(h.project .. "/lua") .. " && find vfioinit -name '*.lua' | sort")
    for f in files:gmatch("[^\n]+") do
      local bc = assert(h.readfile(dir .. f:gsub("%.lua$", ".luac")), f)
      assert.are.equal("\27Lua", bc:sub(1, 4), f)
      local chunk = assert(load(bc, f, "b"))
      -- the same functions as the source's: the bytecode of the same chunk
      assert.are.equal(string.dump(assert(load(h.readfile(dir .. f), "@" .. f)), true), string.dump(chunk, true), f)
    end
    -- the one module `--version` loads (spec/51)
    local luac = dir .. "vfioinit/version.luac"
    local saved = h.readfile(luac)
    finally(function() h.writefile(luac, saved) end)
    h.writefile(luac, string.dump(load("io.write('from the bytecode\\n') os.exit(0)")))
    local out, ok = h.sh(CLEAN .. q(prefix .. "/bin/vfioinit") .. " --version 2>&1")
    assert(ok, out)
    assert.are.equal("from the bytecode\n", out)
    h.writefile(luac, "\27Lua\99 not this Lua's bytecode")
    out, ok = h.sh(CLEAN .. q(prefix .. "/bin/vfioinit") .. " --version 2>&1")
    assert(ok, out)
    assert.are.equal(require("vfioinit")._VERSION .. "\n", out)
  end)

  it("runs from the prefix: vfioinit --version and plan, and require with the prefix on Lua's paths", function()
    local version = require("vfioinit")._VERSION
    local out, ok = h.sh(CLEAN .. q(prefix .. "/bin/vfioinit") .. " --version 2>&1")
    assert(ok, out)
    assert.are.equal(version .. "\n", out)
    -- a command that loads the core: plan on an Arch root has changes pending (exit 2)
    local root = h.make_root({ os = { ID = "arch" }, corpus = { ["/etc/mkinitcpio.conf"] = "mkinitcpio/mkinitcpio.conf" },
      exec = { "/usr/bin/mkinitcpio" } })
    finally(function() h.rm(root) end)
    local _, _, code = h.sh(CLEAN .. q(prefix .. "/bin/vfioinit") .. " --root " .. q(root) .. " plan >/dev/null 2>&1")
    assert.are.equal(2, code)
    local paths = ("LUA_PATH=%s LUA_CPATH=%s "):format(
      q(prefix .. "/share/lua/5.4/?.lua;" .. prefix .. "/share/lua/5.4/?/init.lua"), q(prefix .. "/lib/lua/5.4/?.so"))
    out, ok = h.sh(CLEAN .. paths .. "lua5.4 -e " .. q("local v = require 'vfioinit'; local c = require 'vfioinit.core'; "
      .. "print(v._VERSION, type(c.kmod.new), type(c.re.compile), package.searchpath('vfioinit.core', package.cpath))")
      .. " 2>&1")
    assert(ok, out)
    assert.are.equal(("%s\tfunction\tfunction\t%s/lib/lua/5.4/vfioinit/core.so\n"):format(version, prefix), out)
  end)
end)

describe("a Debug build", function()
  it("keeps -Wall -Wextra -Werror (VFIOINIT_WERROR: ON for Debug), also in a directory configured Release before", function()
    local dir = h.tmpdir()
    finally(function() h.rm(dir) end)
    local function configure(args)
      local out, ok = h.sh(("cmake -S %s -B %s -DCMAKE_EXPORT_COMPILE_COMMANDS=ON %s 2>&1"):format(q(h.project), q(dir), args))
      assert(ok, out)
      return commands(dir)
    end
    assert.is_true(none_has(configure(""), "-Werror"))
    local list = configure("-DCMAKE_BUILD_TYPE=Debug")
    for _, flag in ipairs({ "-Wall", "-Wextra", "-Werror" }) do assert.is_true(each_has(list, flag), flag) end
    -- chosen explicitly, either way
    assert.is_true(none_has(configure("-DVFIOINIT_WERROR=OFF"), "-Werror"))
    assert.is_true(each_has(configure("-DCMAKE_BUILD_TYPE=Release -DVFIOINIT_WERROR=ON"), "-Werror"))
  end)
end)
