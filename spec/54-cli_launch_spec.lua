-- bin/vfioinit from a checkout (issue 23 item 12): it finds lua/ and the build directory
-- beside it from wherever it is started (inside bin/ too), takes an empty VFIOINIT_BUILD
-- as unset, and when its modules cannot be loaded says so in one line, exit 1: no traceback.
local h = require "helpers"
local q = h.q

-- Nothing of the caller's Lua setup on the paths: the script must find its modules itself.
local CLEAN = "env -u LUA_PATH -u LUA_CPATH -u LUA_PATH_5_4 -u LUA_CPATH_5_4 -u LUA_INIT -u LUA_INIT_5_4 "
local BUILD = os.getenv("VFIOINIT_BUILD") or "build"

-- Run `cmd` in `dir`; returns exit code, stdout, stderr.
local function run(dir, env, cmd)
  local errf = os.tmpname()
  local out, _, code = h.sh(("cd %s && %s%s %s 2>%s"):format(q(dir), CLEAN, env, cmd, q(errf)))
  local err = h.readfile(errf) or ""
  os.remove(errf)
  return code, out, err
end

-- exit 1, nothing on stdout, one line on stderr that says why and holds `want`
local function one_line_failure(code, out, err, want)
  assert.are.equal(1, code, err)
  assert.are.equal("", out)
  assert.are.equal(1, select(2, err:gsub("\n", "")), err)
  assert.truthy(err:find("^vfioinit: cannot load its modules: "), err)
  assert.truthy(err:find(want, 1, true), err)
  assert.is_nil(err:find("traceback", 1, true), err)
end

describe("bin/vfioinit in a checkout", function()
  local version = require("vfioinit")._VERSION

  it("runs from inside bin/, as ./vfioinit and as lua5.4 vfioinit", function()
    local env = "VFIOINIT_BUILD=" .. q(BUILD)
    for _, cmd in ipairs({ "./vfioinit --version", "lua5.4 vfioinit --version" }) do
      local code, out, err = run(h.project .. "/bin", env, cmd)
      assert.are.equal(0, code, err)
      assert.are.equal(version .. "\n", out)
    end
  end)

  it("takes VFIOINIT_BUILD set empty as unset (the build directory `build`)", function()
    local code, out, err = run(h.project, "VFIOINIT_BUILD=", "bin/vfioinit --version")
    assert.are.equal(0, code, err)
    assert.are.equal(version .. "\n", out)
  end)

  it("says in one line, exit 1, that it cannot load its modules", function()
    local tmp = h.tmpdir()
    finally(function() h.rm(tmp) end)
    -- a build directory that is not there; a script copied where no modules are beside it
    h.sh(("mkdir -p %s/bin && cp %s/bin/vfioinit %s/bin/"):format(q(tmp), q(h.project), q(tmp)))
    local cases = {
      { h.project, "VFIOINIT_BUILD=no-such-build", "bin/vfioinit status", "module 'vfioinit.core' not found" },
      { tmp .. "/bin", "", "./vfioinit --version", "module 'vfioinit.cli' not found" },
    }
    for _, c in ipairs(cases) do
      local code, out, err = run(c[1], c[2], c[3])
      one_line_failure(code, out, err, c[4])
    end
  end)

  it("says in one line when the module was built for another Lua", function()
    if not h.sh("command -v lua5.1"):find("lua5.1") then
      pending("lua5.1 is not installed")
      return
    end
    -- a command (--version alone loads only the version, spec/51)
    local code, out, err = run(h.project, "VFIOINIT_BUILD=" .. q(BUILD), "lua5.1 bin/vfioinit status")
    one_line_failure(code, out, err, "error loading module 'vfioinit.core' from file ")
  end)
end)
