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
end)

describe("vfioinit --timeout", function()
  it("refuses what is not a number of seconds > 0, before anything runs", function()
    for _, bad in ipairs({ "0", "-5", "abc", "nan", "inf", "''" }) do
      local code, out, err = run("--timeout " .. bad .. " --root / verify")
      assert.are.equal(1, code, bad)
      assert.are.equal("", out)
      assert.matches("^vfioinit: %-%-timeout .*: expected a number of seconds > 0\n$", err)
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
