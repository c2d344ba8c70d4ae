-- Proof through the firmware with Secure Boot on (issue 26): Debian's snakeoil OVMF (its PK,
-- KEK and db hold the test key /usr/share/ovmf/PkKek-1-snakeoil.*) refuses what that key did
-- not sign, so an image that boots here was signed by a key db trusts.
-- mkinitcpio-UKI root (tools/mkroot mkinitcpio-uki) with bookworm's sbsigntool and a signing
-- post hook as sbctl's (the snakeoil key in sbctl's key dir):
--   control: the stock UKI (unsigned) is refused, no kernel starts; signed, it boots, virtio-pci;
--   `apply --ids 1af4:1000`: the hook signs the rebuilt UKI, sbverify --cert and vfioinit's own
--   check agree, it boots with vfio-pci;
--   hook removed, `rebuild` without --sign-key: exit 1 naming the fix, the previous UKI is back
--   byte for byte (the image that just booted);
--   `--cmdline apply --sign-key/--sign-cert` (item 4: a UKI's .cmdline is signed with it):
--   rebuilt, signed by vfioinit's sbsign, boots with vfio-pci and the new command line.
-- dracut-uki root: dracut 059 `uefi=yes` with uefi_secureboot_cert/key: boots with vfio-pci.
-- Pending unless VFIOINIT_REAL=1.
local h = require "helpers"
local u = require "uki_helpers"
local sig = require "sig_helpers"

local real = os.getenv("VFIOINIT_REAL") == "1"
local q, sh = h.q, h.sh
local KEYDIR = "/var/lib/sbctl/keys/db"  -- sbctl's layout, where vfioinit's signature.keys looks
local HOOK = [[#!/bin/bash
# sign the UKI mkinitcpio built (its third argument), as sbctl's post hook does
uki=$3
[ -n "$uki" ] || exit 0
exec sbsign --key /var/lib/sbctl/keys/db/db.key --cert /var/lib/sbctl/keys/db/db.pem --output "$uki" "$uki"
]]

local function vfioinit(root, args)
  local out, _, code = sh(h.BIN .. " --root " .. q(root) .. " " .. args .. " 2>&1")
  return code, out
end

local function sbverify(file)
  return select(2, sh(("sbverify --cert %s %s >/dev/null 2>&1"):format(q(sig.SNAKEOIL .. ".pem"), q(file)))) == true
end

local function sha(file) return (sh("sha256sum " .. q(file)):match("^%x+")) end

local function chroot(root, cmd)
  local out, ok = sh(("env -u LD_PRELOAD bash -c %s 2>&1"):format(q(("PROG=spec; . tools/lib-chroot.sh; chroot_run %s %s"):format(q(root), cmd))))
  assert(ok, cmd .. ":\n" .. out)
  return out
end

-- bookworm's sbsigntool in the root and the snakeoil key where sbctl keeps its db key
local function signing_setup(root)
  sig.install_sbsigntool(root)
  sh("mkdir -p " .. q(root .. KEYDIR))
  sh(("cp %s %s"):format(q(sig.snakeoil(root .. KEYDIR .. "/db.key")), q(root .. KEYDIR .. "/db.pem")))
end

-- The images vfioinit rebuilds here boot with no_timer_check: under TCG on a loaded machine the
-- kernel's IO-APIC timer check through interrupt remapping fails more often than not (a panic
-- before any initramfs code, which says nothing about the image; uki_helpers.boot retries it).
local function no_timer_check(path, shape)
  h.writefile(path, shape:format((h.readfile(path):gsub("%s+$", ""))))
end

describe("proof through Secure Boot OVMF (snakeoil db)", function()
  if not real then
    pending("set VFIOINIT_REAL=1 (tools/mkroot mkinitcpio-uki and dracut-uki, Secure Boot OVMF boots in QEMU)")
    return
  end

  it("mkinitcpio UKI: refused unsigned; the hook's, vfioinit's own signature boot with vfio-pci; an unsigned rebuild is undone", function()
    local root, kver, dir, cleanup = h.clone_real("mkinitcpio-uki")
    finally(cleanup)
    local uki = "/efi/EFI/Linux/arch-" .. kver .. ".efi"
    signing_setup(root)
    no_timer_check(root .. "/etc/kernel/cmdline", "%s no_timer_check\n")

    -- control: the firmware refuses the stock (unsigned) UKI; signed by db's key it boots
    assert.is_false(sbverify(root .. uki))
    u.boot(dir, root .. uki, "refused", true)
    chroot(root, ("sbsign --key %s/db.key --cert %s/db.pem --output %s %s"):format(KEYDIR, KEYDIR, uki, uki))
    u.boot(dir, root .. uki, "virtio-pci", true)

    -- the hook signs what `mkinitcpio -p` rebuilds
    h.writefile(root .. "/etc/initcpio/post/sign-uki", HOOK, 493)
    local code, text = vfioinit(root, "--ids 1af4:1000 apply")
    assert.are.equal(0, code, text)
    assert.truthy(text:find("rebuilt " .. uki .. " for " .. kver, 1, true), text)
    assert.is_true(sbverify(root .. uki))
    -- vfioinit's own check (core.sig.verify against the sbctl key it finds) agrees with sbverify
    code, text = vfioinit(root, "--json status")
    assert.are.equal(0, code, text)
    assert.are.equal("True ['sbctl " .. KEYDIR .. "/db.pem']", h.pyjson(text,
      "[c['signature']['signed'] for c in d['boot_chains'] if c['path'] == '" .. uki .. "'][0], "
      .. "[c['signature']['trusted_by'] for c in d['boot_chains'] if c['path'] == '" .. uki .. "'][0]"))
    local hooked = sha(root .. uki)
    u.boot(dir, root .. uki, "vfio-pci", true)

    -- without the hook the rebuild comes out unsigned: refused, named, undone
    os.remove(root .. "/etc/initcpio/post/sign-uki")
    code, text = vfioinit(root, "rebuild")
    assert.are.equal(1, code, text)
    assert.truthy(text:find(uki .. ": the rebuilt image is unsigned, but the previous one was signed by ", 1, true), text)
    assert.truthy(text:find("a post hook in /etc/initcpio/post/", 1, true), text)
    assert.truthy(text:find("--sign-key KEY --sign-cert CERT", 1, true), text)
    assert.truthy(text:find("sbctl names " .. KEYDIR .. "/db.pem", 1, true), text)
    assert.truthy(text:find("(previous image " .. uki .. " restored)", 1, true), text)
    -- the image that booted above, byte for byte
    assert.are.equal(hooked, sha(root .. uki))
    assert.is_nil(io.open(root .. uki .. ".vfioinit-prev"))

    -- item 4: --cmdline changes the UKI's signed .cmdline: rebuilt, signed by vfioinit's sbsign
    code, text = vfioinit(root, ("--ids 1af4:1000 --cmdline apply --sign-key %s/db.key --sign-cert %s/db.pem"):format(KEYDIR, KEYDIR))
    assert.are.equal(0, code, text)
    local line = text:match("\nrebuilt " .. uki:gsub("%p", "%%%0") .. " for [^\n]*") or ""
    local signed = ": ok, signed with --sign-key"
    assert.are.equal(signed, line:sub(-#signed), text)
    assert.is_true(sbverify(root .. uki))
    local guest = u.boot(dir, root .. uki, "vfio-pci", true)
    assert.truthy((" " .. guest .. " "):find(" vfio-pci.ids=1af4:1000 ", 1, true), guest)
    assert.truthy((" " .. guest .. " "):find(" iommu=pt ", 1, true), guest)
  end)

  it("dracut 059 uefi=yes with uefi_secureboot_cert/key: the rebuilt UKI boots with vfio-pci under Secure Boot", function()
    local root, kver, dir, cleanup = h.clone_real("dracut-uki")
    finally(cleanup)
    local uki = "/boot/efi/EFI/Linux/linux-" .. kver .. "-Default.efi"
    signing_setup(root)
    h.writefile(root .. "/etc/dracut.conf.d/90-secureboot.conf",
      ('uefi_secureboot_cert="%s/db.pem"\nuefi_secureboot_key="%s/db.key"\n'):format(KEYDIR, KEYDIR))
    no_timer_check(root .. "/etc/dracut.conf.d/50-uki.conf", '%s\nkernel_cmdline+=" no_timer_check"\n')
    -- signed before, as dracut with these settings leaves it: the rebuild is judged against it
    chroot(root, ("sbsign --key %s/db.key --cert %s/db.pem --output %s %s"):format(KEYDIR, KEYDIR, uki, uki))
    local before = sha(root .. uki)
    local code, text = vfioinit(root, "--ids 1af4:1000 apply")
    assert.are.equal(0, code, text)
    assert.truthy(text:find("rebuilt " .. uki .. " for " .. kver, 1, true), text)
    assert.are_not.equal(before, sha(root .. uki))
    assert.is_true(sbverify(root .. uki))
    local guest = u.boot(dir, root .. uki, "vfio-pci", true)
    assert.truthy(guest:find("no_timer_check", 1, true), guest)
  end)
end)
