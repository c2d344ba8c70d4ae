-- Proof through rEFInd (issue 24, 6): Debian's refind 0.13.2 (the package file tools/deps
-- keeps, unpacked into a clone of tools/mkroot's initramfs-tools root) is the EFI loader OVMF
-- starts; the root's /boot is its ESP (rEFInd's "maintenance-free" layout): rEFInd's own
-- directory EFI/refind with refind.conf, the kernel, its initrd and refind_linux.conf in the
-- partition's root directory, where rEFInd's scan finds them and adds `initrd=`. QEMU serves a
-- copy of those files as the ESP (tools/boot-probe --uefi, whose EFI/BOOT/BOOTX64.EFI is rEFInd).
-- Control: the stock options leave 1af4:1000 to virtio-pci. After `vfioinit --ids 1af4:1000
-- --cmdline apply` the same boot binds vfio-pci, and the command line vfioinit reads back from
-- refind_linux.conf (with rEFInd's initrd=) is the guest's /proc/cmdline.
-- Pending unless VFIOINIT_REAL=1 and the refind package file is there (tools/deps).
local h = require "helpers"

local real = os.getenv("VFIOINIT_REAL") == "1"
local BIN = h.project .. "/bin/vfioinit"
local DEBS = (os.getenv("VFIOINIT_CACHE") or (os.getenv("HOME") .. "/.cache/vfioinit")) .. "/debs"

local function sh_plain(cmd) return h.sh("env -u LD_PRELOAD " .. cmd) end

local function deb()
  local out = h.sh("ls " .. h.q(DEBS) .. "/refind_*.deb 2>/dev/null | tail -n1")
  return out ~= "" and (out:gsub("%s+$", "")) or nil
end

-- Copy what rEFInd reads from root's /boot (its ESP) into a fresh ESP dir, rEFInd itself as
-- the fallback loader EFI/BOOT/BOOTX64.EFI beside its refind.conf; boot it, expect `driver`.
local function boot(dir, root, kver, driver)
  local esp, b = dir .. "/esp", root .. "/boot"
  local out, ok = h.sh(("rm -rf %s && mkdir -p %s/EFI/BOOT && cp %s/EFI/refind/refind_x64.efi %s/EFI/BOOT/BOOTX64.EFI"
    .. " && cp %s/EFI/refind/refind.conf %s/EFI/BOOT/ && cp %s/vmlinuz-%s %s/initrd.img-%s %s/refind_linux.conf %s/ 2>&1")
    :format(h.q(esp), h.q(esp), h.q(b), h.q(esp), h.q(b), h.q(esp), h.q(b), kver, h.q(b), kver, h.q(b), h.q(esp)))
  assert(ok, out)
  for _ = 1, 3 do
    out, ok = sh_plain(("tools/boot-probe --uefi %s --expect %s --timeout 900 2>&1"):format(h.q(esp), driver))
    if ok or not out:find("timer doesn't work through Interrupt-remapped IO-APIC", 1, true) then break end
    io.stderr:write("\n[refind boot: the guest's timer check panicked under TCG; booting again]\n")
  end
  local keep = {}
  for l in out:gmatch("[^\n]+") do
    if l:match("^RESULT ") or l:match("^CMDLINE ") then keep[#keep + 1] = l end
  end
  io.stderr:write(("\n[rEFInd boot, expect %s]\n  %s\n"):format(driver, table.concat(keep, "\n  ")))
  assert(ok, "boot-probe --uefi (rEFInd) did not see 1af4:1000 bound to " .. driver .. ":\n" .. out)
  return out:match("\nCMDLINE ([^\n]*)"), tonumber(out:match("total=([%d.]+)s"))
end

-- The command line vfioinit reads back for the default entry of kver (rEFInd's first line).
local function readback(root, kver)
  local ctx = require("vfioinit.context").new({ root = root })
  local chains = assert(require("vfioinit.boot.loaders.refind").entries(ctx, kver))
  for _, c in ipairs(chains) do if c.default then return c.cmdline end end
end

describe("proof through OVMF and rEFInd 0.13.2: refind_linux.conf", function()
  if not real or not deb() then
    pending("set VFIOINIT_REAL=1 and run tools/deps (the refind package file); OVMF boots rEFInd in QEMU")
    return
  end

  it("control binds virtio-pci; after `--ids 1af4:1000 --cmdline apply` rEFInd boots the edited line to vfio-pci", function()
    local root, kver, dir, cleanup = h.clone_real("initramfs-tools")
    finally(cleanup)
    local out, ok = h.sh(("dpkg-deb -x %s %s 2>&1 && mkdir -p %s/boot/EFI/refind && cp %s/usr/share/refind/refind/refind_x64.efi "
      .. "%s/boot/EFI/refind/"):format(h.q(deb()), h.q(root), h.q(root), h.q(root), h.q(root)))
    assert(ok, out)
    -- the package's sample, as refind-install installs it, with a short timeout and text mode
    local conf = h.readfile(root .. "/usr/share/refind/refind/refind.conf-sample"):gsub("\ntimeout 20\n", "\ntimeout 1\ntextonly\n")
    h.writefile(root .. "/boot/EFI/refind/refind.conf", conf)
    -- mkrlconf's three lines, with the options tools/boot-probe needs to stop in the initramfs
    local opts = "root=/dev/vda console=ttyS0 break=premount"
    h.writefile(root .. "/boot/refind_linux.conf", ('"Boot with standard options"  "%s"\n"Boot to single-user mode"    "%s single"\n'
      .. '"Boot with minimal options"   "ro root=/dev/vda"\n'):format(opts, opts))

    local stock = readback(root, kver)
    assert.are.equal(opts .. " initrd=\\initrd.img-" .. kver, stock)
    local guest, t_control = boot(dir, root, kver, "virtio-pci")
    assert.are.equal(stock, guest)

    local code
    out, ok, code = h.sh(BIN .. " --root " .. h.q(root) .. " --ids 1af4:1000 --cmdline apply 2>&1")
    assert.are.equal(0, code, out)
    assert(ok, out)
    local after = readback(root, kver)
    assert.are.equal(opts .. " intel_iommu=on iommu=pt vfio-pci.ids=1af4:1000 initrd=\\initrd.img-" .. kver, after)
    local guest2, t_vfio = boot(dir, root, kver, "vfio-pci")
    assert.are.equal(after, guest2)
    io.stderr:write(("[98-refind] OVMF + rEFInd boots: control %.1f s, after apply %.1f s\n"):format(t_control or -1, t_vfio or -1))
  end)
end)
