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

-- Every path under dir with its type, size, inode, mtime and ctime; a file with other hard links (the module
-- trees are linked from the kernel cache, which other test runs link and unlink too) without
-- its ctime, which those links change: a write still shows in its mtime, a replacement in its inode.
local function listing(dir)
  return (h.sh("cd " .. q(dir) .. " && find . -printf '%p %y %s %i %T@ %n %C@\\n' | sort"):gsub("(%S+) (%d+) (%S+)\n",
    function(mtime, links, ctime) return mtime .. " " .. (links == "1" and ctime or "-") .. "\n" end))
end

describe("a read-only command", function()
  local root, tmp, env
  -- fingerprints are recorded at once (test builds: VFIOINIT_FP_SETTLE=0)
  setup(function()
    root = h.make_root({ os = { ID = "arch" }, files = { ["/etc/booster.yaml"] = "" } })
    tmp = h.tmpdir()
    env = "env VFIOINIT_FP_SETTLE=0 TMPDIR=" .. q(tmp)
    if not h.static_busybox() then return end
    local k1 = h.install_kernel(root, "cloud")
    h.install_kernel(root, "cloud", k1 .. "-two")
    h.sh("mkdir -p " .. q(root .. "/bin") .. " " .. q(root .. "/usr/bin") .. " " .. q(root .. "/boot") .. " " .. q(root .. "/tmp"))
    h.sh("cp " .. q(h.static_busybox()) .. " " .. q(root .. "/bin/busybox"))
    h.sh("cd " .. q(root .. "/bin") .. " && for a in " .. APPLETS .. "; do ln -s busybox $a; done")
    h.sh("cp " .. q(STANDIN) .. " " .. q(root .. "/usr/bin/booster"))
    local code, _, err = h.cli("--root " .. q(root) .. " --generator booster --ids 1af4:1000 apply", env)
    assert(code == 0, err)
  end)
  teardown(function() h.rm(root); h.rm(tmp) end)

  root_it("leaves root and $TMPDIR untouched", function()
    assert.truthy(h.readfile(root .. "/var/lib/vfioinit/manifest"))
    h.sh("sleep 1.1")  -- a write now would show in the seconds too
    local before, tmp_before = listing(root), listing(tmp)
    for _, args in ipairs({ "verify --full", "verify", "--ids 1af4:1000 status", "--ids 1af4:1000 plan" }) do
      local code, _, err = h.cli("--root " .. q(root) .. " --generator booster " .. args, env)
      assert.is_true(code == 0, args .. ": " .. err)
      assert.are.equal(before, listing(root), args .. " changed root")
      assert.are.equal(tmp_before, listing(tmp), args .. " wrote in $TMPDIR")
    end
  end)

  -- verify asks depmod's text lists, not libkmod (which maps libcrypto); answered by the
  -- fingerprints it does not read an image, and the image reader is not even loaded
  root_it("loads only what it uses: no libkmod in verify, no image reader without a read", function()
    local script = tmp .. "/maps.lua"
    h.writefile(script, ([[
package.path = %q .. "/lua/?.lua;" .. %q .. "/lua/?/init.lua;" .. package.path
package.cpath = %q .. "/?.so;" .. package.cpath
local list = assert(require("vfioinit").verify({ root = %q, full = arg[1] == "full" }))
for _, r in ipairs(list) do assert(r.ok and (r.fingerprint or arg[1] == "full")) end
-- nor the Lua of what verify does not do: plan, rebuild, trial boots, signing
for _, m in ipairs({ "plan", "rebuild", "trial", "signing", "bootloaders", "usage" }) do
  if package.loaded["vfioinit." .. m] then io.write("loaded vfioinit." .. m .. "\n") end
end
io.write(io.open("/proc/self/maps"):read("a"))
]]):format(h.project, h.project, h.project .. "/" .. (os.getenv("VFIOINIT_BUILD") or "build"), root))
    for _, mode in ipairs({ "fingerprint", "full" }) do
      local maps, ok = h.sh(h.lua .. " " .. q(script) .. " " .. mode .. " 2>&1")
      assert.is_true(ok, maps)
      assert.is_nil(maps:match("loaded %S+"), mode)
      assert.is_nil(maps:find("libkmod.so", 1, true), mode)
      assert.is_nil(maps:find("libcrypto.so", 1, true), mode)
      assert.are.equal(mode == "full", maps:find("/vfioinit/core/image.so", 1, true) ~= nil, mode)
    end
  end)
end)
