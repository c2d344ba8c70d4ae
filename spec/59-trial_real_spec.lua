-- The trial image (issue 27) built by the root's own generator from the staged copy of its
-- configuration (`mkinitcpio -c … -g`, `dracut --conf/--confdir`), on tools/mkroot's cached
-- roots: the image carries the VFIO modules and the modprobe.d ids, the default image stays
-- byte for byte, revert removes the trial image. The generator's own lister (lsinitcpio,
-- lsinitrd, run in the root) is the oracle beside vfioinit's reader.
-- A kernel booted as a UKI (the mkinitcpio-uki and dracut-uki roots): the trial is a UKI of its
-- own beside the default one; objcopy (its sections), bash (its .osrel) and lsinitcpio/lsinitrd
-- (its .initrd) are the oracle.
-- Pending unless VFIOINIT_REAL=1.
local h = require "helpers"
local image = require "vfioinit.image"

local real = os.getenv("VFIOINIT_REAL") == "1"
local BIN = h.project .. "/bin/vfioinit"
local MP = "etc/modprobe.d/vfioinit.conf"

local function vfioinit(root, args)
  local out, _, code = h.sh(BIN .. " --root " .. h.q(root) .. " " .. args .. " 2>&1")
  return code, out
end

-- A systemd-boot (BLS) entry for the root's kernel and its default image: the trial's copy.
local function bls_entry(root, kver, initrd)
  h.writefile(root .. "/boot/loader/entries/debian-" .. kver .. ".conf", ("title Debian\nversion %s\n"
    .. "linux /vmlinuz-%s\ninitrd /%s\noptions root=/dev/vda ro console=ttyS0\n"):format(kver, kver, initrd))
end

local FLAVOURS = {
  { name = "mkinitcpio", initrd = "initramfs-%s.img",
    list = "lsinitcpio %s", cat = "lsinitcpio -x %s etc/modprobe.d/vfioinit.conf && cat etc/modprobe.d/vfioinit.conf" },
  { name = "dracut", initrd = "initrd.img-%s",
    list = "lsinitrd %s", cat = "lsinitrd -f etc/modprobe.d/vfioinit.conf %s" },
}

-- The names in a directory, sorted.
local function names(dir)
  local t = {}
  for n in h.sh("ls " .. h.q(dir)):gmatch("%S+") do t[#t + 1] = n end
  table.sort(t)
  return t
end

-- One section of a PE image, as objcopy extracts it (tmp: a scratch directory).
local function section(tmp, file, name)
  local out = tmp .. "/" .. name
  h.sh_plain(("objcopy -O binary --only-section=%s %s %s"):format(name, h.q(file), h.q(out)))
  local text = h.readfile(out)
  os.remove(out)
  return text
end

local function words(s)
  local t = {}
  for w in assert(s):gsub("%z", ""):gmatch("%S+") do t[#t + 1] = w end
  return t
end

-- What an os-release text says, as the shell reads it (systemd reads it the same way).
local function osrel_vars(tmp, text)
  h.writefile(tmp .. "/osrel", text)
  local out = h.sh("bash -c " .. h.q(". " .. h.q(tmp .. "/osrel")
    .. ' && printf "%s\\n" "$ID" "$VERSION_ID" "$IMAGE_ID" "$PRETTY_NAME"'))
  os.remove(tmp .. "/osrel")
  local id, version, image_id, pretty = out:match("^(.-)\n(.-)\n(.-)\n(.-)\n$")
  return { ID = id, VERSION_ID = version, IMAGE_ID = image_id, PRETTY_NAME = pretty }
end

-- Paths of the files under dir changed or made after `stamp` (none: every byte as it was).
local function touched(dir, stamp)
  local t = {}
  for p in h.sh("find " .. h.q(dir) .. " -xdev -newer " .. h.q(stamp) .. " ! -type d"):gmatch("[^\n]+") do t[#t + 1] = p end
  return t
end

describe("trial image from the staged configuration, built by the root's generator", function()
  if not real then
    pending("set VFIOINIT_REAL=1 (tools/mkroot mkinitcpio, dracut)")
    return
  end

  for _, fl in ipairs(FLAVOURS) do
    it(fl.name .. ": carries the VFIO modules and the ids; the default image is unchanged; revert removes it", function()
      local root, kver, _, cleanup = h.clone_real(fl.name)
      finally(cleanup)
      local initrd = fl.initrd:format(kver)
      bls_entry(root, kver, initrd)
      local default = "/boot/" .. initrd
      local before = assert(h.readfile(root .. default))
      local code, text = vfioinit(root, "--ids 1af4:1000 apply --trial")
      assert.are.equal(0, code, text)
      local trial = default .. ".vfioinit-trial"
      assert.are.equal(before, h.readfile(root .. default))
      assert.is_nil(h.readfile(root .. "/etc/modprobe.d/vfioinit.conf"))

      -- vfioinit's reader
      local entries, contents = assert(image.list(root, trial, { [MP] = true }))
      assert.are.same({}, image.has_modules(entries, kver, { "vfio", "vfio_iommu_type1", "vfio_pci" }))
      local mp = contents and (contents[MP] or contents["./" .. MP])
      assert.truthy(mp and mp:find("options vfio%-pci ids=1af4:1000"), tostring(mp))
      -- the generator's own lister
      local listing = h.in_root(root, fl.list:format(h.q(trial)))
      assert.are.equal("vfio.ko vfio_iommu_type1.ko vfio-pci.ko vfio_virqfd.ko", h.vfio_listed(listing, kver))
      local shown = h.in_root(root, "sh -c " .. h.q("cd /tmp && " .. fl.cat:format(h.q(trial))))
      assert.truthy(shown:find("options vfio%-pci ids=1af4:1000"), shown)

      code, text = vfioinit(root, "revert")
      assert.are.equal(0, code, text)
      assert.is_nil(h.readfile(root .. trial))
      assert.are.equal(before, h.readfile(root .. default))
    end)
  end

  it("mkinitcpio UKI: a trial UKI beside the default one carries the modules, the ids and the trial's words", function()
    local root, kver, dir, cleanup = h.clone_real("mkinitcpio-uki")
    finally(cleanup)
    local linux = root .. "/efi/EFI/Linux/"
    local default = assert(h.sh("ls " .. h.q(linux)):match("(%S+)%.efi")) -- the one UKI there
    local before = assert(h.readfile(linux .. default .. ".efi"))
    local want = words(section(dir, linux .. default .. ".efi", ".cmdline"))

    local code, text = vfioinit(root, "--ids 1af4:1000 apply --trial")
    assert.are.equal(0, code, text)
    local trial = "/efi/EFI/Linux/" .. default .. "-vfioinit-trial+1.efi"
    assert.are.equal(before, h.readfile(linux .. default .. ".efi"))
    assert.is_nil(h.readfile(root .. "/etc/modprobe.d/vfioinit.conf"))
    assert.are.same({ default .. "-vfioinit-trial+1.efi", default .. ".efi" }, names(linux))

    -- its .cmdline: the default's words and the marker of the recorded trial
    local id = assert(h.readfile(root .. "/etc/vfioinit/trial/record"):match("\nid (%x+)\n"))
    want[#want + 1] = "vfioinit.trial=" .. id
    assert.are.same(want, words(section(dir, root .. trial, ".cmdline")))
    -- its os-release sorts it before the default in systemd-boot
    assert.truthy(section(dir, root .. trial, ".osrel"):find("\nIMAGE_ID=0vfioinit%-trial\n"))

    -- vfioinit's UKI reader
    local entries, contents = assert(image.list(root, trial, { [MP] = true }))
    assert.are.same({}, image.has_modules(entries, kver, { "vfio", "vfio_iommu_type1", "vfio_pci" }))
    local mp = contents and (contents[MP] or contents["./" .. MP])
    assert.truthy(mp and mp:find("options vfio%-pci ids=1af4:1000"), tostring(mp))
    -- the .initrd section (objcopy), listed by mkinitcpio's own lister
    h.writefile(root .. "/tmp/trial.initrd", assert(section(dir, root .. trial, ".initrd")))
    local listing = h.in_root(root, "lsinitcpio /tmp/trial.initrd")
    assert.are.equal("vfio.ko vfio_iommu_type1.ko vfio-pci.ko vfio_virqfd.ko", h.vfio_listed(listing, kver))
    local shown = h.in_root(root, "sh -c " .. h.q("cd /tmp && lsinitcpio -x /tmp/trial.initrd " .. MP .. " && cat " .. MP))
    assert.truthy(shown:find("options vfio%-pci ids=1af4:1000"), shown)
    os.remove(root .. "/tmp/trial.initrd")

    code, text = vfioinit(root, "revert")
    assert.are.equal(0, code, text)
    assert.is_nil(h.readfile(root .. trial))
    assert.are.same({ default .. ".efi" }, names(linux))
    assert.are.equal(before, h.readfile(linux .. default .. ".efi"))
  end)

  it("dracut UKI: a trial UKI of its own identity beside the default one; revert removes it, commit makes it permanent", function()
    local root, kver, dir, cleanup = h.clone_real("dracut-uki")
    finally(cleanup)
    local linux = root .. "/boot/efi/EFI/Linux/"
    local default = "linux-" .. kver .. "-Default"  -- dracut's own name for it (tools/mkroot)
    local before = assert(h.readfile(linux .. default .. ".efi"))
    local want = words(section(dir, linux .. default .. ".efi", ".cmdline"))
    local osrel = osrel_vars(dir, assert(section(dir, linux .. default .. ".efi", ".osrel")))
    local trial = "/boot/efi/EFI/Linux/" .. default .. "-vfioinit-trial+1.efi"

    -- a trial, then revert: the trial's files go, the default UKI and the configuration stay
    local code, text = vfioinit(root, "--ids 1af4:1000 apply --trial")
    assert.are.equal(0, code, text)
    assert.are.equal(before, h.readfile(linux .. default .. ".efi"))
    assert.are.same({ default .. "-vfioinit-trial+1.efi", default .. ".efi" }, names(linux))
    local id = assert(h.readfile(root .. "/etc/vfioinit/trial/record"):match("\nid (%x+)\n"))
    code, text = vfioinit(root, "revert")
    assert.are.equal(0, code, text)
    assert.are.same({ default .. ".efi" }, names(linux))
    assert.are.equal(before, h.readfile(linux .. default .. ".efi"))
    assert.is_nil(h.readfile(root .. "/etc/vfioinit/trial/record"))
    assert.are.equal("", h.sh("ls -A " .. h.q(root .. "/etc/vfioinit/trial") .. " 2>/dev/null"))

    -- a second trial: its .cmdline, .osrel and .initrd
    code, text = vfioinit(root, "--ids 1af4:1000 apply --trial")
    assert.are.equal(0, code, text)
    assert.are.equal(before, h.readfile(linux .. default .. ".efi"))
    assert.is_nil(h.readfile(root .. "/" .. MP))
    id = assert(h.readfile(root .. "/etc/vfioinit/trial/record"):match("\nid (%x+)\n"))
    want[#want + 1] = "vfioinit.trial=" .. id
    assert.are.same(want, words(section(dir, root .. trial, ".cmdline")))
    -- an identity of its own: systemd-boot's sort key and title, the rest the root's
    local got = osrel_vars(dir, assert(section(dir, root .. trial, ".osrel")))
    assert.are.same({ ID = osrel.ID, VERSION_ID = osrel.VERSION_ID, IMAGE_ID = "0vfioinit-trial",
      PRETTY_NAME = osrel.PRETTY_NAME .. " (vfioinit trial " .. id .. ")" }, got)
    assert.are_not.equal(osrel.IMAGE_ID, got.IMAGE_ID)
    -- the .initrd section, listed by dracut's own lister
    h.writefile(root .. "/tmp/trial.initrd", assert(section(dir, root .. trial, ".initrd")))
    local listing = h.in_root(root, "lsinitrd /tmp/trial.initrd")
    assert.are.equal("vfio.ko vfio_iommu_type1.ko vfio-pci.ko vfio_virqfd.ko", h.vfio_listed(listing, kver))
    local shown = h.in_root(root, "lsinitrd -f " .. MP .. " /tmp/trial.initrd")
    assert.truthy(shown:find("options vfio%-pci ids=1af4:1000"), shown)
    os.remove(root .. "/tmp/trial.initrd")

    -- the trial booted and systemd-bless-boot marked it good (its counter dropped): commit
    assert(os.rename(root .. trial, (root .. trial):gsub("%+1%.efi$", ".efi")))
    code, text = vfioinit(root, "commit")
    assert.are.equal(0, code, text)
    assert.are.same({ default .. ".efi" }, names(linux))
    assert.is_nil(h.readfile(root .. "/etc/vfioinit/trial/record"))
    assert.truthy((h.readfile(root .. "/" .. MP) or ""):find("options vfio%-pci ids=1af4:1000"))
    local now = linux .. default .. ".efi"
    assert.are_not.equal(before, h.readfile(now))
    assert.are.same(osrel, osrel_vars(dir, assert(section(dir, now, ".osrel"))))
    h.writefile(root .. "/tmp/default.initrd", assert(section(dir, now, ".initrd")))
    listing = h.in_root(root, "lsinitrd /tmp/default.initrd")
    assert.are.equal("vfio.ko vfio_iommu_type1.ko vfio-pci.ko vfio_virqfd.ko", h.vfio_listed(listing, kver))
    shown = h.in_root(root, "lsinitrd -f " .. MP .. " /tmp/default.initrd")
    assert.truthy(shown:find("options vfio%-pci ids=1af4:1000"), shown)
  end)

  it("ostree: --trial is refused on a deployment and on an image build root, naming why and what to do; no byte written", function()
    local root, _, dir, cleanup = h.clone_real("ostree")
    finally(function()
      h.sh("chattr -i " .. h.q(dir) .. "/sysroot/ostree/deploy/*/deploy/* 2>/dev/null")
      cleanup()
    end)
    -- a sysroot as an ostree system is installed from the image (tools/ostree-sysroot, ostree 2022.7)
    local sysroot = dir .. "/sysroot"
    local out, ok = h.sh_plain("tools/ostree-sysroot make " .. h.q(root) .. " " .. h.q(sysroot) .. " root=/dev/vda 2>&1")
    assert(ok, out)
    -- the image build root, as bootc builds it
    h.writefile(root .. "/usr/bin/bootc", "#!/bin/sh\nexit 1\n", 493)
    local stamp = dir .. "/stamp"
    h.writefile(stamp, "")
    h.sh("sleep 1.1")  -- -newer compares mtimes: a write in this second would not count
    local cases = {
      { root = sysroot, says = "an ostree deployment (ostree): --trial does not apply there; a plain `vfioinit apply` "
        .. "makes a new deployment and keeps the current one in the boot menu as the rollback" },
      { root = root, says = "an image build root (bootc): nothing boots from it" },
    }
    for _, c in ipairs(cases) do
      local code, text, err = h.cli("--root " .. h.q(c.root) .. " --ids 1af4:1000 apply --trial")
      assert.are.equal(1, code, text .. err)
      assert.matches("vfioinit: " .. c.root .. ": " .. c.says, err, 1, true)
      local json
      code, json = h.cli("--root " .. h.q(c.root) .. " --ids 1af4:1000 --json apply --trial")
      assert.are.equal(1, code)
      assert.matches(c.says, h.pyjson(json, "d['error']"), 1, true)
    end
    assert.are.same({}, touched(dir, stamp))
  end)
end)
