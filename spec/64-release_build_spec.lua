-- The release build carries no test hooks (issue item 11): VFIOINIT_FAULT and
-- VFIOINIT_FS_FALLBACK (and core.fs._force_fallback) exist only with
-- -DVFIOINIT_TESTING=ON, which tools/test sets for its own builds. A plain CMake build with
-- default options (what the rockspec's build is) is made here and compared with the testing
-- build the specs run against.
local H = require "helpers"

local q = H.q
local TESTING = H.project .. "/" .. (os.getenv("VFIOINIT_BUILD") or "build")

describe("the release build", function()
  local rel
  setup(function()
    rel = H.tmpdir()
    local out, ok = H.sh("cmake -S " .. q(H.project) .. " -B " .. q(rel) .. " -DCMAKE_BUILD_TYPE=Release >/dev/null 2>&1 && "
      .. "nice cmake --build " .. q(rel) .. " -j2 2>&1")
    assert(ok, out)
  end)
  teardown(function() H.rm(rel) end)

  -- The release build is not instrumented: it runs without tools/test's ASan preload, the
  -- testing build (build-asan there) with it.
  local function unpreload(build) return build == rel and "-u LD_PRELOAD" or "" end

  -- Run the CLI from the checkout's Lua sources with the core of `build` (bin/vfioinit takes
  -- its checkout's modules first: VFIOINIT_BUILD names the build). Returns exit code, stderr.
  local function cli(build, env, args, wrap)
    local errf = os.tmpname()
    local _, _, code = H.sh(("cd %s && env " .. unpreload(build) .. " %s VFIOINIT_BUILD=%s "
      .. "%s lua5.4 bin/vfioinit %s >/dev/null 2>%s"):format(q(H.project), env, q(build), wrap or "", args, q(errf)))
    local err = H.readfile(errf) or ""
    os.remove(errf)
    return code, err
  end

  local function arch_root()
    return H.make_root({ os = { ID = "arch" }, corpus = { ["/etc/mkinitcpio.conf"] = "mkinitcpio/mkinitcpio.conf" },
      exec = { "/usr/bin/mkinitcpio" } })
  end

  it("ignores VFIOINIT_FAULT: an apply succeeds where the testing build fails", function()
    local r1, r2 = arch_root(), arch_root()
    finally(function() H.rm(r1); H.rm(r2) end)
    local code, err = cli(rel, "VFIOINIT_FAULT=rename:1", "--root " .. q(r1) .. " apply --no-rebuild")
    assert.are.equal(0, code, err)
    assert.truthy(H.readfile(r1 .. "/etc/mkinitcpio.conf"):find("vfio_pci", 1, true))
    -- the same run on the testing build: the injected rename error
    code, err = cli(TESTING, "VFIOINIT_FAULT=rename:1", "--root " .. q(r2) .. " apply --no-rebuild")
    assert.are.equal(1, code)
    assert.truthy(err:find("Input/output error", 1, true), err)
    assert.is_nil(H.readfile(r2 .. "/etc/mkinitcpio.conf"):find("vfio_pci", 1, true))
  end)

  it("ignores VFIOINIT_FS_FALLBACK: openat2 stays in use", function()
    if not H.sh("command -v strace"):find("strace") then
      pending("strace is not installed")
      return
    end
    local r = arch_root()
    finally(function() H.rm(r) end)
    local function openat2_calls(build)
      local log = os.tmpname()
      cli(build, "VFIOINIT_FS_FALLBACK=1", "--root " .. q(r) .. " plan", "strace -f -e trace=openat2 -o " .. q(log))
      local n = select(2, (H.readfile(log) or ""):gsub("openat2%(", ""))
      os.remove(log)
      return n
    end
    assert.is_true(openat2_calls(rel) > 0)
    assert.are.equal(0, openat2_calls(TESTING))
  end)

  it("has no fs._force_fallback and says so in _TESTING", function()
    local function probe(build)
      return (H.sh(("env " .. unpreload(build) .. " LUA_CPATH=%s lua5.4 -e 'local c = require \"vfioinit.core\"; "
        .. "print(c._TESTING, type(c.fs._force_fallback))' 2>&1"):format(q(build .. "/?.so;;"))))
    end
    assert.are.equal("false\tnil\n", probe(rel))
    assert.are.equal("true\tfunction\n", probe(TESTING))
  end)
end)
