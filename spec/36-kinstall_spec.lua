-- kernel-install builds what boots (lua/vfioinit/boot/kinstall.lua): which kernels' boot chains
-- are kernel-install's (layout=uki: $BOOT_ROOT/EFI/Linux/<token>-<kver>.efi; layout=bls: the
-- entry <token>-<kver>.conf and the initrd copied beside its kernel), whether
-- `kernel-install add` runs instead of the generator's own command (the generator has a
-- kernel-install plugin) or after it, and the rebuild that keeps the previous file until the
-- new one verifies. Roots shaped like tools/mkroot kinstall-uki / kinstall-bls (real file
-- shapes: install.conf, entry-token, the entry 90-loaderentry.install writes), the real
-- Debian kernel's module tree; the commands are stand-ins in a busybox chroot (spec/93 runs
-- the real kernel-install).
local h = require "helpers"
local u = require "uki_helpers"
local core = require "vfioinit.core"
local context = require "vfioinit.context"
local bootchain = require "vfioinit.boot.chains"
local kinstall = require "vfioinit.boot.kinstall"

local q, sh = h.q, h.sh
local root_it = h.chroot_it(u.guard(it, pending), pending)

local function gen(name) return require("vfioinit.generators." .. name) end

-- Debian 12 with kernel-install: `layout` in /etc/kernel/install.conf, BOOT_ROOT=/boot/efi,
-- entry token "debian", the active generator's files; `extra` more files.
local function kinstall_root(layout, generator, extra, no_kinstall)
  local files = { ["/etc/os-release"] = "ID=debian\nVERSION_ID=12\n",
    ["/etc/kernel/install.conf"] = "layout=" .. layout .. "\nBOOT_ROOT=/boot/efi\n",
    ["/etc/kernel/entry-token"] = "debian\n", ["/etc/machine-id"] = "0123456789abcdef0123456789abcdef\n" }
  local exec = no_kinstall and {} or { "/usr/bin/kernel-install" }
  if generator == "dracut" then
    files["/etc/dracut.conf"] = ""
    exec[#exec + 1] = "/usr/bin/dracut"
    exec[#exec + 1] = "/usr/lib/kernel/install.d/50-dracut.install"
  else
    files["/etc/initramfs-tools/modules"] = ""
    exec[#exec + 1] = "/usr/sbin/update-initramfs"
    exec[#exec + 1] = "/etc/kernel/postinst.d/initramfs-tools"
  end
  for k, v in pairs(extra or {}) do files[k] = v end
  local r = h.make_root({ files = files, exec = exec })
  local kver = h.install_kernel(r, "cloud")
  h.writefile(r .. "/boot/vmlinuz-" .. kver, "kernel image\n")
  sh("mkdir -p " .. q(r .. "/boot/efi/EFI/Linux") .. " " .. q(r .. "/boot/efi/loader/entries"))
  return r, kver
end

-- The entry systemd 252's 90-loaderentry.install writes (BOOT_ROOT not a mount point in a root).
local function bls_entry(r, kver, name, options)
  local dir = "/boot/efi/debian/" .. kver
  h.writefile(r .. dir .. "/linux", "kernel image\n")
  h.writefile(r .. dir .. "/initrd.img-" .. kver, "old initrd\n")
  h.writefile(r .. "/boot/efi/loader/entries/" .. (name or ("debian-" .. kver .. ".conf")),
    ("title      Debian GNU/Linux 12 (bookworm)\nversion    %s\nsort-key   debian\noptions    %s\n"
      .. "linux      %s/linux\ninitrd     %s/initrd.img-%s\n"):format(kver, options or "console=ttyS0 root=/dev/vda", dir, dir, kver))
  return dir .. "/initrd.img-" .. kver
end

local function target(r, kver, g)
  local ctx = context.new({ root = r, kernels = { kver }, distro = { id = "debian" } })
  local chains = assert(bootchain.chains(ctx, { kver }, { g }))[kver]
  return kinstall.target(ctx, chains, g, kver), ctx
end

describe("kinstall.target: what kernel-install builds and how it is rebuilt", function()
  local r, kver
  after_each(function() if r then h.rm(r) end end)

  it("layout=uki with dracut's plugin: the UKI, rebuilt by `kernel-install add` instead of dracut", function()
    r, kver = kinstall_root("uki", "dracut")
    local t = assert(target(r, kver, gen("dracut")))
    assert.are.equal("uki", t.mode)
    assert.are.equal("/boot/efi/EFI/Linux/debian-" .. kver .. ".efi", t.path)
    assert.is_true(t.instead)
    assert.are.equal("/usr/lib/kernel/install.d/50-dracut.install", t.plugin)
    assert.are.same({ "kernel-install", "add", kver, "/boot/vmlinuz-" .. kver }, t.argv)
  end)

  it("a plugin masked in /etc/kernel/install.d (link to /dev/null, or empty) does not run: after, not instead", function()
    r, kver = kinstall_root("uki", "dracut")
    sh("mkdir -p " .. q(r .. "/etc/kernel/install.d") .. " && ln -s /dev/null " .. q(r .. "/etc/kernel/install.d/50-dracut.install"))
    local t = assert(target(r, kver, gen("dracut")))
    assert.is_false(t.instead)
    sh("rm " .. q(r .. "/etc/kernel/install.d/50-dracut.install") .. " && : > " .. q(r .. "/etc/kernel/install.d/50-dracut.install"))
    assert.is_false(assert(target(r, kver, gen("dracut"))).instead)
    -- an /etc plugin of the same name that is a real script runs instead of /usr/lib's
    h.writefile(r .. "/etc/kernel/install.d/50-dracut.install", "#!/bin/sh\n", 493)
    assert.is_true(assert(target(r, kver, gen("dracut"))).instead)
  end)

  it("layout=bls, initramfs-tools (no plugin): the entry's initrd copy, rebuilt after update-initramfs", function()
    r, kver = kinstall_root("bls", "initramfs-tools")
    local initrd = bls_entry(r, kver)
    local t = assert(target(r, kver, gen("initramfs_tools")))
    assert.are.equal("bls", t.mode)
    assert.are.equal(initrd, t.path)
    assert.is_false(t.instead)
    assert.are.equal("bls: debian-" .. kver .. ".conf", t.entry)
    -- boot counting: 90-loaderentry's `<token>-<kver>+3.conf` is the same entry
    sh("mv " .. q(r .. "/boot/efi/loader/entries/debian-" .. kver .. ".conf") .. " " .. q(r .. "/boot/efi/loader/entries/debian-" .. kver .. "+3.conf"))
    assert.are.equal(initrd, assert(target(r, kver, gen("initramfs_tools"))).path)
  end)

  it("is nil where kernel-install does not build what boots", function()
    -- not installed
    r, kver = kinstall_root("uki", "dracut", nil, true)
    assert.is_nil((target(r, kver, gen("dracut"))))
    h.rm(r)
    -- a hand-written BLS entry (not <token>-<kver>.conf): kernel-install would not rewrite it
    r, kver = kinstall_root("bls", "initramfs-tools")
    bls_entry(r, kver, "my-kernel.conf")
    assert.is_nil((target(r, kver, gen("initramfs_tools"))))
    h.rm(r)
    -- layout=other (Debian's default without systemd-boot): the generator's image boots
    r, kver = kinstall_root("other", "initramfs-tools")
    assert.is_nil((target(r, kver, gen("initramfs_tools"))))
    h.rm(r)
    -- dracut builds the UKI itself (uefi=yes) at the path that boots: its own command
    r, kver = kinstall_root("uki", "dracut", { ["/etc/dracut.conf.d/50-uki.conf"] = "uefi=yes\n" })
    sh("rm -rf " .. q(r .. "/boot/efi/EFI/Linux") .. " && mkdir -p " .. q(r .. "/efi/EFI/Linux"))
    h.writefile(r .. "/etc/kernel/install.conf", "layout=uki\nBOOT_ROOT=/efi\n")
    h.writefile(r .. "/etc/kernel/entry-token", "linux\n")
    h.writefile(r .. "/etc/dracut.conf.d/60-id.conf", "machine_id=no\n")
    assert.are.equal("/efi/EFI/Linux/linux-" .. kver .. ".efi", gen("dracut").image_path(context.new({ root = r }), kver))
    assert.is_nil((target(r, kver, gen("dracut"))))
  end)
end)

describe("kinstall.split and wrap: the rebuild jobs", function()
  local r, kver
  after_each(function() if r then h.rm(r) end end)

  -- the parts of a run split() uses
  local function fake_run(g)
    local ctx = context.new({ root = r, kernels = { kver }, distro = { id = "debian" } })
    local chains = assert(bootchain.chains(ctx, { kver }, { g }))
    return { ctx = ctx, boots = function() return true end, boot_chains = function(_, k) return chains[k] end }
  end

  it("instead: one job, kernel-install's, whose image is the UKI", function()
    r, kver = kinstall_root("uki", "dracut")
    local g = gen("dracut")
    local jobs = kinstall.split(fake_run(g), g, { kver })
    assert.are.equal(1, #jobs)
    local w = jobs[1].gen
    assert.are.equal("dracut", w.name)
    assert.are.equal(g, w.inner)
    assert.are.equal("/boot/efi/EFI/Linux/debian-" .. kver .. ".efi", w.image_path(nil, kver))
    assert.are.same({ { argv = { "kernel-install", "add", kver, "/boot/vmlinuz-" .. kver }, kernels = { kver } } },
      w.rebuild_argv(nil, { kver }))
    -- the rest is the generator's own (early-load list, image members)
    assert.are.equal(g.early_modules, w.early_modules)
  end)

  it("after: the generator's own job first, then kernel-install's", function()
    r, kver = kinstall_root("bls", "initramfs-tools")
    local initrd = bls_entry(r, kver)
    local g = gen("initramfs_tools")
    local jobs = kinstall.split(fake_run(g), g, { kver })
    assert.are.equal(2, #jobs)
    assert.are.equal(g, jobs[1].gen)
    assert.are.equal(initrd, jobs[2].gen.image_path(nil, kver))
    assert.are.equal("/boot/initrd.img-" .. kver, jobs[1].gen.image_path(context.new({ root = r, distro = { id = "debian" } }), kver))
  end)

  it("a generator whose images do not boot keeps its own job", function()
    r, kver = kinstall_root("uki", "dracut")
    local g = gen("dracut")
    local run = fake_run(g)
    run.boots = function() return false end
    assert.are.same({ { gen = g, kernels = { kver } } }, kinstall.split(run, g, { kver }))
  end)
end)

-- A UKI whose .initrd is what dracut builds for kver: with `vfio`, the real kernel's VFIO
-- modules and dracut's early-load list (etc/cmdline.d/20-force_drivers.conf).
local VFIO = { "vfio", "vfio_iommu_type1", "vfio_pci", "vfio_virqfd" }
local function dracut_uki(dir, kver, out, vfio)
  local files = { init = "#!/bin/sh\n" }
  if vfio then
    local kdir = h.real_kernel("cloud")
    for rel in sh("cd " .. q(kdir) .. " && find lib/modules/" .. kver .. "/kernel/drivers/vfio -name '*.ko*'"):gmatch("[^\n]+") do
      files["usr/" .. rel] = h.readfile(kdir .. "/" .. rel)
    end
    local pre = {}
    for _, m in ipairs(VFIO) do pre[#pre + 1] = "rd.driver.pre=" .. m end
    files["etc/cmdline.d/20-force_drivers.conf"] = table.concat(pre, " ") .. "\n"
  end
  return u.uki(dir, out, { cmdline = "root=/dev/vda", uname = kver,
    initrd = u.initramfs(dir, files, "zstd", vfio and "vfio" or "plain") })
end

-- busybox and the stand-in commands: `kernel-install` logs its arguments to /ki.args and
-- copies /new.efi to the UKI (layout=uki) or /boot/initrd.img-KVER into the entry (bls);
-- `update-initramfs` logs to /ui.args and copies /new.img to /boot/initrd.img-KVER.
local function stand_ins(r, kver, what)
  local busybox = h.static_busybox()
  sh(("mkdir -p %s/bin && cp %s %s/bin/busybox && cd %s/bin && for a in sh cp echo cat; do ln -sf busybox $a; done")
    :format(q(r), q(busybox or "/bin/true"), q(r), q(r)))
  h.writefile(r .. "/usr/bin/kernel-install", ("#!/bin/sh\necho \"$@\" >> /ki.args\ncp %s %s\n"):format(what.from, what.to), 493)
  h.writefile(r .. "/usr/sbin/update-initramfs",
    ("#!/bin/sh\necho \"$@\" >> /ui.args\ncp /new.img /boot/initrd.img-%s\n"):format(kver), 493)
end

describe("rebuilding what kernel-install builds (stand-ins in a busybox chroot)", function()
  root_it("layout=uki: `kernel-install add` alone; a new UKI without VFIO is replaced by the old one, one with VFIO stays", function()
    local r, kver = kinstall_root("uki", "dracut")
    local dir = h.tmpdir()
    finally(function() h.rm(r); h.rm(dir) end)
    local UKI = "/boot/efi/EFI/Linux/debian-" .. kver .. ".efi"
    stand_ins(r, kver, { from = "/new.efi", to = UKI })
    h.writefile(r .. "/usr/bin/dracut", "#!/bin/sh\necho \"$@\" >> /dracut.args\n", 493)
    dracut_uki(dir, kver, r .. UKI, false)
    local old = h.readfile(r .. UKI)
    dracut_uki(dir, kver, r .. "/new.efi", false)
    local code, out, err = h.cli("--root " .. q(r) .. " apply")
    assert.are.equal(1, code, out .. err)
    assert.are.equal("add " .. kver .. " /boot/vmlinuz-" .. kver .. "\n", h.readfile(r .. "/ki.args"))
    assert.is_nil(h.readfile(r .. "/dracut.args"), "dracut ran besides kernel-install")
    assert.truthy((out .. err):find("previous image " .. UKI .. " restored", 1, true), out .. err)
    assert.are.equal(old, h.readfile(r .. UKI))
    assert.is_nil(core.fs.stat(r, UKI .. ".vfioinit-prev"))

    dracut_uki(dir, kver, r .. "/new.efi", true)
    code, out, err = h.cli("--root " .. q(r) .. " rebuild")
    assert.are.equal(0, code, out .. err)
    assert.truthy(out:find("rebuilt " .. UKI .. " for " .. kver, 1, true), out)
    assert.are.equal(h.readfile(r .. "/new.efi"), h.readfile(r .. UKI))
    assert.is_nil(core.fs.stat(r, UKI .. ".vfioinit-prev"))
    code, out, err = h.cli("--root " .. q(r) .. " verify")
    assert.are.equal(0, code, out .. err)
    assert.truthy(out:find("ok   " .. UKI, 1, true), out)
  end)

  root_it("layout=bls: update-initramfs, then `kernel-install add` copies the image into the entry", function()
    local r, kver = kinstall_root("bls", "initramfs-tools")
    local dir = h.tmpdir()
    finally(function() h.rm(r); h.rm(dir) end)
    local initrd = bls_entry(r, kver)
    stand_ins(r, kver, { from = "/boot/initrd.img-" .. kver, to = initrd })
    local img = u.initramfs(dir, { init = "#!/bin/sh\n" }, "zstd", "plain")
    sh("cp " .. q(img) .. " " .. q(r .. "/new.img") .. " && cp " .. q(img) .. " " .. q(r .. "/boot/initrd.img-" .. kver)
      .. " && cp " .. q(img) .. " " .. q(r .. initrd))
    local code, out, err = h.cli("--root " .. q(r) .. " apply")
    -- update-initramfs ran (its image lacks VFIO: put back, nothing copied into the entry)
    assert.are.equal(1, code, out .. err)
    assert.are.equal("-u -k " .. kver .. "\n", h.readfile(r .. "/ui.args"))
    assert.is_nil(h.readfile(r .. "/ki.args"), "kernel-install copied an image that does not verify")
    -- an image with the modules and initramfs-tools' early-load list (conf/modules)
    local kdir = h.real_kernel("cloud")
    local files = { init = "#!/bin/sh\n", ["conf/modules"] = table.concat(VFIO, "\n") .. "\n" }
    for rel in sh("cd " .. q(kdir) .. " && find lib/modules/" .. kver .. "/kernel/drivers/vfio -name '*.ko*'"):gmatch("[^\n]+") do
      files["usr/" .. rel] = h.readfile(kdir .. "/" .. rel)
    end
    sh("cp " .. q(u.initramfs(dir, files, "zstd", "vfio")) .. " " .. q(r .. "/new.img"))
    code, out, err = h.cli("--root " .. q(r) .. " rebuild")
    assert.are.equal(0, code, out .. err)
    assert.are.equal("-u -k " .. kver .. "\n-u -k " .. kver .. "\n", h.readfile(r .. "/ui.args"))
    assert.are.equal("add " .. kver .. " /boot/vmlinuz-" .. kver .. "\n", h.readfile(r .. "/ki.args"))
    assert.truthy(out:find("rebuilt /boot/initrd.img-" .. kver .. " for " .. kver, 1, true), out)
    assert.truthy(out:find("rebuilt " .. initrd .. " for " .. kver, 1, true), out)
    assert.are.equal(h.readfile(r .. "/new.img"), h.readfile(r .. initrd))
    assert.is_nil(core.fs.stat(r, initrd .. ".vfioinit-prev"))
  end)
end)

describe("--cmdline for dracut's UKIs (boot/loaders/dracut_cmdline.lua): kernel_cmdline, not /etc/kernel/cmdline", function()
  local bl = require "vfioinit.boot.cmdline"
  local target_mod = require "vfioinit.boot.loaders.dracut_cmdline"
  local words = require "vfioinit.boot.cmdline.words"
  local FILE = "/etc/dracut.conf.d/99-vfioinit-cmdline.conf"
  local CONF = "/etc/dracut.conf.d/50-cmdline.conf"
  local r
  after_each(function() if r then h.rm(r); r = nil end end)

  local function uki_root(extra)
    local files = { ["/etc/os-release"] = "ID=debian\nVERSION_ID=12\n", ["/etc/dracut.conf"] = "",
      ["/etc/kernel/install.conf"] = "layout=uki\nuki_generator=dracut\nBOOT_ROOT=/boot/efi\n",
      [CONF] = 'kernel_cmdline="console=ttyS0 intel_iommu=on root=/dev/vda"\n' }
    for k, v in pairs(extra or {}) do files[k] = v or nil end
    r = h.make_root({ files = files, exec = { "/usr/bin/dracut", "/usr/bin/kernel-install" } })
    return context.new({ root = r })
  end
  local wants = words.wants({ "1af4:1000" })

  it("is chosen for kernel-install's dracut UKIs and dracut's own uefi=yes, instead of creating /etc/kernel/cmdline", function()
    local ctx = uki_root()
    assert.is_true(target_mod.detect(ctx))
    local names = {}
    for _, t in ipairs(assert(bl.select(ctx))) do names[#names + 1] = t.name end
    assert.are.same({ "dracut_cmdline" }, names)
    -- an existing /etc/kernel/cmdline is kept in step too
    h.writefile(r .. "/etc/kernel/cmdline", "root=/dev/vda\n")
    names = {}
    for _, t in ipairs(assert(bl.select(ctx))) do names[#names + 1] = t.name end
    assert.are.same({ "dracut_cmdline", "kernel_cmdline" }, names)
    -- ukify builds the UKI (it reads /etc/kernel/cmdline): not dracut's line
    h.writefile(r .. "/etc/kernel/install.conf", "layout=uki\nuki_generator=ukify\n")
    assert.is_false(target_mod.detect(ctx))
    -- dracut's own UKIs
    h.writefile(r .. "/etc/dracut.conf.d/40-uki.conf", "uefi=yes\n")
    assert.is_true(target_mod.detect(ctx))
    h.rm(r)
    ctx = uki_root({ ["/etc/kernel/install.conf"] = "layout=uki\nuki_generator=dracut\n" })
    h.sh("rm " .. q(r .. "/usr/bin/dracut"))
    assert.is_false(target_mod.detect(ctx))
  end)

  it("adds the missing words in a drop-in sourced after dracut's line; nothing when they are there", function()
    local ctx = uki_root()
    local changes = assert(target_mod.edits(ctx, wants))
    assert.are.same({ { path = FILE, before = nil,
      after = '# vfioinit (--cmdline): the kernel command line of the UKIs dracut builds\nkernel_cmdline+=" iommu=pt vfio-pci.ids=1af4:1000 "\n' } },
      changes)
    h.writefile(r .. FILE, changes[1].after)
    assert.are.same({}, assert(target_mod.edits(ctx, wants)))
    -- the user put them in dracut's line themselves: our drop-in goes
    h.writefile(r .. CONF, 'kernel_cmdline="console=ttyS0 intel_iommu=on iommu=pt vfio-pci.ids=1af4:1000 root=/dev/vda"\n')
    assert.are.same({ { path = FILE, before = changes[1].after, after = nil } }, assert(target_mod.edits(ctx, wants)))
  end)

  it("refuses, naming the file and line, what it cannot add to without changing the line dracut builds", function()
    -- no kernel_cmdline: dracut's host-only line (root=) would be replaced
    local ctx = uki_root({ [CONF] = false })
    local ok, err = target_mod.edits(ctx, wants)
    assert.is_nil(ok)
    assert.truthy(err:find("^/etc/dracut.conf.d/99%-vfioinit%-cmdline.conf: .*no dracut configuration sets"), err)
    h.rm(r)
    -- a later file sets it again: our words would be dropped
    ctx = uki_root({ ["/etc/dracut.conf.d/zz-late.conf"] = '# late\nkernel_cmdline="root=/dev/vda"\n' })
    ok, err = target_mod.edits(ctx, wants)
    assert.is_nil(ok)
    assert.truthy(err:find("^/etc/dracut.conf.d/zz%-late.conf:2: sets kernel_cmdline after"), err)
    h.rm(r)
    -- other ids in dracut's line: not merged into the user's setting
    ctx = uki_root({ [CONF] = 'kernel_cmdline="root=/dev/vda vfio-pci.ids=10de:1b80"\n' })
    ok, err = target_mod.edits(ctx, wants)
    assert.is_nil(ok)
    assert.truthy(err:find("^/etc/dracut.conf.d/50%-cmdline.conf:1: kernel_cmdline has vfio%-pci.ids"), err)
  end)
end)

describe("after revert: kernel-install rewrites BLS entries, not UKIs (an image: `vfioinit rebuild`)", function()
  local r, kver
  after_each(function() if r then h.rm(r) end end)

  it("kinstall.argvs", function()
    r, kver = kinstall_root("bls", "initramfs-tools")
    bls_entry(r, kver)
    local ctx = context.new({ root = r, distro = { id = "debian" } })
    assert.are.same({ { "kernel-install", "add", kver, "/boot/vmlinuz-" .. kver } }, kinstall.argvs(ctx, { kver }))
    h.rm(r)
    r, kver = kinstall_root("uki", "dracut")
    assert.are.same({}, kinstall.argvs(context.new({ root = r, distro = { id = "debian" } }), { kver }))
  end)
end)
