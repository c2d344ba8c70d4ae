-- The trial image (issue 27) built by the root's own generator from the staged copy of its
-- configuration (`mkinitcpio -c … -g`, `dracut --conf/--confdir`), on tools/mkroot's cached
-- roots: the image carries the VFIO modules and the modprobe.d ids, the default image stays
-- byte for byte, revert removes the trial image. The generator's own lister (lsinitcpio,
-- lsinitrd, run in the root) is the oracle beside vfioinit's reader.
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
end)
