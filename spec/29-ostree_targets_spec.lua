-- Image-based systems whose tools are not in Debian: rpm-ostree and bootc.
--  * rpm-ostree (stand-in recording its argv, argument rules from rpm-ostree(1): kargs
--    --append-if-missing/--delete-if-present/--replace=KEY=VALUE=NEWVALUE, initramfs-etc
--    --track/--untrack, initramfs --enable/--disable), on a root that is the booted deployment
--    (its "/" bound on its deployment's directory, as ostree-prepare-root leaves it): the
--    command line through `rpm-ostree kargs`, early load through `initramfs-etc` plus
--    rd.driver.pre; revert runs exactly the inverse.
--  * bootc image build root (tools/mkroot ostree + a stand-in bootc): kargs.d TOML and the image's
--    initramfs rebuilt with the real dracut 059 as the image's build does; with VFIOINIT_REAL=1
--    QEMU boots that kernel and initramfs with the TOML's kargs: vfio-pci holds the device.
local h = require "helpers"

local CSUM = ("12"):rep(32)
local BOOTCSUM = ("34"):rep(32)
local APPLETS = "sh cat echo printf mkdir ls head mv rm test [ cpio"
local root_it = h.chroot_it(it, pending)
local real = os.getenv("VFIOINIT_REAL") == "1"

local function sh_ok(cmd) local out, ok = h.sh(cmd .. " 2>&1"); assert(ok, out); return out end

-- A Fedora Silverblue-like booted deployment as root: its tree at root, the sysroot at /sysroot,
-- /run/ostree-booted, rpm-ostree (the stand-in) and a base initramfs carrying the VFIO modules
-- without forcing them (so: initramfs-etc).
local function booted_root()
  local root = h.tmpdir()
  local dep = "/sysroot/ostree/deploy/fedora/deploy/" .. CSUM .. ".0"
  sh_ok(("mkdir -p %s/usr/lib %s/usr/bin %s/bin %s/etc %s/run %s"):format(h.q(root), h.q(root), h.q(root), h.q(root),
    h.q(root), h.q(root .. dep)))
  sh_ok(("cd %s && ln -s usr/lib lib && ln -s sysroot/ostree ostree"):format(h.q(root)))
  local kver = h.install_kernel(root, "cloud")
  h.writefile(root .. "/usr/lib/os-release", "ID=fedora\nVERSION_ID=40\n")
  h.writefile(root .. "/etc/dracut.conf", "")
  h.writefile(root .. "/usr/bin/dracut", "#!/bin/sh\nexit 0\n", 493)
  h.writefile(root .. "/run/ostree-booted", "")
  sh_ok("cp " .. h.q(h.static_busybox()) .. " " .. h.q(root .. "/bin/busybox") .. " && cd " .. h.q(root .. "/bin")
    .. " && for a in " .. APPLETS .. "; do ln -s busybox $a; done")
  sh_ok("cp " .. h.q(h.project .. "/spec/fixtures/standin-rpm-ostree") .. " " .. h.q(root .. "/usr/bin/rpm-ostree"))
  local s = root .. "/sysroot"
  sh_ok(("mkdir -p %s/ostree/boot.1.1/fedora/%s && ln -s boot.1.1 %s/ostree/boot.1 && ln -s ../../../deploy/fedora/deploy/%s.0 %s/ostree/boot.1.1/fedora/%s/0")
    :format(h.q(s), BOOTCSUM, h.q(s), CSUM, h.q(s), BOOTCSUM))
  local bdir = "/ostree/fedora-" .. BOOTCSUM
  -- the base image: the kernel's VFIO modules, nothing forcing them
  local d = h.tmpdir()
  local rel = "/usr/lib/modules/" .. kver .. "/kernel/drivers/vfio"
  sh_ok(("mkdir -p %s && cp -r %s %s && mkdir -p %s && cd %s && find . | cpio -o -H newc --quiet > %s"):format(
    h.q(d .. rel:match("^(.*)/vfio$")), h.q(root .. rel), h.q(d .. rel), h.q(root .. "/boot" .. bdir), h.q(d),
    h.q(root .. "/boot" .. bdir .. "/initramfs-" .. kver .. ".img")))
  h.rm(d)
  h.writefile(root .. "/boot/loader/entries/ostree-1-fedora.conf", ("title Fedora Linux 40 (ostree:0)\nversion 1\n"
    .. "options root=UUID=1 rw rhgb quiet ostree=/ostree/boot.1/fedora/%s/0\nlinux %s/vmlinuz-%s\ninitrd %s/initramfs-%s.img\n")
    :format(BOOTCSUM, bdir, kver, bdir, kver))
  return root, dep
end

-- The CLI on root with its deployment bound on root (in a mount namespace of its own).
local function booted_cli(root, dep, args)
  local err = os.tmpname()
  local out, _, code = h.sh("unshare -m sh -c " .. h.q("mount --bind " .. h.q(root) .. " " .. h.q(root .. dep) .. " && "
    .. h.BIN .. " --root " .. h.q(root) .. " " .. args) .. " 2>" .. h.q(err))
  local e = h.readfile(err) or ""
  os.remove(err)
  return code, out, e
end

describe("rpm-ostree (stand-in)", function()
  root_it("--cmdline --ids: rpm-ostree kargs and initramfs-etc with rd.driver.pre; verify reads both initrds; revert runs the inverse", function()
    local root, dep = booted_root()
    finally(function() h.rm(root) end)
    local entry = root .. "/boot/loader/entries/ostree-1-fedora.conf"
    local original = h.readfile(entry)
    local code, out, err = booted_cli(root, dep, "--cmdline --ids 1af4:1000 --json apply")
    assert.are.equal(0, code, err .. out)
    local argv = h.readfile(root .. "/var/log/standin-rpm-ostree.argv")
    assert.are.equal(table.concat({
      "kargs --append-if-missing=intel_iommu=on --append-if-missing=iommu=pt --append-if-missing=vfio-pci.ids=1af4:1000",
      "initramfs-etc --track=/etc/modprobe.d/vfioinit.conf",
      "kargs --append-if-missing=rd.driver.pre=vfio,vfio_iommu_type1,vfio_pci,vfio_virqfd", "" }, "\n"), argv)
    -- what boots: the base image, then the /etc overlay carrying the modprobe.d file
    assert.are.equal("True 2", h.pyjson(out, "'%s %d' % (d['verified'][0]['ok'], len(d['verified'][0]['images']))"))
    assert.are.equal("True", h.pyjson(out, "all(e['ok'] for e in d['cmdline'])"))
    -- a second apply changes nothing and runs nothing
    code, _, err = booted_cli(root, dep, "--cmdline --ids 1af4:1000 apply")
    assert.are.equal(0, code, err)
    assert.are.equal(argv, h.readfile(root .. "/var/log/standin-rpm-ostree.argv"))
    code, _, err = booted_cli(root, dep, "revert")
    assert.are.equal(0, code, err)
    local all = h.readfile(root .. "/var/log/standin-rpm-ostree.argv")
    assert.are.equal(table.concat({
      "kargs --delete-if-present=vfio-pci.ids=1af4:1000 --delete-if-present=iommu=pt --delete-if-present=intel_iommu=on",
      "initramfs-etc --untrack=/etc/modprobe.d/vfioinit.conf",
      "kargs --delete-if-present=rd.driver.pre=vfio,vfio_iommu_type1,vfio_pci,vfio_virqfd", "" }, "\n"), all:sub(#argv + 1))
    assert.are.equal(original, h.readfile(entry))
  end)

  it("a root that is not the running system: rpm-ostree is refused, nothing written", function()
    local root = booted_root()
    finally(function() h.rm(root) end)
    h.sh("rm -f " .. h.q(root .. "/run/ostree-booted"))
    local before = h.tree_hash(root)
    local code, _, err = h.cli("--root " .. h.q(root) .. " --ids 1af4:1000 apply")
    assert.are.equal(1, code)
    assert.matches("rpm-ostree changes the running system only", err, 1, true)
    assert.are.equal(before, h.tree_hash(root))
  end)
end)

describe("bootc image build root", function()
  if not real then
    pending("bootc image: real dracut rebuild and QEMU boot (set VFIOINIT_REAL=1; needs root and tools/mkroot ostree)")
    return
  end

  it("kargs.d TOML, the image's initramfs rebuilt by its dracut; booted with the TOML's kargs → vfio-pci; revert", function()
    local root, kver, _, cleanup = h.clone_real("ostree")
    finally(cleanup)
    h.writefile(root .. "/usr/bin/bootc", "#!/bin/sh\necho 'bootc: stand-in' >&2\nexit 1\n", 493)
    local img = root .. "/usr/lib/modules/" .. kver .. "/initramfs.img"
    local code, out, err = h.cli("--root " .. h.q(root) .. " --cmdline --ids 1af4:1000 --json apply")
    assert.are.equal(0, code, err .. out)
    -- the image vfioinit checked is the one it rebuilt, at the image's own place
    assert.are.equal("True /usr/lib/modules/" .. kver .. "/initramfs.img",
      h.pyjson(out, "'%s %s' % (d['verified'][0]['ok'], d['verified'][0]['image'])"))
    local toml = assert(h.readfile(root .. "/usr/lib/bootc/kargs.d/vfioinit.toml"))
    -- the TOML's strings (basic strings without escapes: a JSON array too)
    local kargs = h.pyjson(toml:match("kargs = (%b[])"), "' '.join(d)")
    assert.are.equal("intel_iommu=on iommu=pt vfio-pci.ids=1af4:1000", kargs, toml)
    local boot
    boot, _ = h.sh(("env -u LD_PRELOAD tools/boot-probe --expect vfio-pci --timeout 900 --append-verbatim %s %s %s dracut 2>&1")
      :format(h.q(kargs .. " console=ttyS0 root=/dev/vda rd.break=initqueue rd.shell SYSTEMD_SULOGIN_FORCE=1 no_timer_check"),
        h.q(root .. "/usr/lib/modules/" .. kver .. "/vmlinuz"), h.q(img)))
    io.stderr:write("\n[bootc image]\n" .. (boot:match("RESULT[^\n]*") or boot) .. "\n")
    assert.matches("RESULT device=1af4:1000 bdf=%S+ driver=vfio%-pci", boot)
    code, _, err = h.cli("--root " .. h.q(root) .. " revert")
    assert.are.equal(0, code, err)
    assert.is_nil(h.readfile(root .. "/usr/lib/bootc/kargs.d/vfioinit.toml"))
  end)
end)
