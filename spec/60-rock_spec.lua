-- The rock: `luarocks make` builds offline and an installed tree works from a plain lua5.4.
local h = require "helpers"

describe("luarocks make", function()
  it("installs a tree from which lua5.4 can require vfioinit and run the CLI", function()
    local tree = h.tmpdir()
    finally(function() h.rm(tree) end)
    local out, ok = h.sh("cd " .. h.q(h.project) .. " && luarocks --lua-version=5.4 make --tree " .. h.q(tree)
      .. " vfioinit-scm-0.rockspec 2>&1")
    assert.is_true(ok, out)
    -- from / so nothing of the checkout is on the path
    local env = ("cd / && eval \"$(luarocks --lua-version=5.4 path --tree %s)\" && "):format(h.q(tree))
    out, ok = h.sh(env .. "lua5.4 -e 'local v = require \"vfioinit\"; local c = require \"vfioinit.core\";"
      .. " print(type(v.plan), type(v.update_initramfs), package.searchpath(\"vfioinit.core\", package.cpath))' 2>&1")
    assert.is_true(ok, out)
    assert.are.equal("function\tfunction\t" .. tree .. "/lib/lua/5.4/vfioinit/core.so\n", out)
    -- core.kmod, core.re, core.sig and core.image.list (with libarchive's decoders) are modules of their own, installed
    -- beside core.so and loaded on first use
    out, ok = h.sh(env .. "lua5.4 -e 'local c = require \"vfioinit.core\"; print(type(c.kmod.new), type(c.re.compile),"
      .. " type(c.sig.read), type(c.image.list), package.searchpath(\"vfioinit.core.kmod\", package.cpath),"
      .. " package.searchpath(\"vfioinit.core.re\", package.cpath), package.searchpath(\"vfioinit.core.sig\", package.cpath),"
      .. " package.searchpath(\"vfioinit.core.image\", package.cpath),"
      .. " package.searchpath(\"vfioinit.core.archive\", package.cpath))' 2>&1")
    assert.is_true(ok, out)
    assert.are.equal(("function\tfunction\tfunction\tfunction\t%s/lib/lua/5.4/vfioinit/core/kmod.so\t%s/lib/lua/5.4/vfioinit/core/re.so"
      .. "\t%s/lib/lua/5.4/vfioinit/core/sig.so\t%s/lib/lua/5.4/vfioinit/core/image.so"
      .. "\t%s/lib/lua/5.4/vfioinit/core/archive.so\n"):format(tree, tree, tree, tree, tree), out)
    out, ok = h.sh(env .. h.q(tree .. "/bin/vfioinit") .. " --help 2>&1")
    assert.is_true(ok, out)
    assert.truthy(out:find("usage: vfioinit", 1, true), out)
    -- the command is bin/vfioinit itself with LuaRocks' Lua on its #! line, not a shell
    -- wrapper that starts the LuaRocks loader first; it finds its modules in the tree with
    -- nothing of the tree on Lua's paths
    local lua = (h.sh("luarocks --lua-version=5.4 config variables.LUA"):gsub("%s+$", ""))
    local cmd = assert(h.readfile(tree .. "/bin/vfioinit"))
    assert.are.equal("#!" .. lua .. "\n" .. h.readfile(h.project .. "/bin/vfioinit"):gsub("^[^\n]*\n", ""), cmd)
    out, ok = h.sh("cd / && env -u LUA_PATH -u LUA_CPATH -u LUA_PATH_5_4 -u LUA_CPATH_5_4 -u LUA_INIT -u LUA_INIT_5_4 "
      .. h.q(tree .. "/bin/vfioinit") .. " --version 2>&1")
    assert.is_true(ok, out)
    assert.are.equal(require("vfioinit")._VERSION .. "\n", out)
  end)
end)
