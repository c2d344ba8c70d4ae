-- Image fingerprints (lua/vfioinit/fingerprint.lua): a no-op apply, verify and status do
-- not read an image again that has not changed since vfioinit read it and found every
-- module there -- and a fingerprint never says "ok" for an image that changed: a touch,
-- a same-size rewrite that restores mtime, a replace by rename, a damaged store or a
-- config changed since all make vfioinit read the image again.
--
-- The generator (booster) is stubbed as in spec/42-run_spec.lua: core.spawn.run writes a
-- real newc cpio image on the host. Reads are counted by wrapping core.image.list.
local h = require "helpers"
local core = require "vfioinit.core"
local fingerprint = require "vfioinit.fingerprint"

local STORE = "/var/lib/vfioinit/verified"

local function stub_spawn(root)
  return function(o)
    local kver, image = o.argv[5], o.argv[6]
    local d = h.tmpdir()
    local vdir = "/lib/modules/" .. kver .. "/kernel/drivers/vfio"
    h.sh(("mkdir -p %s && cp -r %s %s"):format(h.q(d .. "/usr" .. vdir:match("^(.*)/vfio$")),
      h.q(root .. vdir), h.q(d .. "/usr" .. vdir)))
    local list = {}
    for name in h.sh("find " .. h.q(root .. vdir) .. " -name '*.ko*'"):gmatch("([^/\n]+)%.ko[^\n]*") do
      list[#list + 1] = "- " .. name .. "\n"
    end
    h.writefile(d .. "/etc/booster.init.yaml", "modulesforceload:\n" .. table.concat(list))
    local mp = h.readfile(root .. "/etc/modprobe.d/vfioinit.conf")
    if mp then h.writefile(d .. "/etc/modprobe.d/vfioinit.conf", mp) end
    local _, ok = h.sh(("mkdir -p %s && cd %s && find . | cpio -o -H newc --quiet > %s"):format(
      h.q((root .. image):match("^(.*)/")), h.q(d), h.q(root .. image)))
    h.rm(d)
    assert(ok, "stub booster: cpio failed")
    return { status = 0, timed_out = false, seconds = 0.01 }
  end
end

describe("image fingerprints", function()
  local template, root, image, vfioinit, unstub
  local reads = 0
  local real_list, real_spawn, settle = core.image.list, core.spawn.run, fingerprint.SETTLE

  -- A configured root: booster's config in place, the image built and verified once.
  setup(function()
    fingerprint.SETTLE = 0  -- the images here are seconds old; the racy rule has its own test
    core.image.list = function(...) reads = reads + 1; return real_list(...) end
    template = h.make_root({ os = { ID = "arch" }, files = { ["/etc/booster.yaml"] = "" } })
    h.install_kernel(template, "cloud")
    h.writefile(template .. "/usr/bin/booster", "\127ELF stand-in\n", 493)
    vfioinit = require "vfioinit"
    core.spawn.run = stub_spawn(template)
    unstub = h.start_via_run(core)
    local rep = vfioinit.update_initramfs({ root = template, ids = { "1af4:1000" } })
    assert(rep.ok, rep.error)
    image = rep.verified[1].image
  end)
  teardown(function()
    unstub()
    core.image.list, core.spawn.run, fingerprint.SETTLE = real_list, real_spawn, settle
    h.rm(template)
  end)
  before_each(function()
    root = h.tmpdir()
    h.sh(("cp -a %s/. %s"):format(h.q(template), h.q(root)))
    core.spawn.run = stub_spawn(root)
    -- the copy is a new inode: one read of a no-op apply records it (a read-only verify
    -- records nothing: spec/56)
    reads = 0
    local rep = vfioinit.update_initramfs({ root = root, ids = { "1af4:1000" } })
    assert.is_true(rep.ok and rep.verified[1].ok, rep.error)
    assert.are.same({}, rep.rebuilt)
    assert.are.equal(1, reads)
    reads = 0
  end)
  after_each(function() h.rm(root) end)

  local function noop_apply()
    local rep = vfioinit.update_initramfs({ root = root, ids = { "1af4:1000" } })
    assert.is_true(rep.ok, rep.error)
    assert.are.same({}, rep.rebuilt)
    return rep.verified[1]
  end

  -- Same length, other bytes: the module vfio_pci.ko renamed to vfio_pcX.ko in the cpio.
  local function without_vfio_pci(bytes)
    local out = bytes:gsub("vfio%-pci%.ko", "vfio-pcX.ko"):gsub("vfio_pci%.ko", "vfio_pcX.ko")
    assert.are_not.equal(bytes, out)
    assert.are.equal(#bytes, #out)
    return out
  end

  it("a no-op apply answers from the fingerprint without reading the image", function()
    local v = noop_apply()
    assert.are.equal(0, reads)
    assert.is_true(v.ok)
    assert.is_true(v.fingerprint)
    assert.truthy(h.readfile(root .. STORE):match("^vfioinit%-verified 1\nbooster\t"))
    -- status and verify too
    assert.is_true(vfioinit.verify({ root = root })[1].fingerprint)
    assert.are.equal(0, reads)
  end)

  it("verify{full=true} and `verify --full` read the image anyway", function()
    local v = vfioinit.verify({ root = root, full = true })[1]
    assert.are.equal(1, reads)
    assert.is_true(v.ok)
    assert.is_nil(v.fingerprint)
    local env = "VFIOINIT_FP_SETTLE=0"
    local code, out = h.cli("--root " .. h.q(root) .. " verify", env)
    assert.are.equal(0, code)
    assert.truthy(out:match("^ok   " .. image:gsub("%p", "%%%0") .. " %(booster, [^)]+%), unchanged since verified\n$"), out)
    code, out = h.cli("--root " .. h.q(root) .. " verify --full", env)
    assert.are.equal(0, code)
    assert.truthy(out:match("^ok   " .. image:gsub("%p", "%%%0") .. " %(booster, [^)]+%)\n$"), out)
  end)

  it("a touched image (same bytes, new mtime) is read again", function()
    h.sh("touch -d '-1 hour' " .. h.q(root .. image))
    local v = noop_apply()
    assert.are.equal(1, reads)
    assert.is_nil(v.fingerprint)
    -- and remembered again (its ctime is now, SETTLE is 0 here): the next no-op reads nothing
    reads = 0
    noop_apply()
    assert.are.equal(0, reads)
  end)

  it("a same-size rewrite that restores mtime is caught by ctime: FAIL, not ok", function()
    local before = assert(core.fs.stat(root, image))
    local f = assert(io.open(root .. image, "r+b"))
    local bytes = f:read("a")
    f:seek("set", 0); f:write(without_vfio_pci(bytes)); f:close()
    h.sh(("touch -d @%d.%09d %s"):format(before.mtime, before.mtime_ns, h.q(root .. image)))
    local after = assert(core.fs.stat(root, image))
    assert.are.same({ before.ino, before.size, before.mtime, before.mtime_ns },
      { after.ino, after.size, after.mtime, after.mtime_ns })
    local v = vfioinit.verify({ root = root })[1]
    assert.are.equal(1, reads)
    assert.is_false(v.ok)
    assert.are.same({ "vfio_pci" }, v.missing)
  end)

  it("an image replaced by rename (new inode, same size and mtime) is read again: FAIL, not ok", function()
    local bytes = assert(h.readfile(root .. image))
    h.writefile(root .. image .. ".new", without_vfio_pci(bytes))
    h.sh(("touch -r %s %s && mv %s %s"):format(h.q(root .. image), h.q(root .. image .. ".new"),
      h.q(root .. image .. ".new"), h.q(root .. image)))
    local v = vfioinit.verify({ root = root })[1]
    assert.are.equal(1, reads)
    assert.is_false(v.ok)
    assert.are.same({ "vfio_pci" }, v.missing)
  end)

  it("a damaged store is ignored (the image read again) and written anew", function()
    local text = assert(h.readfile(root .. STORE))
    for _, bad in ipairs({ text:gsub("\t%d+\t", "\t1\t", 1), text:sub(1, -10), "", "\0\0garbage",
        text:gsub("vfioinit%-verified 1", "vfioinit-verified 9") }) do
      h.writefile(root .. STORE, bad)
      reads = 0
      local v = noop_apply()
      assert.are.equal(1, reads)
      assert.is_true(v.ok)
      assert.are.equal(text:match("\n(.-)\t%x+\nend"), h.readfile(root .. STORE):match("\n(.-)\t%x+\nend"))
    end
  end)

  it("a config or modprobe.d file changed since the image was verified means a read", function()
    h.writefile(root .. "/etc/booster.yaml", h.readfile(root .. "/etc/booster.yaml") .. "# a note\n")
    vfioinit.verify({ root = root })
    assert.are.equal(1, reads)
    -- another module list is another key too
    reads = 0
    local v = vfioinit.verify({ root = root, modules = { "virtio_net" } })[1]
    assert.are.equal(1, reads)
    assert.is_false(v.ok)
  end)

  it("records only an image whose change time has settled", function()
    fingerprint.SETTLE = 3600
    h.rm(root .. STORE)
    noop_apply()
    fingerprint.SETTLE = 0
    assert.is_nil(h.readfile(root .. STORE))
  end)

  it("is only looked up, never written, by verify and status", function()
    h.rm(root .. STORE)
    assert.is_true(vfioinit.verify({ root = root, full = true })[1].ok)
    assert.is_true(vfioinit.verify({ root = root })[1].ok)
    assert.is_true(vfioinit.status({ root = root, ids = { "1af4:1000" } }).images[1].ok)
    assert.are.equal(3, reads)
    assert.is_nil(h.readfile(root .. STORE))
  end)

  it("keeps no store in a root without vfioinit's manifest, and revert removes it", function()
    local st = assert(core.fs.stat(root, STORE))
    assert.are.equal(384, st.mode)
    assert(vfioinit.revert({ root = root }))
    assert.is_nil(h.readfile(root .. STORE))
    assert.are.equal("", h.sh("ls -A " .. h.q(root .. "/var/lib") .. " 2>/dev/null"))
    vfioinit.verify({ root = root })
    assert.are.equal("", h.sh("ls -A " .. h.q(root .. "/var/lib") .. " 2>/dev/null"))
  end)
end)

describe("core.fs.stat for fingerprints", function()
  it("reports dev, ino, ctime and ctime_ns; ctime moves when only the inode changes", function()
    local d = h.tmpdir()
    h.writefile(d .. "/f", "x")
    local a = assert(core.fs.stat(d, "/f"))
    for _, k in ipairs({ "dev", "ino", "ctime", "ctime_ns" }) do assert.are.equal("integer", math.type(a[k]), k) end
    local ls = h.sh("stat -c '%d %i %Z' " .. h.q(d .. "/f")):gsub("%s+$", "")
    assert.are.equal(ls, ("%d %d %d"):format(a.dev, a.ino, a.ctime))
    h.sh("sleep 0.02; chmod 600 " .. h.q(d .. "/f"))
    local b = assert(core.fs.stat(d, "/f"))
    assert.are.same({ a.mtime, a.mtime_ns }, { b.mtime, b.mtime_ns })
    assert.are_not.same({ a.ctime, a.ctime_ns }, { b.ctime, b.ctime_ns })
    h.rm(d)
  end)

  it("lookup compares every field and the key", function()
    local st = { type = "file", dev = 1, ino = 2, size = 3, mtime = 4, mtime_ns = 5, ctime = 6, ctime_ns = 7 }
    local key = ("a"):rep(64)
    local e = { generator = "g", kernel = "k", image = "/i", key = key }
    for k, v in pairs(st) do if k ~= "type" then e[k] = v end end
    local store = assert(fingerprint.parse(fingerprint.serialize({ entries = { e } })))
    assert.is_true(fingerprint.lookup(store, "g", "k", "/i", st, key))
    assert.is_false(fingerprint.lookup(store, "g", "k", "/i", st, ("b"):rep(64)))
    assert.is_false(fingerprint.lookup(store, "g", "k", "/j", st, key))
    for _, f in ipairs({ "dev", "ino", "size", "mtime", "mtime_ns", "ctime", "ctime_ns" }) do
      local other = {}
      for k, v in pairs(st) do other[k] = v end
      other[f] = other[f] + 1
      assert.is_false(fingerprint.lookup(store, "g", "k", "/i", other, key), f)
    end
  end)
end)
