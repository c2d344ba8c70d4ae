-- A read-only command writes nothing: `verify` (with and without --full), `status` and
-- `plan` leave every file and directory of root exactly as it was (no byte, no mtime, no
-- ctime, no inode: nothing written, renamed or fsynced), and create nothing in $TMPDIR
-- (no private copy of the kernel's module indexes). The root is configured by a real
-- `apply` first: a booster root whose generator is the stand-in (spec/fixtures), so its
-- images verify and vfioinit keeps a manifest and fingerprints there.
local h = require "helpers"

local q = h.q
local STANDIN = h.project .. "/spec/fixtures/standin-booster"
local APPLETS = "sh cat echo printf mkdir mktemp find cpio mv rm sleep"
local root_it = h.chroot_it(it, pending)

-- Every path under dir with its type, size, inode, mtime and ctime (nanoseconds).
local function listing(dir)
  return (h.sh("cd " .. q(dir) .. " && find . -printf '%p %y %s %i %T@ %C@\\n' | sort"))
end

describe("a read-only command", function()
  local root, tmp
  before_each(function()
    root = h.make_root({ os = { ID = "arch" }, files = { ["/etc/booster.yaml"] = "" } })
    tmp = h.tmpdir()
  end)
  after_each(function() h.rm(root); h.rm(tmp) end)

  root_it("leaves root and $TMPDIR untouched", function()
    local k1 = h.install_kernel(root, "cloud")
    h.install_kernel(root, "cloud", k1 .. "-two")
    h.sh("mkdir -p " .. q(root .. "/bin") .. " " .. q(root .. "/usr/bin") .. " " .. q(root .. "/boot") .. " " .. q(root .. "/tmp"))
    h.sh("cp " .. q(h.static_busybox()) .. " " .. q(root .. "/bin/busybox"))
    h.sh("cd " .. q(root .. "/bin") .. " && for a in " .. APPLETS .. "; do ln -s busybox $a; done")
    h.sh("cp " .. q(STANDIN) .. " " .. q(root .. "/usr/bin/booster"))
    -- fingerprints are recorded at once (test builds: VFIOINIT_FP_SETTLE=0)
    local env = "env VFIOINIT_FP_SETTLE=0 TMPDIR=" .. q(tmp)
    local code, _, err = h.cli("--root " .. q(root) .. " --generator booster --ids 1af4:1000 apply", env)
    assert.are.equal(0, code, err)
    assert.truthy(h.readfile(root .. "/var/lib/vfioinit/manifest"))
    h.sh("sleep 1.1")  -- a write now would show in the seconds too
    local before, tmp_before = listing(root), listing(tmp)
    for _, args in ipairs({ "verify --full", "verify", "--ids 1af4:1000 status", "--ids 1af4:1000 plan",
      "--ids 1af4:1000 --full status" }) do
      code, _, err = h.cli("--root " .. q(root) .. " --generator booster " .. args, env)
      assert.is_true(code == 0, args .. ": " .. err)
      assert.are.equal(before, listing(root), args .. " changed root")
      assert.are.equal(tmp_before, listing(tmp), args .. " wrote in $TMPDIR")
    end
  end)
end)
