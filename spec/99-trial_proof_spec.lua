-- Proof of issue 27 through the machine's own boot path: `apply --trial` boots the VFIO
-- configuration once; a trial that cannot boot falls back to the old default by itself; a
-- good one, committed, becomes the default. QEMU follows the serial console across the
-- guest's own reboots (tools/boot-follow: every wait is on the console), and the loader
-- keeps what it writes (grubenv, systemd-boot's renames) on the disk the next step reads.
--
-- * GRUB (tools/mkroot grub on a BIOS disk, tools/grub-disk; the root's own update-grub):
--   the trial passes the root disk's controller (0000:00:05.0) with --force and has panic=5
--   on its own line: boot 1 starts it (next_entry) and loses its root, panics, reboots;
--   boot 2 is the old default with virtio-pci. `revert` drops the trial; a trial with
--   --ids 1af4:1000 boots with vfio-pci; `commit --root` (GRUB's own record in grubenv:
--   its last boot was the trial entry) makes it permanent; the next boot is the default
--   entry with vfio-pci.
-- * systemd-boot (tools/mkroot kinstall-bls: kernel-install layout=bls, initramfs-tools;
--   OVMF; the ESP is the root's /boot/efi, served writable): the same two cases with boot
--   counting; after the failed trial its entry is `+0-1` (bad) and the default boots. The
--   good trial is committed with the guest's own /proc/cmdline (the kernel booted from the
--   trial entry carries vfioinit.trial=<id>), as `vfioinit commit` reads it on the machine.
-- Both machines stop in the root's /bin/sh (init=/bin/sh): a trial that loses its root disk
-- never gets there. Pending unless VFIOINIT_REAL=1.
local h = require "helpers"

local real = os.getenv("VFIOINIT_REAL") == "1"
local BIN = h.project .. "/bin/vfioinit"
local ROOT_DISK = "0000:00:05.0"  -- tools/boot-follow's virtio-blk root disk

local sh_plain, in_root = h.sh_plain, h.in_root

local function vfioinit(root, args)
  local out, _, code = h.sh(BIN .. " --root " .. h.q(root) .. " " .. args .. " 2>&1")
  return code, out
end

-- Follow `n` boots; returns per boot {cmdline=, result=, driver=, seconds=, says=} and the
-- run's total seconds.
local boots_made, seconds_spent = {}, {}
local function follow(tag, args, n)
  local out = sh_plain(("tools/boot-follow %s --boots %d --timeout %d 2>&1"):format(args, n, 600 * n))
  local list = {}
  for k = 1, n do
    local b = { says = {} }
    b.cmdline = out:match("\nBOOT " .. k .. " CMDLINE ([^\n]*)") or out:match("^BOOT " .. k .. " CMDLINE ([^\n]*)")
    b.result, b.driver, b.seconds = out:match("BOOT " .. k .. " RESULT (%S+) driver=(%S+) seconds=([%d.]+)")
    for l in out:gmatch("BOOT " .. k .. " SAYS ([^\n]*)") do b.says[#b.says + 1] = l end
    list[k] = b
  end
  local total = tonumber(out:match("RESULT boots=%d+ total=([%d.]+)s"))
  boots_made[tag] = (boots_made[tag] or 0) + n
  seconds_spent[tag] = (seconds_spent[tag] or 0) + (total or 0)
  io.stderr:write(("\n[%s: %d boot(s)]\n%s\n"):format(tag, n, out:gsub("BOOT %d PROBEDEV 0000:00:[01][^\n]*\n", "")))
  return list, out
end

local function trial_word(line) return (line or ""):match("vfioinit%.trial=(%x+)") end

describe("proof: a GRUB trial boots once and falls back by itself", function()
  if not real then
    pending("GRUB disk boots (set VFIOINIT_REAL=1; root, losetup, QEMU, tools/mkroot grub)")
    return
  end

  it("failed trial → the old default with virtio-pci; good trial → vfio-pci; commit → the default boots vfio-pci", function()
    local out, ok = sh_plain("tools/mkroot grub 2>&1")
    assert(ok, out)
    local root = out:gsub("%s+$", ""):match("[^\n]+$")
    local dir = h.tmpdir()
    local disk, mnt = dir .. "/disk.img", dir .. "/mnt"
    local mounted = false
    local function mount() assert(select(2, sh_plain("tools/grub-disk mount " .. h.q(disk) .. " " .. h.q(mnt)))); mounted = true end
    local function umount() assert(select(2, sh_plain("tools/grub-disk umount " .. h.q(mnt)))); mounted = false end
    finally(function()
      if mounted then sh_plain("tools/grub-disk umount " .. h.q(mnt) .. " >/dev/null 2>&1") end
      h.rm(dir)
    end)
    out, ok = sh_plain("tools/grub-disk make " .. h.q(root) .. " " .. h.q(disk) .. " 1024 2>&1")
    assert(ok, out)
    mount()
    -- the user's GRUB: serial console, no menu delay, the root's own shell as init
    h.grub_user_config(mnt, "console=ttyS0 init=/bin/sh no_timer_check")
    in_root(mnt, "update-grub")
    local kver = h.sh("ls " .. h.q(mnt .. "/lib/modules")):gsub("%s+$", "")
    local image = mnt .. "/boot/initrd.img-" .. kver
    local default_image = h.readfile(image)
    local grub_cfg = h.readfile(mnt .. "/boot/grub/grub.cfg")

    -- 1. a trial that cannot boot: its root disk's controller goes to vfio-pci
    local code, text = vfioinit(mnt, "--device " .. ROOT_DISK .. " --force apply --trial --trial-cmdline panic=5")
    assert.are.equal(0, code, text)
    local id = assert(text:match("trial (%x+): the next boot starts"), text)
    assert.are.equal(default_image, h.readfile(image), "the default image changed")
    assert.is_nil(h.readfile(mnt .. "/etc/initramfs-tools/scripts/init-top/00-vfioinit-bind"), "the configuration was applied")
    assert.matches("next_entry=vfioinit-trial\n", h.readfile(mnt .. "/boot/grub/grubenv"), 1, true)
    umount()
    local b = follow("grub", "--disk " .. h.q(disk), 2)
    assert.are.equal(id, trial_word(b[1].cmdline), "boot 1 is not the trial")
    assert.are.equal("reboot", b[1].result)
    assert.truthy(table.concat(b[1].says, "\n"):find("Rebooting automatically due to panic=", 1, true))
    assert.is_nil(trial_word(b[2].cmdline), "boot 2 is the trial again")
    assert.are.equal("shell", b[2].result)
    assert.are.equal("virtio-pci", b[2].driver)
    mount()
    code, text = vfioinit(mnt, "status")
    assert.matches("trial: " .. id .. " .-: failed", text)
    code, text = vfioinit(mnt, "commit")
    assert.are.equal(1, code, text)
    assert.matches("was not seen booting (failed)", text, 1, true)
    code, text = vfioinit(mnt, "revert")
    assert.are.equal(0, code, text)
    assert.is_nil(h.readfile(image .. ".vfioinit-trial"))
    assert.is_nil(h.readfile(mnt .. "/etc/grub.d/42_vfioinit-trial"))
    assert.is_nil(h.readfile(mnt .. "/var/lib/vfioinit/manifest"), "the trial left records")
    assert.are.equal(grub_cfg, h.readfile(mnt .. "/boot/grub/grub.cfg"))

    -- 2. a good trial, committed from GRUB's record
    code, text = vfioinit(mnt, "--ids 1af4:1000 apply --trial")
    assert.are.equal(0, code, text)
    id = assert(text:match("trial (%x+): the next boot starts"), text)
    umount()
    b = follow("grub", "--disk " .. h.q(disk), 1)
    assert.are.equal(id, trial_word(b[1].cmdline))
    assert.are.equal("vfio-pci", b[1].driver)
    mount()
    code, text = vfioinit(mnt, "commit")
    assert.are.equal(0, code, text)
    assert.matches("committed trial " .. id, text, 1, true)
    assert.is_nil(h.readfile(image .. ".vfioinit-trial"))
    assert.is_nil(h.readfile(mnt .. "/etc/grub.d/42_vfioinit-trial"))
    assert.is_nil(h.readfile(mnt .. "/boot/grub/grub.cfg"):find("vfioinit-trial", 1, true))
    umount()
    b = follow("grub", "--disk " .. h.q(disk), 1)
    assert.is_nil(trial_word(b[1].cmdline))
    assert.are.equal("vfio-pci", b[1].driver)
    io.stderr:write(("[99-trial] GRUB: %d boots, %.0f s in QEMU\n"):format(boots_made.grub, seconds_spent.grub))
  end)
end)

describe("proof: a systemd-boot trial counts its boot and falls back by itself", function()
  if not real then
    pending("OVMF + systemd-boot boots (set VFIOINIT_REAL=1; tools/mkroot kinstall-bls, QEMU)")
    return
  end

  it("failed trial → +0-1 and the default with virtio-pci; good trial → vfio-pci; commit → the default boots vfio-pci", function()
    local out, ok = sh_plain("tools/mkroot kinstall-bls 2>&1")
    assert(ok, out)
    local dir = h.tmpdir()
    local root = dir .. "/root"
    out, ok = sh_plain("tools/clone-root kinstall-bls " .. h.q(root) .. " 2>&1")
    assert(ok, out)
    finally(function()
      sh_plain("tools/clone-root --remove " .. h.q(root) .. " >/dev/null 2>&1")
      h.rm(dir)
    end)
    local kver = h.sh("ls " .. h.q(root .. "/lib/modules")):gsub("%s+$", "")
    local esp, entries = root .. "/boot/efi", root .. "/boot/efi/loader/entries"
    -- the user's setup: the root's shell as init, the entry rewritten by the root's own
    -- kernel-install, systemd-boot as the ESP's boot loader; kernel-install names files by
    -- root paths (its /boot/efi is no mount point here), which the ESP also has through a link
    h.writefile(root .. "/etc/kernel/cmdline", "console=ttyS0 root=/dev/vda init=/bin/sh no_timer_check\n")
    in_root(root, ("kernel-install add %s /boot/vmlinuz-%s"):format(kver, kver))
    h.sh(("mkdir -p %s/EFI/BOOT %s/boot/efi && cp %s %s/EFI/BOOT/BOOTX64.EFI && ln -s ../../debian %s/boot/efi/debian")
      :format(h.q(esp), h.q(esp), h.q(root .. "/usr/lib/systemd/boot/efi/systemd-bootx64.efi"), h.q(esp), h.q(esp)))
    local disk = dir .. "/rootdisk.img"
    out, ok = h.sh(("truncate -s 1200M %s && mkfs.ext4 -q -F -d %s %s 2>&1"):format(h.q(disk), h.q(root), h.q(disk)))
    assert(ok, out)
    local args = "--esp " .. h.q(esp) .. " --disk " .. h.q(disk)
    local entry = entries .. "/debian-" .. kver .. ".conf"
    local default_entry = h.readfile(entry)
    local initrd = esp .. "/debian/" .. kver .. "/initrd.img-" .. kver
    local default_image = h.readfile(initrd)
    local function names() return h.sh("ls " .. h.q(entries)):gsub("%s+$", "") end

    -- 1. a trial that cannot boot
    local code, text = vfioinit(root, "--device " .. ROOT_DISK .. " --force apply --trial --trial-cmdline panic=5")
    assert.are.equal(0, code, text)
    local id = assert(text:match("trial (%x+): the next boot starts"), text)
    assert.are.equal("debian-" .. kver .. ".conf\nvfioinit-trial-" .. kver .. "+1.conf", names())
    local b = follow("systemd-boot", args, 2)
    assert.are.equal(id, trial_word(b[1].cmdline))
    assert.are.equal("reboot", b[1].result)
    assert.is_nil(trial_word(b[2].cmdline))
    assert.are.equal("virtio-pci", b[2].driver)
    -- systemd-boot counted the try: the trial entry is bad now, the default untouched
    assert.are.equal("debian-" .. kver .. ".conf\nvfioinit-trial-" .. kver .. "+0-1.conf", names())
    assert.are.equal(default_entry, h.readfile(entry))
    assert.are.equal(default_image, h.readfile(initrd))
    code, text = vfioinit(root, "revert")
    assert.are.equal(0, code, text)
    assert.are.equal("debian-" .. kver .. ".conf", names())
    assert.is_nil(h.readfile(initrd .. ".vfioinit-trial"))

    -- 2. a good trial, committed with the trial boot's own command line
    code, text = vfioinit(root, "--ids 1af4:1000 apply --trial")
    assert.are.equal(0, code, text)
    id = assert(text:match("trial (%x+): the next boot starts"), text)
    b = follow("systemd-boot", args, 1)
    assert.are.equal(id, trial_word(b[1].cmdline))
    assert.are.equal("vfio-pci", b[1].driver)
    assert.are.equal("debian-" .. kver .. ".conf\nvfioinit-trial-" .. kver .. "+0-1.conf", names())
    code, text = vfioinit(root, "commit")
    assert.are.equal(1, code, text)
    assert.matches("nothing marked it good", text, 1, true)
    local live = dir .. "/live"
    h.writefile(live .. "/proc/cmdline", b[1].cmdline .. "\n")
    out, ok = h.sh(("%s -e %s 2>&1"):format(h.lua, h.q(([[
      package.path = %q .. "/lua/?.lua;" .. %q .. "/lua/?/init.lua;" .. package.path
      package.cpath = %q .. "/build/?.so;" .. package.cpath
      local r, err = require("vfioinit").commit({ root = %q, sysfs = %q })
      assert(r, err)
      print("committed " .. r.committed.id)]]):format(h.project, h.project, h.project, root, live))))
    assert(ok, out)
    assert.matches("committed " .. id, out, 1, true)
    assert.are.equal("debian-" .. kver .. ".conf", names())
    assert.is_nil(h.readfile(initrd .. ".vfioinit-trial"))
    b = follow("systemd-boot", args, 1)
    assert.is_nil(trial_word(b[1].cmdline))
    assert.are.equal("vfio-pci", b[1].driver)
    io.stderr:write(("[99-trial] systemd-boot: %d boots, %.0f s in QEMU\n"):format(boots_made["systemd-boot"],
      seconds_spent["systemd-boot"]))
  end)
end)
