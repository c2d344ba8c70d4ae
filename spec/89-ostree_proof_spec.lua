-- Proof: a real ostree system. tools/mkroot's ostree root (Debian 12, dracut 059 with
-- ostree-boot's dracut module, systemd in the initramfs, the real kernel at
-- /usr/lib/modules/KVER) is committed into an ostree repository and deployed into a sysroot by
-- this machine's ostree 2022.7 (tools/ostree-sysroot: `ostree admin init-fs/os-init/deploy`),
-- which writes the BLS entry. systemd-boot boots that entry under OVMF (tools/boot-probe --uefi:
-- nothing passed with -kernel/-append, the command line is the entry's). Control: virtio-pci
-- holds the device. `vfioinit --root SYSROOT --ids 1af4:1000 apply` (the deployment's own dracut
-- builds an initramfs carrying the VFIO modules, `ostree admin deploy --overlay-initrd` makes a
-- new deployment booting it): vfio-pci holds it. `revert`: the deployment goes, virtio-pci
-- again. Pending unless VFIOINIT_REAL=1.
local h = require "helpers"

local real = os.getenv("VFIOINIT_REAL") == "1"
local BIN = h.project .. "/bin/vfioinit"

local function plain(cmd) return h.sh("env -u LD_PRELOAD " .. cmd) end

local KARGS = "console=ttyS0 intel_iommu=on root=/dev/vda rd.break=initqueue rd.shell SYSTEMD_SULOGIN_FORCE=1 no_timer_check"

-- The BLS entries of the sysroot, read with the shell: {file=, version=, options=, initrds={...}}, the
-- highest `version` (the one a loader starts by default) first.
local function entries(sysroot)
  local list = {}
  for f in h.sh("ls " .. h.q(sysroot .. "/boot/loader/entries")):gmatch("%S+") do
    local text = h.readfile(sysroot .. "/boot/loader/entries/" .. f)
    local e = { file = f, version = tonumber(text:match("\nversion (%d+)")), options = text:match("\noptions ([^\n]*)"),
      initrds = {} }
    for i in text:gmatch("\ninitrd ([^\n]*)") do e.initrds[#e.initrds + 1] = i end
    list[#list + 1] = e
  end
  table.sort(list, function(a, b) return a.version > b.version end)
  return list
end

local function without_ostree(options) return (options:gsub(" ?ostree=%S+", "")) end

-- The guest's /proc/cmdline as systemd-boot passes an entry: an initrd= word per initrd line (its
-- path with backslashes), then the entry's options. -> options, initrds
local function split_loader(cmdline)
  local initrds, rest = {}, {}
  for w in cmdline:gmatch("%S+") do
    local i = w:match("^initrd=(.*)$")
    if i then initrds[#initrds + 1] = (i:gsub("\\", "/")) else rest[#rest + 1] = w end
  end
  return table.concat(rest, " "), initrds
end

local function boot(dir, sysroot, name, expect)
  local esp = dir .. "/" .. name
  local out, ok = plain("tools/ostree-sysroot esp " .. h.q(sysroot) .. " " .. h.q(esp) .. " 2>&1")
  assert(ok, out)
  out, ok = plain(("tools/boot-probe --uefi %s --expect %s --timeout 900 2>&1"):format(h.q(esp), expect))
  local keep = {}
  for l in out:gmatch("[^\n]+") do
    if l:match("^CMDLINE ") or l:match("^RESULT ") or l:match("^PROBE ") then keep[#keep + 1] = l end
  end
  io.stderr:write(("\n[ostree %s, expect %s]\n  %s\n"):format(name, expect, table.concat(keep, "\n  ")))
  assert(ok, "boot-probe did not see 1af4:1000 bound to " .. expect .. ":\n" .. out)
  h.rm(esp)
  return out:match("\nCMDLINE ([^\n]*)") or out:match("^CMDLINE ([^\n]*)")
end

describe("proof: an ostree deployment booted through its BLS entry", function()
  if not real then
    pending("ostree sysroot boot (set VFIOINIT_REAL=1; needs root, ostree, QEMU, OVMF and network once for tools/mkroot ostree)")
    return
  end

  it("control → virtio-pci; apply (overlay initrd, new deployment) → vfio-pci; revert → virtio-pci", function()
    local out, ok = plain("tools/mkroot ostree 2>&1")
    assert(ok, out)
    local root = out:gsub("%s+$", ""):match("[^\n]+$")
    local dir = h.tmpdir()
    -- ostree makes each deployment's directory immutable (chattr +i)
    finally(function() h.sh("chattr -i " .. h.q(dir) .. "/sysroot/ostree/deploy/*/deploy/* 2>/dev/null"); h.rm(dir) end)
    local sysroot = dir .. "/sysroot"
    out, ok = plain("tools/ostree-sysroot make " .. h.q(root) .. " " .. h.q(sysroot) .. " " .. KARGS .. " 2>&1")
    assert(ok, out)
    local before = entries(sysroot)
    assert.are.equal(1, #before)
    assert.are.equal(1, #before[1].initrds)

    local options, initrds = split_loader(boot(dir, sysroot, "control", "virtio-pci"))
    assert.are.equal(before[1].options, options)
    assert.are.same(before[1].initrds, initrds)

    local code
    out, ok, code = h.sh(BIN .. " --root " .. h.q(sysroot) .. " --ids 1af4:1000 apply 2>&1")
    assert.are.equal(0, code, out)
    local after = entries(sysroot)
    -- a new deployment, the default now, booting the image's initramfs and vfioinit's overlay
    assert.are.equal(2, #after)
    assert.are.equal(2, #after[1].initrds)
    assert.are.equal(before[1].initrds[1], after[1].initrds[1])
    assert.matches("^/ostree/initramfs%-overlays/%x+%.img$", after[1].initrds[2])
    assert.are.equal(without_ostree(before[1].options), without_ostree(after[1].options))
    options, initrds = split_loader(boot(dir, sysroot, "applied", "vfio-pci"))
    assert.are.equal(after[1].options, options)
    assert.are.same(after[1].initrds, initrds)

    out, ok, code = h.sh(BIN .. " --root " .. h.q(sysroot) .. " revert 2>&1")
    assert.are.equal(0, code, out)
    local reverted = entries(sysroot)
    assert.are.equal(1, #reverted)
    assert.are.same(before[1].initrds, reverted[1].initrds)
    assert.are.equal(without_ostree(before[1].options), without_ostree(reverted[1].options))
    boot(dir, sysroot, "reverted", "virtio-pci")
  end)
end)
