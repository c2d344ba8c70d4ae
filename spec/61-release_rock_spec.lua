-- The release rock (issue 17 item 1, issue 23 item 9): tools/release-rock packs
-- vfioinit-0.1.0-1.rockspec with `luarocks pack` into a .src.rock from the checkout's commit,
-- without the network and without the tag v0.1.0 existing anywhere (it sends the rockspec's
-- git+https URL to a throwaway tagged copy of HEAD); the .src.rock installs offline into a
-- fresh tree and works from `/` with only that tree on the paths. The spec runs the tool in a
-- copy of the checkout (its files, tracked and new, committed; no tag), with any HTTP(S) sent
-- to a closed port.
local h = require "helpers"
local q = h.q

local ROCKSPEC = "vfioinit-0.1.0-1.rockspec"
local HOME_URL = "https://github.com/vfioinit/vfioinit.git"

-- A rockspec is Lua assignments: run it in an empty environment.
local function load_rockspec(path)
  local env = {}
  assert(load(assert(h.readfile(path)), path, "t", env))()
  return env
end

-- A git repository at `dir` with the checkout's files (tracked and new, not ignored) committed.
local function copy_checkout(dir)
  local out, ok = h.sh(("set -e; mkdir -p %s; cd %s; git ls-files -z -co --exclude-standard | "
    .. "tar --null -T - -cf - | tar -C %s -xf -; cd %s; git init -q; git add -A; "
    .. "git -c user.name=spec -c user.email=spec@invalid commit -qm release 2>&1")
    :format(q(dir), q(h.project), q(dir), q(dir)))
  assert(ok, out)
end

-- HOME: luarocks keeps its cache and config there; nothing of the user's is used. No network.
local function offline(tmp)
  h.sh("mkdir -p " .. q(tmp .. "/home"))
  local closed = "http://127.0.0.1:9"
  return ("env HOME=%s http_proxy=%s https_proxy=%s HTTPS_PROXY=%s ALL_PROXY=%s "):format(q(tmp .. "/home"),
    closed, closed, closed, closed)
end

describe("the release rockspec", function()
  it("names the public home with tag v0.1.0, the MIT licence and the version the module reports", function()
    local r = load_rockspec(h.project .. "/" .. ROCKSPEC)
    assert.are.equal("git+" .. HOME_URL, r.source.url)
    assert.are.equal("v0.1.0", r.source.tag)
    assert.are.equal("https://github.com/vfioinit/vfioinit", r.description.homepage)
    assert.are.equal("MIT", r.description.license)
    assert.truthy(#r.description.detailed > 200)
    assert.are.same({ "lua >= 5.1, < 5.5" }, r.dependencies)
    assert.are.same({ header = "libkmod.h", library = "kmod" }, r.external_dependencies.LIBKMOD)
    assert.are.same({ header = "archive.h", library = "archive" }, r.external_dependencies.LIBARCHIVE)
    -- the rock's version is the one the module and the CLI report
    local v = require("vfioinit")._VERSION
    assert.are.equal("vfioinit " .. r.version:gsub("%-%d+$", ""), v)
    assert.truthy(h.readfile(h.project .. "/LICENSE"):find("MIT License", 1, true))
  end)
end)

describe("CHANGELOG.md", function()
  it("opens with the compatibility promise and has a section for the release rockspec's version", function()
    local text = assert(h.readfile(h.project .. "/CHANGELOG.md"))
    local top = assert(text:match("^(.-)\n## "), text):gsub("%s+", " ")
    assert.truthy(top:find("Semantic Versioning", 1, true), top)
    -- what is public and what is not, and what each kind of release may change
    for _, word in ipairs({ "**Public API**", "Not public:", "PATCH release", "MINOR release", "MAJOR release", "0.y.z" }) do
      assert.truthy(top:find(word, 1, true), word)
    end
    assert.truthy(text:find("\n## Unreleased\n", 1, true))
    local version = load_rockspec(h.project .. "/" .. ROCKSPEC).version:gsub("%-%d+$", "")
    assert.truthy(text:find("\n## " .. version .. "\n", 1, true), version)
  end)
end)

describe("tools/release-rock 0.1.0", function()
  local tmp, repo, srcrock
  setup(function()
    tmp = h.tmpdir()
    repo = tmp .. "/repo"
    copy_checkout(repo)
    h.sh("mkdir -p " .. q(tmp .. "/out"))
    local out, ok = h.sh(("cd / && %s %s/tools/release-rock 0.1.0 %s 2>/dev/null")
      :format(offline(tmp), q(repo), q(tmp .. "/out")))
    assert(ok, out)
    srcrock = tmp .. "/out/vfioinit-0.1.0-1.src.rock"
    assert.are.equal(srcrock .. "\n", out)
  end)
  teardown(function() h.rm(tmp) end)

  it("refuses, writing nothing: uncommitted changes, a tag v0.1.0 that is not HEAD, a version with no rockspec", function()
    local dest = tmp .. "/refused"
    h.sh("mkdir -p " .. q(dest))
    local function refused(pre, version, want)
      local errf = tmp .. "/err"
      local _, ok = h.sh(("cd %s && %s; %s tools/release-rock %s %s >/dev/null 2>%s")
        :format(q(repo), pre, offline(tmp), version, q(dest), q(errf)))
      local err = h.readfile(errf)
      assert.is_nil(ok, err)
      assert.truthy(err:find(want, 1, true), err)
      assert.are.equal(1, select(2, err:gsub("\n", "")), err)
      assert.are.equal("", h.sh("ls -A " .. q(dest)))
    end
    refused("echo edit >> README.md", "0.1.0", "uncommitted changes")
    refused("git checkout -q README.md && git tag v0.1.0 && echo x > new && git add new && "
      .. "git -c user.name=spec -c user.email=spec@invalid commit -qm next", "0.1.0", "tag v0.1.0 is ")
    refused("true", "9.9.9", "no vfioinit-9.9.9-1.rockspec")
  end)

  it("gives a .src.rock holding the committed rockspec and the tagged sources", function()
    local list = h.sh("unzip -Z1 " .. q(srcrock))
    assert.truthy(list:find("vfioinit-0.1.0-1.rockspec\n", 1, true), list)
    assert.truthy(list:find("\nvfioinit/src/core.c\n", 1, true) or list:find("^vfioinit/src/core.c\n"), list)
    assert.truthy(list:find("vfioinit/doc/vfioinit.1\n", 1, true), list)
    local packed = h.sh("unzip -p " .. q(srcrock) .. " vfioinit-0.1.0-1.rockspec")
    assert.are.equal(h.readfile(h.project .. "/" .. ROCKSPEC), packed)
  end)

  -- Install the .src.rock offline (no servers, git sent nowhere) into a fresh tree for
  -- `luaver`, then run the module and the CLI from / with only that tree on the paths.
  local function install_and_run(luaver, interp)
    local tree = tmp .. "/tree-" .. luaver
    local out, ok = h.sh(("cd / && env HOME=%s luarocks --lua-version=%s --only-server=%s install --deps-mode=none --tree %s %s 2>&1")
      :format(q(tmp .. "/home"), luaver, q("file://" .. tmp .. "/no-server"), q(tree), q(srcrock)))
    assert(ok, out)
    local paths = ("cd / && env -u LUA_PATH -u LUA_CPATH -u LUA_PATH_5_4 -u LUA_CPATH_5_4 -u LUA_INIT -u LUA_INIT_5_4 "
      .. "LUA_PATH=%s LUA_CPATH=%s "):format(
      q(tree .. "/share/lua/" .. luaver .. "/?.lua;" .. tree .. "/share/lua/" .. luaver .. "/?/init.lua"),
      q(tree .. "/lib/lua/" .. luaver .. "/?.so"))
    out, ok = h.sh(paths .. interp .. " -e " .. q("local v = require 'vfioinit'; print(v._VERSION, type(v.update_initramfs), "
      .. "package.searchpath and package.searchpath('vfioinit.core', package.cpath) or 'n/a')") .. " 2>&1")
    assert(ok, out)
    local searched = luaver == "5.1" and "n/a" or (tree .. "/lib/lua/" .. luaver .. "/vfioinit/core.so")
    assert.are.equal("vfioinit 0.1.0\tfunction\t" .. searched .. "\n", out)
    -- the parts core loads on first use (vfioinit.core.kmod, vfioinit.core.re) are installed too
    out, ok = h.sh(paths .. interp .. " -e " .. q("local c = require 'vfioinit.core'; print(type(c.kmod.new), type(c.re.compile))")
      .. " 2>&1")
    assert(ok, out)
    assert.are.equal("function\tfunction\n", out)
    out, ok = h.sh(paths .. q(tree .. "/bin/vfioinit") .. " --version 2>&1")
    assert(ok, out)
    assert.are.equal("vfioinit 0.1.0\n", out)
    -- the man page is installed with the rock, in the rock's directory
    local man = tree .. "/lib/luarocks/rocks-" .. luaver .. "/vfioinit/0.1.0-1/share/man/man1/vfioinit.1"
    assert.truthy(h.readfile(man), man)
    return tree
  end

  it("installs offline into a fresh tree; require and vfioinit --version work from / (Lua 5.4)", function()
    install_and_run("5.4", "lua5.4")
  end)

  it("builds for the Lua LuaRocks builds for: the same rock on Lua 5.1 (Debian luarocks' default)", function()
    if not h.sh("command -v lua5.1"):find("lua5.1") or not h.sh("ls /usr/include/lua5.1/lua.h 2>/dev/null"):find("lua.h") then
      pending("lua5.1 and liblua5.1-0-dev are not installed")
      return
    end
    local tree = install_and_run("5.1", "lua5.1")
    -- the module was compiled against 5.1's headers: it names 5.1's ABI, not 5.4's
    local so = tree .. "/lib/lua/5.1/vfioinit/core.so"
    local syms = h.sh("nm -D --undefined-only " .. q(so))
    assert.truthy(syms:find("lua_pushinteger", 1, true))
    assert.is_nil(syms:find("lua_callk", 1, true), "built against a Lua newer than 5.1")
  end)
end)

describe("CMake without pkg-config modules", function()
  local tmp
  setup(function() tmp = h.tmpdir(); h.sh("mkdir -p " .. q(tmp .. "/empty")) end)
  teardown(function() h.rm(tmp) end)

  local function configure(dir, defs)
    return h.sh(("PKG_CONFIG_LIBDIR=%s PKG_CONFIG_PATH= cmake -S %s -B %s -DCMAKE_BUILD_TYPE=Release %s 2>&1")
      :format(q(tmp .. "/empty"), q(h.project), q(dir), defs))
  end

  local libdir = (h.sh("dirname \"$(realpath \"$(gcc -print-file-name=libkmod.so)\")\""):gsub("%s+$", ""))

  it("builds from LuaRocks' LUA_INCDIR and LIBKMOD_/LIBARCHIVE_ INCDIR/LIBDIR when pkg-config finds nothing", function()
    local dir = tmp .. "/ok"
    local out, ok = configure(dir, ("-DLUA_INCDIR=/usr/include/lua5.4 -DLIBKMOD_INCDIR=/usr/include -DLIBKMOD_LIBDIR=%s "
      .. "-DLIBARCHIVE_INCDIR=/usr/include -DLIBARCHIVE_LIBDIR=%s"):format(q(libdir), q(libdir)))
    assert(ok, out)
    out, ok = h.sh("nice cmake --build " .. q(dir) .. " -j2 2>&1")
    assert(ok, out)
    local cache = h.readfile(dir .. "/CMakeCache.txt")
    assert.are.equal(libdir .. "/libkmod.so", cache:match("\nLIBKMOD_LIBRARY:FILEPATH=([^\n]*)"))
    out = h.sh(("LUA_CPATH=%s lua5.4 -e 'print(require(\"vfioinit.core\")._VERSION)' 2>&1"):format(q(dir .. "/?.so")))
    assert.are.equal("0.1.0\n", out)
  end)

  it("names the package to install when neither pkg-config nor the given directories have libkmod", function()
    local out, ok = configure(tmp .. "/bad", ("-DLUA_INCDIR=/usr/include/lua5.4 -DLIBKMOD_INCDIR=%s -DLIBKMOD_LIBDIR=%s")
      :format(q(tmp .. "/empty"), q(tmp .. "/empty")))
    assert.is_nil(ok)
    out = out:gsub("%s+", " ")
    assert.truthy(out:find("libkmod-dev (Debian/Ubuntu), kmod-devel (Fedora), kmod (Arch)", 1, true), out)
  end)

  it("names the Lua headers to install when LUA_INCDIR has no lua.h", function()
    local out, ok = configure(tmp .. "/nolua", "-DLUA_INCDIR=" .. q(tmp .. "/empty"))
    assert.is_nil(ok)
    out = out:gsub("%s+", " ")
    assert.truthy(out:find("has no lua.h: install the headers of that Lua", 1, true), out)
  end)
end)
