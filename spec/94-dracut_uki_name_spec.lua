-- dracut's UKI name against the real dracut 059 (issue 24): in a throwaway copy of the
-- dracut-uki root (tools/mkroot dracut-uki: bookworm's dracut, uefi=yes, the ESP at
-- /boot/efi), bookworm's dracut builds a UKI by its own output rule (`dracut --force
-- --kver KVER`, no output file), and the file it wrote is the one vfioinit's boot chain and
-- dracut.lua's uki_path (what rebuild passes to dracut) name: once with /etc/machine-id and a
-- BUILD_ID, once with `machine_id=no`.
-- Pending unless VFIOINIT_REAL=1 (tools/test sets it; VFIOINIT_QUICK=1 skips this file).
local h = require "helpers"
local bootchain = require "vfioinit.boot.chains"
local context = require "vfioinit.context"
local dracut = require "vfioinit.generators.dracut"

local real = os.getenv("VFIOINIT_REAL") == "1"
local MID = "0b1c7a3e5d2f4c539b8e1f2a3b4c5d6e"

local function sh_plain(cmd) return h.sh("env -u LD_PRELOAD " .. cmd) end

local function efis(root)
  local set = {}
  for n in h.sh("ls -1 " .. h.q(root .. "/boot/efi/EFI/Linux")):gmatch("[^\n]+") do set[n] = true end
  return set
end

-- Run the real dracut in root; the one .efi it added under /boot/efi/EFI/Linux.
local function dracut_builds(root, kver)
  local before = efis(root)
  local out, ok = sh_plain(("bash -c %s 2>&1"):format(h.q(("PROG=spec; . tools/lib-chroot.sh; chroot_run %s dracut --force --kver %s")
    :format(h.q(root), h.q(kver)))))
  assert(ok, "dracut failed:\n" .. out)
  local new = {}
  for n in pairs(efis(root)) do if not before[n] then new[#new + 1] = "/boot/efi/EFI/Linux/" .. n end end
  assert.are.equal(1, #new, "dracut wrote " .. #new .. " new UKIs:\n" .. out)
  return new[1]
end

local function vfioinit_names(root, kver)
  local ctx = context.new({ root = root, distro = { id = "debian", id_like = {} } })
  local chain
  for _, c in ipairs(assert(bootchain.chains(ctx, { kver }, { dracut }))[kver]) do
    if c.generator == "dracut" then chain = c.path end
  end
  return chain, dracut.uki_path(ctx, kver)
end

describe("real dracut 059: the UKI it writes is the one vfioinit names", function()
  if not real then
    pending("set VFIOINIT_REAL=1 (tools/mkroot dracut-uki, runs bookworm's dracut)")
    return
  end

  it("with /etc/machine-id and a BUILD_ID, then with machine_id=no", function()
    local root, kver, _, cleanup = h.clone_real("dracut-uki")
    finally(cleanup)
    h.writefile(root .. "/etc/machine-id", MID .. "\n")
    -- Debian's /etc/os-release is a link to /usr/lib/os-release: dracut reads the line twice
    h.sh("echo BUILD_ID=spec-94 >> " .. h.q(root .. "/usr/lib/os-release"))

    local chain, own = vfioinit_names(root, kver)
    local wrote = dracut_builds(root, kver)
    assert.truthy(wrote:find(MID, 1, true) and wrote:find("spec-94", 1, true), wrote)
    assert.are.equal(wrote, chain)
    assert.are.equal(wrote, own)

    h.writefile(root .. "/etc/dracut.conf.d/60-noid.conf", "machine_id=no\n")
    chain, own = vfioinit_names(root, kver)
    wrote = dracut_builds(root, kver)
    assert.is_nil(wrote:find(MID, 1, true), wrote)
    assert.are.equal(wrote, chain)
    assert.are.equal(wrote, own)
  end)
end)
