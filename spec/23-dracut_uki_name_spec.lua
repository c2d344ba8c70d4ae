-- dracut's UKI name (issue 24): one rule, generators/dracut.lua's `ukis`, which boot chains,
-- rebuild and verify all use. The oracle is bash running dracut 059's naming steps on the
-- root (dracut.sh, no output file given): source /etc/dracut.conf, then the drop-ins of
-- /etc/dracut.conf.d and /usr/lib/dracut/dracut.conf.d merged by name (`sort -Vu`, /etc's
-- file wins); MACHINE_ID unless `machine_id=no` (a Default dir, else `read -r` of
-- /etc/machine-id, else Default); BUILD_ID from the first os-release line holding it
-- (`cat` of both files, `eval`); efidir (/efi/EFI when /efi is the ESP, read as "has EFI/",
-- else /boot/efi/EFI when it exists, else /boot/EFI). spec/94 checks the rule against the
-- file bookworm's real dracut 059 writes.
local h = require "helpers"
local bootchain = require "vfioinit.boot.chains"
local context = require "vfioinit.context"
local dracut = require "vfioinit.generators.dracut"

local KVER = "6.1.0-57-cloud-amd64"
local MID = "0b1c7a3e5d2f4c539b8e1f2a3b4c5d6e"

local ORACLE = [=[
r=$1 kver=$2
shopt -s nullglob
[ -f "$r/etc/dracut.conf" ] && . "$r/etc/dracut.conf"
dirs=("$r/etc/dracut.conf.d" "$r/usr/lib/dracut/dracut.conf.d")
for f in $(for d in "${dirs[@]}"; do for i in "$d"/*.conf; do echo "${i##*/}"; done; done | sort -Vu); do
  for d in "${dirs[@]}"; do if [ -e "$d/$f" ]; then . "$d/$f"; break; fi; done
done
[ "$uefi" = yes ] || exit 0
if [ "$machine_id" != no ]; then
  if [ -d "$r/efi/Default" ] || [ -d "$r/boot/Default" ] || [ -d "$r/boot/efi/Default" ]; then MACHINE_ID=Default
  elif [ -f "$r/etc/machine-id" ]; then read -r MACHINE_ID < "$r/etc/machine-id"
  else MACHINE_ID=Default; fi
fi
BUILD_ID=$(cat "$r/etc/os-release" "$r/usr/lib/os-release" 2>/dev/null | while read -r line || [[ $line ]]; do
  [[ $line =~ BUILD_ID ]] && eval "$line" && echo "$BUILD_ID" && break; done)
efidir=/boot/EFI
if [ -d "$r/efi/EFI" ]; then efidir=/efi/EFI; elif [ -d "$r/boot/efi/EFI" ]; then efidir=/boot/efi/EFI; fi
echo "$efidir/Linux/linux-$kver${MACHINE_ID:+-$MACHINE_ID}${BUILD_ID:+-$BUILD_ID}.efi"
]=]

local function oracle(root)
  local out, ok = h.sh(("env -i /bin/bash -c %s oracle %s %s"):format(h.q(ORACLE), h.q(root), h.q(KVER)))
  assert(ok, out)
  out = out:gsub("\n$", "")
  return out ~= "" and out or nil
end

-- Fedora-like: dracut installed, the ESP at /boot/efi; `files` on top.
local function root_with(files)
  local base = { ["/etc/os-release"] = 'ID=fedora\nVERSION_ID=39\nBUILD_ID="rawhide"\n', ["/etc/dracut.conf"] = "",
    ["/etc/machine-id"] = MID .. "\n", ["/boot/efi/EFI/fedora/shimx64.efi"] = "x",
    ["/etc/dracut.conf.d/50-uki.conf"] = "uefi=yes\n" }
  for k, v in pairs(files) do base[k] = v or nil end  -- false: not in this root
  local root = h.make_root({ files = base, exec = { "/usr/bin/dracut" } })
  h.writefile(root .. "/lib/modules/" .. KVER .. "/modules.dep", "")
  return root
end

-- The UKI paths the boot chains name for dracut.
local function chain_ukis(ctx)
  local out = {}
  for _, c in ipairs(assert(bootchain.chains(ctx, { KVER }, { dracut }))[KVER]) do
    if c.generator == "dracut" and c.kind == "uki" then out[#out + 1] = c.path end
  end
  return out
end

local CASES = {
  { "machine-id and BUILD_ID", {} },
  { "machine_id=no (no machine-id part)", { ["/etc/dracut.conf.d/60-id.conf"] = "machine_id=no\n" } },
  { "machine_id=no in /etc/dracut.conf", { ["/etc/dracut.conf"] = "machine_id=no\n" } },
  { "a Default directory under /boot", { ["/boot/Default/.keep"] = "" } },
  { "a Default directory under /efi", { ["/efi/Default/.keep"] = "" } },
  { "an empty /etc/machine-id", { ["/etc/machine-id"] = "" } },
  { "no /etc/machine-id", { ["/etc/machine-id"] = false } },
  { "blanks around the machine id", { ["/etc/machine-id"] = "  " .. MID .. "  \nsecond\n" } },
  { "BUILD_ID only in /usr/lib/os-release", { ["/etc/os-release"] = "ID=fedora\n",
    ["/usr/lib/os-release"] = "ID=fedora\nBUILD_ID=2024.1\n" } },
  { "no os-release BUILD_ID", { ["/etc/os-release"] = "ID=fedora\nVERSION_ID=39\n" } },
  { "a comment naming BUILD_ID before the line", { ["/etc/os-release"] = "ID=fedora\n# BUILD_ID is set below\nBUILD_ID=7\n" } },
  { "single-quoted BUILD_ID", { ["/etc/os-release"] = "ID=fedora\nBUILD_ID='nightly'\n" } },
  { "sort -V: 10-off.conf after 9-on.conf", { ["/etc/dracut.conf.d/50-uki.conf"] = false,
    ["/etc/dracut.conf.d/9-on.conf"] = "uefi=yes\n", ["/etc/dracut.conf.d/10-off.conf"] = "uefi=no\n" } },
  { "sort -V: 10-on.conf after 9-off.conf", { ["/etc/dracut.conf.d/50-uki.conf"] = false,
    ["/etc/dracut.conf.d/9-off.conf"] = "uefi=no\n", ["/etc/dracut.conf.d/10-on.conf"] = "uefi=yes\n" } },
  { "sort -V: machine_id=no in 9-id.conf, machine_id=yes in 10-id.conf", {
    ["/etc/dracut.conf.d/9-id.conf"] = "machine_id=no\n", ["/etc/dracut.conf.d/10-id.conf"] = "machine_id=yes\n" } },
  { "/etc's drop-in hides /usr/lib's of the same name", { ["/etc/dracut.conf.d/50-uki.conf"] = "uefi=no\n",
    ["/usr/lib/dracut/dracut.conf.d/50-uki.conf"] = "uefi=yes\n" } },
  { "uefi=yes from /usr/lib's drop-in", { ["/etc/dracut.conf.d/50-uki.conf"] = false,
    ["/usr/lib/dracut/dracut.conf.d/50-uki.conf"] = "uefi=yes\n" } },
  { "the ESP at /efi", { ["/efi/EFI/BOOT/BOOTX64.EFI"] = "x" } },
  { "no ESP directory: /boot/EFI", { ["/boot/efi/EFI/fedora/shimx64.efi"] = false } },
}

describe("dracut's UKI name: one rule for boot chains, rebuild and verify", function()
  for _, case in ipairs(CASES) do
    it(case[1], function()
      local root = root_with(case[2])
      finally(function() h.rm(root) end)
      local want = oracle(root)
      local ctx = context.new({ root = root, distro = { id = "fedora", id_like = {} } })
      assert.are.equal(want, dracut.uki_path(ctx, KVER))
      assert.are.same(want and { want } or {}, chain_ukis(ctx))
      if want then
        assert.are.same({ { argv = { "dracut", "--force", want, KVER }, kernels = { KVER } } },
          dracut.rebuild_argv(ctx, { KVER }))
      end
    end)
  end

  it("names the config that asks for the UKI and the one its .cmdline comes from", function()
    local root = root_with({ ["/etc/dracut.conf.d/70-cmdline.conf"] = 'kernel_cmdline="root=/dev/vda"\n' })
    finally(function() h.rm(root) end)
    local ctx = context.new({ root = root, distro = { id = "fedora", id_like = {} } })
    local list = assert(dracut.ukis(ctx, KVER))
    assert.are.equal("dracut: uefi=yes in /etc/dracut.conf.d/50-uki.conf", list[1].entry)
    assert.are.equal("/etc/dracut.conf.d/70-cmdline.conf", list[1].generated_from)
  end)
end)

-- mkinitcpio's preset of a kernel (issue 24): rebuild (`uki_path`, `rebuild_argv`) and boot
-- chains name it by the one rule, places.names_kernel, also for `ALL_kver` naming the
-- kernel by its module tree's image or by Arch's `vmlinuz-<pkgbase>` in a preset file named
-- after neither (the shape of Arch's linux.preset, copied under another name).
describe("mkinitcpio's UKI: one preset rule for boot chains and rebuild", function()
  local mkinitcpio = require "vfioinit.generators.mkinitcpio"
  local UKI = "/efi/EFI/Linux/custom-" .. KVER .. ".efi"

  local function arch_root(all_kver)
    local root = h.make_root({ files = { ["/etc/os-release"] = "ID=arch\n",
      ["/etc/mkinitcpio.conf"] = "MODULES=()\nHOOKS=(base udev)\n",
      ["/etc/mkinitcpio.d/custom.preset"] = table.concat({ "# mkinitcpio preset file for the 'linux' package",
        'ALL_kver="' .. all_kver .. '"', "PRESETS=('default')", 'default_uki="' .. UKI .. '"', "" }, "\n"),
      ["/usr/lib/modules/" .. KVER .. "/pkgbase"] = "linux\n", ["/usr/lib/modules/" .. KVER .. "/modules.dep"] = "",
      ["/efi/EFI/BOOT/BOOTX64.EFI"] = "x" }, exec = { "/usr/bin/mkinitcpio" } })
    return root, context.new({ root = root, distro = { id = "arch", id_like = {} } })
  end

  for _, all_kver in ipairs({ "/usr/lib/modules/" .. KVER .. "/vmlinuz", "/boot/vmlinuz-linux" }) do
    it("ALL_kver=" .. all_kver, function()
      local root, ctx = arch_root(all_kver)
      finally(function() h.rm(root) end)
      local chains = {}
      for _, c in ipairs(assert(bootchain.chains(ctx, { KVER }, { mkinitcpio }))[KVER]) do
        if c.generator == "mkinitcpio" then chains[#chains + 1] = c.path end
      end
      assert.are.same({ UKI }, chains)
      assert.are.equal(UKI, mkinitcpio.uki_path(ctx, KVER))
      assert.are.equal(UKI, mkinitcpio.image_path(ctx, KVER))
      assert.are.same({ { argv = { "mkinitcpio", "-p", "custom" }, kernels = { KVER } } }, mkinitcpio.rebuild_argv(ctx, { KVER }))
    end)
  end
end)
