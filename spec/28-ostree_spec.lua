-- vfioinit.ostree: ostree roots recognised (a bare sysroot, a booted deployment, a bootc image
-- build root), their deployments read from the BLS entries ostree writes (`ostree=` naming
-- /ostree/boot.N/OS/BOOTCSUM/SERIAL, a symlink chain to /ostree/deploy/OS/deploy/CSUM.SERIAL,
-- as ostree 2022.7 lays it out: tools/ostree-sysroot builds the real one spec/89 boots), and the
-- early-load modes chosen from what the deployment has. The images are real newc archives of
-- the real kernel's modules; what boots is every initrd of the default entry, in order.
local h = require "helpers"

local CSUM = ("ab"):rep(32)
local BOOTCSUM = ("cd"):rep(32)
local APPLETS = "sh cat echo printf mkdir ls head mv rm test ["
local root_it = h.chroot_it(it, pending)

local function sh_ok(cmd) local out, ok = h.sh(cmd .. " 2>&1"); assert(ok, out); return out end

-- A newc image at `path` holding `files` ({name=content}) and, with `kver`, the VFIO modules
-- of the deployment tree `tree`.
local function cpio(path, files, tree, kver)
  local d = h.tmpdir()
  for name, text in pairs(files or {}) do h.writefile(d .. "/" .. name, text) end
  if kver then
    local rel = "/usr/lib/modules/" .. kver .. "/kernel/drivers/vfio"
    sh_ok(("mkdir -p %s && cp -r %s %s"):format(h.q(d .. rel:match("^(.*)/vfio$")), h.q(tree .. rel), h.q(d .. rel)))
  end
  sh_ok(("mkdir -p %s && cd %s && find . | cpio -o -H newc --quiet > %s"):format(h.q(path:match("^(.*)/")), h.q(d), h.q(path)))
  h.rm(d)
end

local FORCED = "etc/cmdline.d/20-force_drivers.conf"
-- Bazzite's line, plus vfio_virqfd: Debian's 6.1 kernel has it as a module of its own (6.2 folded it into vfio)
local BAKED = 'force_drivers+=" vfio vfio_iommu_type1 vfio-pci vfio_virqfd "\n'

-- A bare sysroot (as tools/ostree-sysroot makes it) with one deployment of Fedora and the real
-- kernel; opts: base = files of its initramfs, modules = whether it carries the VFIO modules,
-- overlay = files of a second initrd of the entry, baked = a /usr/lib/dracut/dracut.conf.d
-- file, tools = commands of the deployment ({"dracut", "ostree"}: stubs; ostree's names
-- --overlay-initrd), live = the root is the deployment itself (/sysroot holds the sysroot).
local function sysroot(opts)
  local root = h.tmpdir()
  local s = opts.live and "/sysroot" or ""
  local dep = s .. "/ostree/deploy/fedora/deploy/" .. CSUM .. ".0"
  local tree = opts.live and root or root .. dep
  sh_ok(("mkdir -p %s/usr/lib %s/usr/bin %s/etc %s/sysroot %s"):format(h.q(tree), h.q(tree), h.q(tree), h.q(tree),
    h.q(root .. dep)))
  sh_ok(("ln -s usr/lib %s/lib"):format(h.q(tree)))
  -- a deployment's /ostree: the sysroot's, through /sysroot (a dangling link in a bare sysroot's tree)
  sh_ok(("ln -s sysroot/ostree %s/ostree"):format(h.q(tree)))
  local kver = h.install_kernel(tree, "cloud")
  h.writefile(tree .. "/usr/lib/os-release", "ID=fedora\nVERSION_ID=40\n")
  h.writefile(tree .. "/etc/dracut.conf", "")
  if opts.baked then h.writefile(tree .. "/usr/lib/dracut/dracut.conf.d/50-vfio.conf", opts.baked) end
  for _, t in ipairs(opts.tools or {}) do
    h.writefile(tree .. "/usr/bin/" .. t, "#!/bin/sh\n# --overlay-initrd\nexit 0\n", 493)
  end
  sh_ok(("mkdir -p %s/ostree/boot.1.1/fedora/%s && ln -s boot.1.1 %s/ostree/boot.1 && ln -s ../../../deploy/fedora/deploy/%s.0 %s/ostree/boot.1.1/fedora/%s/0")
    :format(h.q(root .. s), BOOTCSUM, h.q(root .. s), CSUM, h.q(root .. s), BOOTCSUM))
  h.writefile(root .. dep .. ".origin", "[origin]\nrefspec=fedora:fedora/40/x86_64/silverblue\n")
  local bdir = "/ostree/fedora-" .. BOOTCSUM
  local entry = ("title Fedora Linux 40 (ostree:0)\nversion 1\noptions root=UUID=1 rw quiet ostree=/ostree/boot.1/fedora/%s/0\n"
    .. "linux %s/vmlinuz-%s\ninitrd %s/initramfs-%s.img\n"):format(BOOTCSUM, bdir, kver, bdir, kver)
  cpio(root .. "/boot" .. bdir .. "/initramfs-" .. kver .. ".img", opts.base, tree, opts.modules and kver)
  if opts.overlay then
    local o = "/ostree/initramfs-overlays/" .. ("ef"):rep(32) .. ".img"
    cpio(root .. "/boot" .. o, opts.overlay, tree, kver)
    entry = entry .. "initrd " .. o .. "\n"
  end
  h.writefile(root .. "/boot/loader/entries/ostree-1-fedora.conf", entry)
  return root, kver, tree, dep
end

local function json_status(root)
  local code, out, err = h.cli("--root " .. h.q(root) .. " --json status")
  assert.are.equal(0, code, err)
  return out
end

describe("ostree roots: detection, deployments, status", function()
  it("a bare sysroot: its default deployment, the chain its BLS entry boots, plain ostree", function()
    local root = sysroot({ tools = { "dracut", "ostree" } })
    finally(function() h.rm(root) end)
    local out = json_status(root)
    assert.are.equal("deployed", h.pyjson(out, "d['ostree']['kind']"))
    assert.are.equal("ostree", h.pyjson(out, "d['ostree']['manager']"))
    assert.are.equal("overlay", h.pyjson(out, "d['ostree']['mode']"))
    assert.are.equal(CSUM .. " 0 True", h.pyjson(out, "' '.join(str(x) for x in (d['ostree']['default']['checksum'], "
      .. "d['ostree']['default']['serial'], d['ostree']['default']['default']))"))
    assert.are.equal("None", h.pyjson(out, "d['ostree'].get('booted')"))
    -- the deployment's files are the root's: its kernel, dracut
    assert.are.equal("1", h.pyjson(out, "len(d['kernels'])"))
    assert.are.equal(root, h.pyjson(out, "d['root']"))
  end)

  it("a root that is the deployment (/sysroot): the one root's / is, when it says it runs, is booted", function()
    local root = sysroot({ live = true, tools = { "dracut", "ostree" } })
    finally(function() h.rm(root) end)
    h.writefile(root .. "/run/ostree-booted", "")
    local dep = root .. "/sysroot/ostree/deploy/fedora/deploy/" .. CSUM .. ".0"
    -- booted: root's "/" is the deployment's directory (a bind mount, as ostree-prepare-root makes it)
    local out = h.sh("unshare -m sh -c " .. h.q("mount --bind " .. h.q(root) .. " " .. h.q(dep) .. " && "
      .. h.BIN .. " --root " .. h.q(root) .. " --json status"))
    assert.are.equal("True True", h.pyjson(out, "'%s %s' % (d['ostree']['booted']['booted'], d['ostree']['default']['booted'])"))
    -- not bound: nothing says which one runs
    assert.are.equal("None", h.pyjson(json_status(root), "d['ostree'].get('booted')"))
  end)

  it("a bootc image build root; a deployment's own tree (/usr/etc) is refused", function()
    local root = h.make_root({ os = { ID = "fedora" }, files = { ["/usr/lib/bootc/install/00.toml"] = "" },
      exec = { "/usr/bin/dracut" } })
    finally(function() h.rm(root) end)
    sh_ok("mkdir -p " .. h.q(root .. "/usr/lib") .. " && ln -s usr/lib " .. h.q(root .. "/lib"))
    local kver = h.install_kernel(root, "cloud")
    h.writefile(root .. "/usr/lib/modules/" .. kver .. "/vmlinuz", "kernel")
    -- Fedora's kernel-core puts vmlinuz there on every system: without the image's initramfs
    -- beside it, a root with bootc installed is no image tree
    assert.are.equal("None", h.pyjson(json_status(root), "d.get('ostree')"))
    cpio(root .. "/usr/lib/modules/" .. kver .. "/initramfs.img", { ["etc/x"] = "" })
    local out = json_status(root)
    assert.are.equal("image bootc image", h.pyjson(out, "'%s %s %s' % (d['ostree']['kind'], d['ostree']['manager'], d['ostree']['mode'])"))
    sh_ok("mkdir -p " .. h.q(root .. "/usr/etc"))
    local code, _, err = h.cli("--root " .. h.q(root) .. " status")
    assert.are.equal(1, code)
    assert.matches("an ostree deployment's tree %(/usr/etc%): give vfioinit its sysroot", err)
  end)
end)

describe("ostree: early load", function()
  it("verify reads every initrd of the default entry: the base image, then the overlay", function()
    local root, kver = sysroot({ tools = { "dracut", "ostree" },
      overlay = { [FORCED] = "rd.driver.pre=vfio\nrd.driver.pre=vfio_iommu_type1\nrd.driver.pre=vfio_pci\nrd.driver.pre=vfio_virqfd\n" } })
    finally(function() h.rm(root) end)
    local code, out = h.cli("--root " .. h.q(root) .. " --json verify")
    assert.are.equal(0, code, out)
    assert.are.equal("True 2", h.pyjson(out, "'%s %d' % (d['images'][0]['ok'], len(d['images'][0]['images']))"))
    -- the same entry without its overlay: the base image alone lacks them
    local entry = root .. "/boot/loader/entries/ostree-1-fedora.conf"
    h.writefile(entry, (h.readfile(entry):gsub("initrd /ostree/initramfs%-overlays/[^\n]*\n", "")))
    code, out = h.cli("--root " .. h.q(root) .. " --json verify")
    assert.are.equal(2, code, out)
    assert.matches("vfio_pci", h.pyjson(out, "d['images'][0]['missing']"))
    assert.is_truthy(kver)
  end)

  it("forced by the image's own dracut configuration: nothing to change; ids need --cmdline", function()
    local forced = "rd.driver.pre=vfio\nrd.driver.pre=vfio_iommu_type1\nrd.driver.pre=vfio_pci\nrd.driver.pre=vfio_virqfd\n"
    local root = sysroot({ tools = { "dracut", "ostree" }, modules = true, base = { [FORCED] = forced },
      baked = BAKED })
    finally(function() h.rm(root) end)
    local before = h.tree_hash(root)
    local code, out, err = h.cli("--root " .. h.q(root) .. " --json plan")
    assert.are.equal(0, code, err)
    assert.are.equal("False", h.pyjson(out, "d['pending']"))
    assert.are.equal("forced", h.pyjson(json_status(root), "d['ostree']['mode']"))
    code, _, err = h.cli("--root " .. h.q(root) .. " --ids 1af4:1000 apply")
    assert.are.equal(1, code)
    assert.matches("/usr/lib/dracut/dracut.conf.d: this image's initramfs force%-loads vfio%-pci.-run again with %-%-cmdline", err)
    assert.are.equal(before, h.tree_hash(root))
  end)

  it("a tool the mode needs and the deployment lacks is named; nothing is written", function()
    for _, case in ipairs({ { tools = { "ostree" }, want = "needs dracut" }, { tools = { "dracut" }, want = "needs ostree" } }) do
      local root = sysroot({ tools = case.tools })
      local before = h.tree_hash(root)
      local code, _, err = h.cli("--root " .. h.q(root) .. " --ids 1af4:1000 apply")
      local after = h.tree_hash(root)
      h.rm(root)
      assert.are.equal(1, code)
      assert.matches(case.want, err, 1, true)
      assert.are.equal(before, after)
    end
  end)
end)

describe("ostree: the command line of a bare sysroot (ostree admin instutil set-kargs)", function()
  root_it("apply gives the default entry vfioinit's words, revert takes exactly them away (stand-in ostree, sysroot bound on /sysroot)", function()
    local forced = "rd.driver.pre=vfio\nrd.driver.pre=vfio_iommu_type1\nrd.driver.pre=vfio_pci\nrd.driver.pre=vfio_virqfd\n"
    local root, _, tree = sysroot({ tools = { "dracut" }, modules = true, base = { [FORCED] = forced },
      baked = BAKED })
    finally(function() h.rm(root) end)
    sh_ok("mkdir -p " .. h.q(tree .. "/bin") .. " && cp " .. h.q(h.static_busybox()) .. " " .. h.q(tree .. "/bin/busybox")
      .. " && cd " .. h.q(tree .. "/bin") .. " && for a in " .. APPLETS .. "; do ln -s busybox $a; done")
    sh_ok("cp " .. h.q(h.project .. "/spec/fixtures/standin-ostree") .. " " .. h.q(tree .. "/usr/bin/ostree"))
    local entry = root .. "/boot/loader/entries/ostree-1-fedora.conf"
    local original = h.readfile(entry)
    local code, out, err = h.cli("--root " .. h.q(root) .. " --cmdline --ids 1af4:1000 --json apply")
    assert.are.equal(0, code, err .. out)
    local options = h.readfile(entry):match("\noptions ([^\n]*)")
    -- bash splits the entry's words as the kernel does here (no quotes)
    local words = h.sh("bash -c " .. h.q('for w in $1; do echo "$w"; done') .. " _ " .. h.q(options))
    for _, w in ipairs({ "root=UUID=1", "rw", "quiet", "intel_iommu=on", "iommu=pt", "vfio-pci.ids=1af4:1000" }) do
      assert.matches("\n" .. w:gsub("%p", "%%%0") .. "\n", "\n" .. words, nil, false)
    end
    local argv = h.readfile(tree .. "/var/log/standin-ostree.argv")
    assert.matches("^admin instutil set%-kargs %-%-sysroot=/sysroot ", argv)
    assert.is_nil(argv:find("ostree=", 1, true))
    assert.are.equal("True", h.pyjson(out, "all(e['ok'] for e in d['cmdline'])"))
    code, _, err = h.cli("--root " .. h.q(root) .. " revert")
    assert.are.equal(0, code, err)
    assert.are.equal(original, h.readfile(entry))
    assert.is_nil(h.readfile(tree .. "/etc/vfioinit/ostree.cmdline"))
  end)
end)
