-- plan / diff / apply / revert across generators on synthetic roots from the corpus.
local h = require "helpers"
local vfioinit = require "vfioinit"

local ARCH = { ID = "arch" }
local DEBIAN = { ID = "debian", VERSION_ID = '"12"' }
local FEDORA = { ID = "fedora" }

local function arch_root(extra)
  local spec = { os = ARCH, corpus = { ["/etc/mkinitcpio.conf"] = "mkinitcpio/mkinitcpio.conf" },
    exec = { "/usr/bin/mkinitcpio" }, files = {} }
  for k, v in pairs(extra or {}) do spec.files[k] = v end
  return h.make_root(spec)
end

-- All four generators installed, none active by hook: plan edits all of them.
local all_root = h.all_root

local function paths(plan)
  local t = {}
  for _, c in ipairs(plan.changes) do t[#t + 1] = c.path end
  table.sort(t)
  return t
end

describe("plan()", function()
  it("writes nothing: the tree is identical before and after", function()
    local r = all_root()
    finally(function() h.rm(r) end)
    local before = h.tree_hash(r)
    local plan = assert(vfioinit.plan({ root = r }))
    assert.is_true(#plan.changes >= 4)
    local _ = plan:diff()
    assert.are.equal(before, h.tree_hash(r))
  end)

  it("edits every installed generator when none is active", function()
    local r = all_root()
    finally(function() h.rm(r) end)
    local plan = assert(vfioinit.plan({ root = r }))
    local gens = {}
    for _, c in ipairs(plan.changes) do gens[c.generator] = true end
    assert.is_true(gens.mkinitcpio and gens.dracut and gens["initramfs-tools"] and gens.booster)
  end)

  it("gives a diff that patch -p0 applies to the same result as apply", function()
    local r, r2 = all_root(), all_root()
    finally(function() h.rm(r); h.rm(r2) end)
    local plan = assert(vfioinit.plan({ root = r }))
    local d = plan:diff()
    h.writefile(r2 .. ".diff", d)
    local out, ok = h.sh("patch -s -p0 -d " .. h.q(r2) .. " < " .. h.q(r2 .. ".diff") .. " 2>&1")
    h.rm(r2 .. ".diff")
    assert.is_true(ok, out)
    assert.is_true(plan:apply())
    for _, c in ipairs(plan.changes) do
      assert.are.equal(h.readfile(r .. c.path), h.readfile(r2 .. c.path), c.path)
      assert.are.equal(c.after, h.readfile(r .. c.path))
    end
  end)

  it("refuses invalid module names and malformed ids before reading anything", function()
    local r = arch_root()
    finally(function() h.rm(r) end)
    local p, err = vfioinit.plan({ root = r, modules = { "ok_mod", "bad;rm" } })
    assert.is_nil(p)
    assert.truthy(err:match("invalid module name"))
    p, err = vfioinit.plan({ root = r, ids = { "10de:1b8" } })
    assert.is_nil(p)
    assert.truthy(err:match("invalid device id"))
  end)

  it("adds extra modules, normalized, without duplicating VFIO ones", function()
    local r = arch_root()
    finally(function() h.rm(r) end)
    local plan = assert(vfioinit.plan({ root = r, modules = { "vfio-pci", "kvmgt" } }))
    assert.are.same({ "vfio", "vfio_iommu_type1", "vfio_pci", "kvmgt" }, plan.modules)
  end)

  it("fails with file and line on bad input and leaves every file untouched, other generators' too", function()
    local r = all_root()
    finally(function() h.rm(r) end)
    h.writefile(r .. "/etc/booster.yaml", "universal: false\nmodules_force_load: \"amdgpu\nstrip: true\n")
    local before = h.tree_hash(r)
    local p, err = vfioinit.plan({ root = r })
    assert.is_nil(p)
    assert.truthy(err:match("^/etc/booster%.yaml:%d+:"), err)
    assert.are.equal(before, h.tree_hash(r))
  end)

  it("refuses a config that is a directory, binary, or larger than 1 MiB", function()
    for _, case in ipairs({
      { "dir", function(r) h.sh("rm -f " .. h.q(r .. "/etc/mkinitcpio.conf") .. " && mkdir " .. h.q(r .. "/etc/mkinitcpio.conf")) end, "directory" },
      { "binary", function(r) h.writefile(r .. "/etc/mkinitcpio.conf", "MODULES=()\n\0\1\2") end, "binary" },
      { "huge", function(r) h.writefile(r .. "/etc/mkinitcpio.conf", "MODULES=()\n" .. ("#" .. ("x"):rep(99) .. "\n"):rep(11000)) end, "too large" },
    }) do
      local r = arch_root()
      case[2](r)
      local before = h.tree_hash(r)
      local p, err = vfioinit.plan({ root = r })
      assert.is_nil(p, case[1])
      assert.truthy(err:find("/etc/mkinitcpio.conf", 1, true), err)
      assert.truthy(err:find(case[3], 1, true), err)
      assert.are.equal(before, h.tree_hash(r))
      h.rm(r)
    end
  end)

  it("refuses to edit a read-only config (no write bits), writing nothing", function()
    local r = all_root()
    finally(function() h.rm(r) end)
    h.sh("chmod 444 " .. h.q(r .. "/etc/initramfs-tools/modules"))
    local before = h.tree_hash(r)
    local p, err = vfioinit.plan({ root = r })
    assert.is_nil(p)
    assert.truthy(err:match("^/etc/initramfs%-tools/modules:1: read%-only"), err)
    assert.are.equal(before, h.tree_hash(r))
  end)

  it("fails clearly when no generator is installed", function()
    local r = h.make_root({ os = DEBIAN })
    finally(function() h.rm(r) end)
    local p, err = vfioinit.plan({ root = r })
    assert.is_nil(p)
    assert.truthy(err:match("no initramfs generator"))
  end)
end)

describe("plan:apply()", function()
  it("keeps mode and owner, and a second apply changes no byte and no mtime", function()
    local r = all_root()
    finally(function() h.rm(r) end)
    h.sh("chmod 600 " .. h.q(r .. "/etc/mkinitcpio.conf") .. " && chown 1234:4321 " .. h.q(r .. "/etc/mkinitcpio.conf"))
    assert.is_true(assert(vfioinit.plan({ root = r })):apply())
    local st = h.sh("stat -c '%a %u %g' " .. h.q(r .. "/etc/mkinitcpio.conf"))
    assert.are.equal("600 1234 4321\n", st)
    local after_first = h.tree_hash(r)
    local plan2 = assert(vfioinit.plan({ root = r }))
    assert.are.same({}, plan2.changes)
    assert.is_true(plan2:apply())
    assert.are.equal(after_first, h.tree_hash(r))
    -- no temp files left anywhere
    assert.are.equal("", h.sh("find " .. h.q(r) .. " -name '*.vfioinit-*'"))
  end)

  it("refuses to apply a plan when a file changed since", function()
    local r = arch_root()
    finally(function() h.rm(r) end)
    local plan = assert(vfioinit.plan({ root = r }))
    h.writefile(r .. "/etc/mkinitcpio.conf", h.readfile(r .. "/etc/mkinitcpio.conf") .. "# edited\n")
    local ok, err = plan:apply()
    assert.is_nil(ok)
    assert.truthy(err:match("changed since the plan"))
  end)

  it("creates new files with mode 0644", function()
    local r = h.make_root({ os = ARCH, exec = { "/usr/bin/booster" } })
    finally(function() h.rm(r) end)
    local plan = assert(vfioinit.plan({ root = r }))
    assert.are.same({ "/etc/booster.yaml" }, paths(plan))
    assert.is_nil(plan.changes[1].before)
    assert.truthy(plan:diff():match("^%-%-%- /dev/null\n%+%+%+ etc/booster%.yaml\n"))
    assert.is_true(plan:apply())
    assert.are.equal("644\n", h.sh("stat -c %a " .. h.q(r .. "/etc/booster.yaml")))
  end)
end)

describe("revert()", function()
  it("restores every file byte for byte and removes the files it created", function()
    local r = all_root()
    finally(function() h.rm(r) end)
    local before = h.tree_hash(r)
    local saved = {}
    for _, p in ipairs({ "/etc/mkinitcpio.conf", "/etc/dracut.conf", "/etc/initramfs-tools/modules", "/etc/booster.yaml" }) do
      saved[p] = h.readfile(r .. p)
    end
    assert.is_true(assert(vfioinit.plan({ root = r })):apply())
    -- a second, different apply must not overwrite the recorded originals
    assert.is_true(assert(vfioinit.plan({ root = r, modules = { "kvmgt" } })):apply())
    assert.is_true(vfioinit.revert({ root = r }))
    for p, content in pairs(saved) do assert.are.equal(content, h.readfile(r .. p), p) end
    assert.are.equal("", h.sh("find " .. h.q(r .. "/etc/dracut.conf.d") .. " -type f 2>/dev/null"))
    assert.is_nil(h.readfile(r .. "/var/lib/vfioinit/manifest"))
    -- contents are identical; only directories vfioinit made remain
    local _ = before
  end)

  it("is a no-op on a root vfioinit never touched", function()
    local r = arch_root()
    finally(function() h.rm(r) end)
    local before = h.tree_hash(r)
    assert.is_true(vfioinit.revert({ root = r }))
    assert.are.equal(before, h.tree_hash(r))
  end)
end)

describe("ids and softdeps", function()
  local r, kver
  before_each(function()
    r = h.make_root({ os = DEBIAN, corpus = { ["/etc/initramfs-tools/modules"] = "initramfs-tools/modules" },
      exec = { "/usr/sbin/update-initramfs", "/etc/kernel/postinst.d/initramfs-tools" } })
    kver = h.install_kernel(r, "cloud")
  end)
  after_each(function() h.rm(r) end)

  it("writes options and one softdep per native driver to /etc/modprobe.d/vfioinit.conf", function()
    local plan = assert(vfioinit.plan({ root = r, ids = "1AF4:1000" }))
    assert.is_true(plan:apply())
    local text = h.readfile(r .. "/etc/modprobe.d/vfioinit.conf")
    assert.truthy(text:find("\noptions vfio-pci ids=1af4:1000\n", 1, true), text)
    assert.truthy(text:find("\nsoftdep virtio_pci pre: vfio-pci\n", 1, true), text)
    -- modprobe itself reads the file the same way (the oracle)
    local out = h.sh("modprobe -C " .. h.q(r .. "/etc/modprobe.d") .. " -d " .. h.q(r) .. " -S " .. kver .. " --show-config")
    assert.truthy(out:find("options vfio_pci ids=1af4:1000", 1, true), out)
    assert.truthy(out:find("softdep virtio_pci pre: vfio-pci", 1, true), out)
  end)

  it("without ids writes no modprobe file unless softdeps is asked for", function()
    local plan = assert(vfioinit.plan({ root = r }))
    for _, c in ipairs(plan.changes) do assert.are_not.equal("/etc/modprobe.d/vfioinit.conf", c.path) end
    plan = assert(vfioinit.plan({ root = r, softdeps = true }))
    assert.is_true(plan:apply())
    local text = h.readfile(r .. "/etc/modprobe.d/vfioinit.conf")
    assert.truthy(text:find("softdep amdgpu pre: vfio-pci", 1, true))
    assert.truthy(text:find("softdep nouveau pre: vfio-pci", 1, true))
    assert.falsy(text:find("options vfio-pci", 1, true))
  end)

  it("reports a conflicting ids= or blacklist in another modprobe.d file with its line", function()
    h.writefile(r .. "/etc/modprobe.d/gpu.conf", "# mine\noptions vfio_pci ids=10de:1b80\n")
    local p, err = vfioinit.plan({ root = r, ids = "1af4:1000" })
    assert.is_nil(p)
    assert.truthy(err:match("^/etc/modprobe%.d/gpu%.conf:2:"), err)
    h.writefile(r .. "/etc/modprobe.d/gpu.conf", "blacklist vfio-pci\n")
    p, err = vfioinit.plan({ root = r, ids = "1af4:1000" })
    assert.is_nil(p)
    assert.truthy(err:match("^/etc/modprobe%.d/gpu%.conf:1: blacklists"), err)
  end)
end)

describe("ensure_*_modules()", function()
  it("plans and applies one generator for the given modules; dry_run writes nothing", function()
    local r = all_root()
    finally(function() h.rm(r) end)
    local before = h.tree_hash(r)
    assert.is_true(vfioinit.ensure_initramfs_modules_debian({ "vfio", "vfio_pci" }, { root = r, dry_run = true }))
    assert.are.equal(before, h.tree_hash(r))
    assert.is_true(vfioinit.ensure_mkinitcpio_modules(nil, { root = r }))
    local mods = h.bash_array({ r .. "/etc/mkinitcpio.conf" }, "MODULES")
    assert.are.same({ "vfio", "vfio_iommu_type1", "vfio_pci" }, mods)
    -- only mkinitcpio's file changed
    assert.are.equal(h.readfile(h.corpus .. "/dracut/dracut.conf"), h.readfile(r .. "/etc/dracut.conf"))
    assert.has_error(function() vfioinit.ensure_dracut_modules("vfio", { root = r }) end)
  end)
end)
