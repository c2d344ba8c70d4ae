-- A fifth generator from outside the core: Alpine's mkinitfs, registered at run time
-- with vfioinit.register_generator(spec) from examples/generators/mkinitfs.lua, taken
-- through detect, plan, apply, revert, rebuild and verify with no change to the core.
local h = require "helpers"
local core = require "vfioinit.core"

local GEN_FILE = h.project .. "/examples/generators/mkinitfs.lua"
local STANDIN = h.project .. "/spec/fixtures/mkinitfs/standin-mkinitfs"
local CONF = "# run mkinitfs -L for a list of available features\n"
  .. 'features="ata base ide scsi usb virtio ext4"\n'
local ALPINE = { ID = "alpine", VERSION_ID = "3.19.1", PRETTY_NAME = '"Alpine Linux v3.19"' }
local APPLETS = "sh cat echo printf mkdir mktemp find sort sed cp cpio gzip rm mv"
local BUILTIN_FILES = { mkinitcpio = "mkinitcpio", dracut = "dracut",
  ["initramfs-tools"] = "initramfs_tools", booster = "booster" }

-- Each test gets its own vfioinit instance, so nothing registered here leaks into
-- the other spec files (the module returned by require is never touched).
local function fresh()
  local vf = require("vfioinit").new()
  local gen = assert(dofile(GEN_FILE))
  assert(vf.register_generator(gen))
  return vf, gen
end

local function alpine_root(files)
  local spec = { os = ALPINE, files = { ["/etc/mkinitfs/mkinitfs.conf"] = CONF }, exec = { "/sbin/mkinitfs" } }
  for k, v in pairs(files or {}) do spec.files[k] = v end
  return h.make_root(spec)
end

local is_root = h.sh("id -u"):match("^0") ~= nil
local busybox = h.static_busybox()
local root_it = h.chroot_it(it, pending)

-- A snapshot of a generator's data fields, and which fields are functions.
local function shape(g)
  local t = {}
  for k, v in pairs(g) do
    if type(v) == "table" then
      local items = {}
      for i, x in ipairs(v) do items[i] = tostring(x) end
      t[k] = "table:" .. table.concat(items, ",")
    elseif type(v) == "function" then
      t[k] = "function"
    else
      t[k] = tostring(v)
    end
  end
  return t
end

describe("register_generator()", function()
  it("refuses specs that miss a required field or have a wrong type", function()
    local vf = require("vfioinit").new()
    local gen = dofile(GEN_FILE)
    local function without(field, value)
      local s = {}
      for k, v in pairs(gen) do s[k] = v end
      s[field] = value
      return s
    end
    assert.has_error(function() vf.register_generator("mkinitfs") end)
    assert.has_error(function() vf.register_generator(without("name", nil)) end)
    assert.has_error(function() vf.register_generator(without("command", 1)) end)
    assert.has_error(function() vf.register_generator(without("edits", nil)) end)
    assert.has_error(function() vf.register_generator(without("rebuild_argv", "mkinitfs")) end)
    assert.has_error(function() vf.register_generator(without("distro_default", "alpine")) end,
      "bad argument #1 to 'register_generator' (field 'distro_default': table expected, got string)")
    assert.has_error(function() vf.register_generator(without("early_modules", {})) end)
    assert.are.same({ "mkinitcpio", "dracut", "initramfs-tools", "booster" }, vf.generator_names())
  end)

  it("adds a fifth generator after the four built-ins, which stay exactly as they were", function()
    local plain = require("vfioinit").new()
    local before = {}
    for name, file in pairs(BUILTIN_FILES) do before[name] = shape(assert(plain.generator(name))) end

    local vf, gen = fresh()
    assert.are.same({ "mkinitcpio", "dracut", "initramfs-tools", "booster", "mkinitfs" }, vf.generator_names())
    assert.are.equal(gen, vf.generator("mkinitfs"))
    for name, file in pairs(BUILTIN_FILES) do
      local g = assert(vf.generator(name))
      -- the very module of lua/vfioinit/generators/, with the same fields and values
      assert.are.equal(require("vfioinit.generators." .. file), g)
      assert.are.same(before[name], shape(g))
    end
    -- another instance (and the CLI's) never sees it
    assert.are.same({ "mkinitcpio", "dracut", "initramfs-tools", "booster" }, plain.generator_names())
    local none, err = plain.generator("mkinitfs")
    assert.is_nil(none)
    assert.matches("unknown generator", err)
  end)

  it("lets detect find mkinitfs on Alpine (distribution default) and nowhere else", function()
    local vf = fresh()
    local r = alpine_root()
    local arch = h.make_root({ os = { ID = "arch" }, corpus = { ["/etc/mkinitcpio.conf"] = "mkinitcpio/mkinitcpio.conf" },
      exec = { "/usr/bin/mkinitcpio" } })
    finally(function() h.rm(r); h.rm(arch) end)
    local inv = assert(vf.detect({ root = r }))
    assert.are.equal("mkinitfs", inv.active)
    local g = inv.generators[5]
    assert.are.equal("mkinitfs", g.name)
    assert.is_true(g.installed and g.active)
    assert.are.equal("/sbin/mkinitfs", g.command)
    assert.are.same({ "/sbin/mkinitfs (command)", "/etc/mkinitfs/mkinitfs.conf (config)",
      "/etc/os-release (distribution default)" }, g.evidence)
    for i = 1, 4 do assert.is_false(inv.generators[i].installed) end

    inv = assert(vf.detect({ root = arch }))
    assert.are.equal("mkinitcpio", inv.active)
    assert.is_false(inv.generators[5].installed)
  end)
end)

describe("mkinitfs generator", function()
  it("plans the feature file and features=, with a diff patch(1) applies the same way", function()
    local vf = fresh()
    local r, r2 = alpine_root(), alpine_root()
    finally(function() h.rm(r); h.rm(r2); h.rm(r2 .. ".diff") end)
    local before = h.tree_hash(r)
    local plan = assert(vf.plan({ root = r }))
    assert.are.equal(before, h.tree_hash(r))
    assert.are.same({ "/etc/mkinitfs/features.d/vfio.modules", "/etc/mkinitfs/mkinitfs.conf" },
      { plan.changes[1].path, plan.changes[2].path })
    assert.are.equal("mkinitfs", plan.changes[1].generator)
    assert.is_nil(plan.changes[1].before)
    assert.are.equal("# VFIO modules for the initramfs (feature \"vfio\" of /etc/mkinitfs/mkinitfs.conf),\n"
      .. "# written by vfioinit; `vfioinit revert` removes this file.\n"
      .. "kernel/drivers/vfio/vfio.ko*\nkernel/drivers/vfio/vfio_iommu_type1.ko*\n"
      .. "kernel/drivers/vfio/pci/vfio-pci.ko*\n", plan.changes[1].after)
    assert.are.equal("# run mkinitfs -L for a list of available features\n"
      .. 'features="ata base ide scsi usb virtio ext4 vfio"\n', plan.changes[2].after)
    assert.matches("no early%-load list", table.concat(plan.warnings, "\n"))
    local d = plan:diff()
    assert.truthy(d:find("--- /dev/null\n+++ etc/mkinitfs/features.d/vfio.modules\n", 1, true), d)
    assert.truthy(d:find('-features="ata base ide scsi usb virtio ext4"\n+features="ata base ide scsi usb virtio ext4 vfio"\n', 1, true), d)
    h.writefile(r2 .. ".diff", d)
    local out, ok = h.sh("patch -s -p0 -d " .. h.q(r2) .. " < " .. h.q(r2 .. ".diff") .. " 2>&1")
    assert.is_true(ok, out)
    assert.is_true(plan:apply())
    for _, c in ipairs(plan.changes) do
      assert.are.equal(c.after, h.readfile(r .. c.path))
      assert.are.equal(c.after, h.readfile(r2 .. c.path))
    end
  end)

  it("applies once: a second plan is empty and a second apply changes nothing", function()
    local vf = fresh()
    local r = alpine_root()
    finally(function() h.rm(r) end)
    local rep = vf.update_initramfs({ root = r, rebuild = false })
    assert.is_true(rep.ok, rep.error)
    assert.are.same({ "mkinitfs" }, rep.generators)
    assert.are.equal(2, #rep.changes)
    local hash = h.tree_hash(r)
    local plan = assert(vf.plan({ root = r }))
    assert.are.equal(0, #plan.changes)
    assert.are.same({}, plan.warnings)
    rep = vf.update_initramfs({ root = r, rebuild = false })
    assert.is_true(rep.ok, rep.error)
    assert.are.equal(0, #rep.changes)
    assert.are.equal(hash, h.tree_hash(r))
  end)

  it("reverts byte for byte and removes the feature file it created", function()
    local vf = fresh()
    local r = alpine_root()
    finally(function() h.rm(r) end)
    local conf_before = h.readfile(r .. "/etc/mkinitfs/mkinitfs.conf")
    -- without a kernel there is no modules.dep to find an extra module's path in
    local p, err = vf.plan({ root = r, modules = { "kvmgt" } })
    assert.is_nil(p)
    assert.are.equal("/etc/mkinitfs/features.d/vfio.modules:0: module kvmgt: no path known (not in any kernel's modules.dep)", err)
    local rep = vf.update_initramfs({ root = r, rebuild = false, ids = { "10de:1b80" } })
    assert.is_true(rep.ok, rep.error)
    assert.truthy(h.readfile(r .. "/etc/mkinitfs/features.d/vfio.modules"))
    assert.truthy(h.readfile(r .. "/etc/modprobe.d/vfioinit.conf"))
    assert.is_true(vf.revert({ root = r }))
    assert.are.equal(conf_before, h.readfile(r .. "/etc/mkinitfs/mkinitfs.conf"))
    assert.is_nil(h.readfile(r .. "/etc/modprobe.d/vfioinit.conf"))
    assert.is_nil(h.readfile(r .. "/etc/mkinitfs/features.d/vfio.modules"))
    assert.is_nil(h.readfile(r .. "/var/lib/vfioinit/backups/manifest"))
  end)

  it("keeps a user's own vfio.modules and only appends what is missing", function()
    local vf = fresh()
    local mine = "# mine\nkernel/drivers/vfio/vfio.ko.gz\n/kernel/drivers/vfio/pci/\n"
    local r = alpine_root({ ["/etc/mkinitfs/features.d/vfio.modules"] = mine,
      ["/etc/mkinitfs/mkinitfs.conf"] = 'features="base vfio"\n' })
    finally(function() h.rm(r) end)
    local plan = assert(vf.plan({ root = r }))
    assert.are.equal(1, #plan.changes)
    -- a directory line names no module: vfio-pci is still listed by name
    assert.are.equal(mine .. "kernel/drivers/vfio/vfio_iommu_type1.ko*\nkernel/drivers/vfio/pci/vfio-pci.ko*\n",
      plan.changes[1].after)
  end)

  it("edits features= however it is written, and fails with file and line when it cannot", function()
    local gen = dofile(GEN_FILE)
    for _, case in ipairs({
      { "features=base\n", 'features="base vfio"\n' },
      { 'features=""\n', 'features="vfio"\n' },
      { "features='base usb'\n", "features='base usb vfio'\n" },
      { 'features="base"\nfeatures="$features usb" # more\n', 'features="base"\nfeatures="$features usb vfio" # more\n' },
      { 'features="base vfio"\n', 'features="base vfio"\n' },
      { 'disable_trigger=no\nfeatures="base"\ninitfscomp=zstd\n', 'disable_trigger=no\nfeatures="base vfio"\ninitfscomp=zstd\n' },
    }) do
      assert.are.equal(case[2], gen.edit_conf(case[1], "vfio"), case[1])
    end
    local vf = fresh()
    for _, case in ipairs({
      { "# nothing\ninitfscomp=gzip\n", "^/etc/mkinitfs/mkinitfs%.conf:1: no features= assignment" },
      { 'features="base\n', "^/etc/mkinitfs/mkinitfs%.conf:%d+: unterminated" },
    }) do
      local r = alpine_root({ ["/etc/mkinitfs/mkinitfs.conf"] = case[1] })
      local hash = h.tree_hash(r)
      local p, err = vf.plan({ root = r })
      assert.is_nil(p)
      assert.matches(case[2], err)
      assert.are.equal(hash, h.tree_hash(r))
      h.rm(r)
    end
  end)

  it("takes module paths from the kernel's modules.dep, and image names from the kernel flavor", function()
    local vf, gen = fresh()
    local r = alpine_root()
    finally(function() h.rm(r) end)
    local kver = h.install_kernel(r, "cloud")
    local plan = assert(vf.plan({ root = r, modules = { "irqbypass" } }))
    assert.are.equal("kernel/drivers/vfio/vfio.ko*\nkernel/drivers/vfio/vfio_iommu_type1.ko*\n"
      .. "kernel/drivers/vfio/pci/vfio-pci.ko*\nkernel/drivers/vfio/vfio_virqfd.ko*\nkernel/virt/lib/irqbypass.ko*\n",
      plan.changes[1].after:gsub("^#[^\n]*\n#[^\n]*\n", ""))
    local ctx = { dir = function(p) return core.fs.dir(r, p) end,
      read = function(p) return core.fs.read(r, p) end }
    assert.are.equal("/boot/initramfs-amd64", gen.image_path(ctx, kver))
    h.writefile(r .. "/usr/share/kernel/cloud/kernel.release", kver .. "\n")
    assert.are.equal("/boot/initramfs-cloud", gen.image_path(ctx, kver))
    assert.are.same({ { argv = { "mkinitfs", "-o", "/boot/initramfs-cloud", kver }, kernels = { kver } } },
      gen.rebuild_argv(ctx, { kver }))
    assert.are.equal("/boot/initramfs-vanilla", gen.image_path({}, "6.6"))
  end)
end)

describe("mkinitfs rebuild through a stand-in mkinitfs", function()
  local r, kver

  local function mounted() return h.sh("grep -F " .. h.q(r) .. " /proc/self/mountinfo") end
  local function argv_log() return h.readfile(r .. "/var/log/standin-mkinitfs.argv") or "" end
  local function image_names()
    local entries = assert(core.image.list(r, "/boot/initramfs-cloud"))
    local t = {}
    for _, e in ipairs(entries) do t[(e.name:gsub("^%./", ""))] = true end
    return t
  end

  before_each(function()
    r = alpine_root()
    if not (is_root and busybox) then return end
    h.sh("mkdir -p " .. h.q(r) .. "/bin " .. h.q(r) .. "/boot " .. h.q(r) .. "/tmp")
    h.sh("cp " .. h.q(busybox) .. " " .. h.q(r .. "/bin/busybox"))
    h.sh("cd " .. h.q(r .. "/bin") .. " && for a in " .. APPLETS .. "; do ln -s busybox $a; done")
    h.sh("cp " .. h.q(STANDIN) .. " " .. h.q(r .. "/sbin/mkinitfs"))
    kver = h.install_kernel(r, "cloud")
    h.writefile(r .. "/usr/share/kernel/cloud/kernel.release", kver .. "\n")
  end)

  after_each(function()
    local m = mounted()
    if m == "" then h.rm(r) end -- never rm -rf through a bind-mounted /dev
    assert.are.equal("", m)
  end)

  root_it("applies, rebuilds with mkinitfs' own command line and verifies the image", function()
    local vf = fresh()
    local logs = {}
    local rep = vf.update_initramfs({ root = r, log = function(m) logs[#logs + 1] = m end, timeout = 60 })
    assert.is_true(rep.ok, rep.error)
    assert.are.same({ "mkinitfs" }, rep.generators)
    assert.are.equal("-o /boot/initramfs-cloud " .. kver .. "\n", argv_log())
    assert.are.equal(1, #rep.rebuilt)
    assert.are.equal(1, #rep.verified)
    assert.is_true(rep.verified[1].ok)
    assert.are.equal("/boot/initramfs-cloud", rep.verified[1].image)
    local names = image_names()
    for _, m in ipairs({ "vfio.ko", "vfio_iommu_type1.ko", "vfio_virqfd.ko", "pci/vfio-pci.ko" }) do
      assert.is_true(names["lib/modules/" .. kver .. "/kernel/drivers/vfio/" .. m], m)
    end
    assert.matches("mkinitfs " .. kver:gsub("%-", "%%-") .. ": building", table.concat(logs, "\n"))
    -- configured and verified: a second run rebuilds nothing
    rep = vf.update_initramfs({ root = r })
    assert.is_true(rep.ok, rep.error)
    assert.are.same({}, rep.rebuilt)
    assert.are.equal("-o /boot/initramfs-cloud " .. kver .. "\n", argv_log())
  end)

  root_it("carries the modprobe.d file with device IDs, and verify sees an image built after revert lacks VFIO", function()
    local vf = fresh()
    local rep = vf.update_initramfs({ root = r, ids = { "1af4:1000" }, timeout = 60 })
    assert.is_true(rep.ok, rep.error)
    local entries, contents = assert(core.image.list(r, "/boot/initramfs-cloud", { ["etc/modprobe.d/vfioinit.conf"] = true }))
    assert.is_true(#entries > 0)
    assert.are.equal(h.readfile(r .. "/etc/modprobe.d/vfioinit.conf"), contents["etc/modprobe.d/vfioinit.conf"])
    assert.is_true(vf.revert({ root = r }))
    local rb = assert(vf.rebuild({ root = r, timeout = 60 }))
    assert.is_true(rb.ok)
    local v = assert(vf.verify({ root = r }))
    assert.are.equal(1, #v)
    assert.is_false(v[1].ok)
    assert.truthy(table.concat(v[1].missing, " "):find("vfio_pci", 1, true))
  end)

  root_it("keeps the previous image when mkinitfs fails", function()
    local vf = fresh()
    assert.is_true(vf.update_initramfs({ root = r, timeout = 60 }).ok)
    local good = h.readfile(r .. "/boot/initramfs-cloud")
    h.writefile(r .. "/etc/standin-mkinitfs.mode", "fail\n")
    local rep, err = vf.rebuild({ root = r, timeout = 60 })
    assert.is_nil(rep)
    assert.matches("mkinitfs: `mkinitfs %-o /boot/initramfs%-cloud .-` exited with status 1", err)
    assert.are.equal(good, h.readfile(r .. "/boot/initramfs-cloud"))
  end)
end)
