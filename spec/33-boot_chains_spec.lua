-- Boot chains (lua/vfioinit/boot/chains.lua): what the firmware or bootloader loads for each
-- kernel, one `describe` per kind of chain, each on a root shaped like the machines that
-- boot that way (real file shapes: spec/fixtures/boot, mkinitcpio v41's preset, kernel-install's
-- install.conf, a PE file built with objcopy on systemd-boot's stub).
local h = require "helpers"
local vfioinit = require "vfioinit"
local bootchain = require "vfioinit.boot.chains"
local context = require "vfioinit.context"

local KVER = "6.1.0-57-cloud-amd64"
local OTHER = "6.1.0-58-cloud-amd64"
local FIX = h.project .. "/spec/fixtures/boot/"
local STUB = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub"
local MID = "0b1c7a3e5d2f4c539b8e1f2a3b4c5d6e"

-- A root with kernels (module dirs the detection accepts) and files.
local function root_with(files, exec, kernels)
  local root = h.make_root({ files = files, exec = exec })
  for _, k in ipairs(kernels or { KVER }) do h.writefile(root .. "/lib/modules/" .. k .. "/modules.dep", "") end
  return root
end

local function by_kernel(list, kver)
  local out = {}
  for _, c in ipairs(list) do if c.kernel == kver then out[#out + 1] = c end end
  return out
end

local function entries(list)
  local out = {}
  for _, c in ipairs(list) do out[#out + 1] = c.entry end
  return out
end

-- The Debian root: initramfs-tools active, grub.cfg as grub-mkconfig writes it.
local function debian_root(grub_cfg, extra)
  local files = { ["/etc/os-release"] = "ID=debian\nVERSION_ID=12\n", ["/etc/initramfs-tools/modules"] = "",
    ["/etc/default/grub"] = 'GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX_DEFAULT="quiet"\n',
    ["/boot/grub/grub.cfg"] = grub_cfg or h.readfile(FIX .. "debian12-grub.cfg"),
    ["/boot/vmlinuz-" .. KVER] = "kernel", ["/boot/initrd.img-" .. KVER] = "initrd" }
  for k, v in pairs(extra or {}) do files[k] = v end
  return root_with(files, { "/usr/sbin/update-initramfs" })
end

describe("boot chain: grub.cfg (Debian, grub-mkconfig)", function()
  local root
  before_each(function() root = debian_root() end)
  after_each(function() h.rm(root) end)

  it("lists every menu entry that boots the kernel, the default entry first", function()
    local list = assert(vfioinit.boot_chains({ root = root }))
    assert.are.same({ "grub: Debian GNU/Linux",
      "grub: Advanced options for Debian GNU/Linux > Debian GNU/Linux, with Linux " .. KVER,
      "grub: Advanced options for Debian GNU/Linux > Debian GNU/Linux, with Linux " .. KVER .. " (recovery mode)" },
      entries(list))
    local c = list[1]
    assert.is_true(c.default)
    assert.is_nil(list[2].default)
    assert.are.equal("image", c.kind)
    assert.are.equal("grub", c.loader)
    assert.are.equal("/boot/vmlinuz-" .. KVER, c.path)
    assert.are.equal("/boot/initrd.img-" .. KVER, c.initramfs)
    assert.are.equal("/boot/grub/grub.cfg", c.cmdline_source)
    assert.are.equal("/etc/default/grub", c.generated_from)
    -- the command line GRUB passes: the fixture's `linux` line after the path
    assert.are.equal("root=UUID=0b1c7a3e-5d2f-4c53-9b8e-1f2a3b4c5d6e ro console=ttyS0 quiet intel_iommu=on", c.cmdline)
    assert.truthy(list[3].cmdline:find(" single ", 1, true))
    assert.is_true(c.exists)
  end)

  it("follows `set default=` given as a submenu path, a title path, or a variable", function()
    local cfg = h.readfile(FIX .. "debian12-grub.cfg")
    local recovery = "grub: Advanced options for Debian GNU/Linux > Debian GNU/Linux, with Linux " .. KVER .. " (recovery mode)"
    for _, d in ipairs({ '"1>1"', '"Advanced options for Debian GNU/Linux>Debian GNU/Linux, with Linux ' .. KVER .. ' (recovery mode)"',
      '"gnulinux-advanced-0b1c7a3e-5d2f-4c53-9b8e-1f2a3b4c5d6e>gnulinux-' .. KVER .. '-recovery-0b1c7a3e-5d2f-4c53-9b8e-1f2a3b4c5d6e"' }) do
      h.writefile(root .. "/boot/grub/grub.cfg", (cfg:gsub('set default="0"', "set default=" .. d)))
      local list = assert(vfioinit.boot_chains({ root = root }))
      assert.are.equal(recovery, list[1].entry, d)
      assert.is_true(list[1].default, d)
    end
    -- as grub-core/normal/menu.c: an index past the last entry is entry 0; a submenu named
    -- alone starts its own entry 0
    local first = "grub: Debian GNU/Linux"
    local sub0 = "grub: Advanced options for Debian GNU/Linux > Debian GNU/Linux, with Linux " .. KVER
    for d, want in pairs({ ['"7"'] = first, ['"1"'] = sub0, ['"1>5"'] = sub0 }) do
      h.writefile(root .. "/boot/grub/grub.cfg", (cfg:gsub('set default="0"', "set default=" .. d)))
      local list = assert(vfioinit.boot_chains({ root = root }))
      assert.are.equal(want, list[1].entry, d)
      assert.is_true(list[1].default, d)
      assert.is_nil(list[2].default, d)
    end
    -- GRUB_DEFAULT=saved: grubenv's saved_entry (none saved: entry 0)
    h.writefile(root .. "/boot/grub/grub.cfg", (cfg:gsub('set default="0"', 'set default="${saved_entry}"')))
    local list = assert(vfioinit.boot_chains({ root = root }))
    assert.are.equal(first, list[1].entry)
    assert.is_true(list[1].default)
    h.writefile(root .. "/boot/grub/grubenv", "# GRUB Environment Block\nsaved_entry=gnulinux-advanced-0b1c7a3e-5d2f-4c53-9b8e-1f2a3b4c5d6e>"
      .. "gnulinux-" .. KVER .. "-recovery-0b1c7a3e-5d2f-4c53-9b8e-1f2a3b4c5d6e\n" .. ("#"):rep(800))
    list = assert(vfioinit.boot_chains({ root = root }))
    assert.are.equal(recovery, list[1].entry)
    assert.is_true(list[1].default)
  end)

  it("reads a full grub.cfg on the ESP (EFI/<vendor>/grub.cfg), and nothing from a stub that only loads /boot's", function()
    h.writefile(root .. "/boot/efi/EFI/debian/grub.cfg", "search.fs_uuid 0b1c7a3e root hd0,gpt2\n"
      .. "set prefix=($root)'/boot/grub'\nconfigfile $prefix/grub.cfg\n")
    assert.are.equal(3, #assert(vfioinit.boot_chains({ root = root })))
    h.writefile(root .. "/boot/efi/EFI/fedora/grub.cfg", "set default=\"0\"\nmenuentry 'Fedora (" .. KVER .. ")' {\n"
      .. "  linuxefi /vmlinuz-" .. KVER .. " root=/dev/sda3 ro\n  initrdefi /initramfs-" .. KVER .. ".img\n}\n")
    local list = assert(vfioinit.boot_chains({ root = root }))
    assert.are.equal(4, #list)
    assert.are.equal("grub: Fedora (" .. KVER .. ")", list[4].entry)
    assert.are.equal("/boot/efi/EFI/fedora/grub.cfg", list[4].cmdline_source)
    assert.are.equal("/boot/initramfs-" .. KVER .. ".img", list[4].initramfs)
    assert.are.equal("root=/dev/sda3 ro", list[4].cmdline)
  end)

  it("maps paths of a separate /boot partition into root and keeps other kernels' entries apart", function()
    local cfg = table.concat({
      "set default=\"1\"",
      "menuentry 'Debian, Linux " .. OTHER .. "' {", "  linux (hd0,gpt2)/vmlinuz-" .. OTHER .. " root=/dev/vda1 ro", "  initrd /initrd.img-" .. OTHER, "}",
      "menuentry 'Debian, Linux " .. KVER .. "' {", "  linux /vmlinuz-" .. KVER .. " root=/dev/vda1 ro quiet",
      "  initrd /intel-ucode.img /initrd.img-" .. KVER, "}", "" }, "\n")
    local r2 = root_with({ ["/etc/os-release"] = "ID=debian\n", ["/etc/initramfs-tools/modules"] = "",
      ["/boot/grub/grub.cfg"] = cfg, ["/boot/initrd.img-" .. KVER] = "x" }, { "/usr/sbin/update-initramfs" }, { KVER, OTHER })
    local list = assert(vfioinit.boot_chains({ root = r2 }))
    local mine, other = by_kernel(list, KVER), by_kernel(list, OTHER)
    -- a GRUB device prefix is not part of the path
    assert.are.equal("/boot/vmlinuz-" .. OTHER, other[1].path)
    assert.are.equal(1, #mine)
    assert.are.equal(1, #other)
    assert.are.equal("/boot/initrd.img-" .. KVER, mine[1].initramfs)
    assert.are.same({ "/boot/intel-ucode.img", "/boot/initrd.img-" .. KVER }, mine[1].initrds)
    assert.is_true(mine[1].default)
    assert.is_nil(other[1].default)
    assert.is_false(other[1].exists)       -- grub.cfg names an initrd that is not there
    assert.is_nil(mine[1].generated_from)  -- no /etc/default/grub in this root
    h.rm(r2)
  end)

  it("status shows one line per chain, and --json carries them under boot_chains", function()
    local out = h.sh(h.BIN .. " --root " .. h.q(root) .. " status")
    assert.truthy(out:find("boot chains:\n  grub: Debian GNU/Linux [default] → " .. KVER .. " → /boot/vmlinuz-" .. KVER
      .. " → /boot/initrd.img-" .. KVER .. " (cmdline from /boot/grub/grub.cfg, generated from /etc/default/grub)\n", 1, true), out)
    local json = h.sh(h.BIN .. " --root " .. h.q(root) .. " --json status")
    assert.are.equal("3 /boot/grub/grub.cfg True grub: Debian GNU/Linux",
      h.pyjson(json, "len(d['boot_chains']), d['boot_chains'][0]['cmdline_source'], d['boot_chains'][0]['default'], "
        .. "d['boot_chains'][0]['entry']"))
  end)
end)

-- Fedora: dracut active, kernel-install's BLS entries under /boot, GRUB reading them (blscfg).
local function fedora_root(entry_initrd, extra, real_kernel)
  local bls = h.readfile(FIX .. "fedora-bls.conf"):gsub("6%.5%.6%-300%.fc39%.x86_64", KVER)
  if entry_initrd then bls = bls:gsub("initrd [^\n]*", "initrd " .. entry_initrd) end
  local files = { ["/etc/os-release"] = "ID=fedora\nVERSION_ID=39\n", ["/etc/dracut.conf"] = "",
    ["/boot/loader/entries/" .. MID .. "-" .. KVER .. ".conf"] = bls,
    ["/boot/grub2/grub.cfg"] = "set default=\"${saved_entry}\"\ninsmod blscfg\nblscfg\n",
    ["/etc/kernel/cmdline"] = "root=UUID=5b2b7a4c ro rhgb quiet\n" }
  for k, v in pairs(extra or {}) do files[k] = v or nil end
  if not real_kernel then return root_with(files, { "/usr/bin/dracut" }) end
  -- a real kernel tree (tools/fetch-kernel): its VFIO modules make status plan and verify
  local root = root_with(files, { "/usr/bin/dracut" }, {})
  assert.are.equal(KVER, (h.install_kernel(root, "cloud", KVER)))
  return root
end

describe("boot chain: BLS type #1 entries (Fedora, kernel-install layout=bls)", function()
  local root
  after_each(function() if root then h.rm(root) end end)

  it("takes the entry's kernel, initrd and options, paths relative to the entries' partition", function()
    root = fedora_root(nil, { ["/boot/initramfs-" .. KVER .. ".img"] = "x" })
    local list = assert(vfioinit.boot_chains({ root = root }))
    assert.are.equal(1, #list)
    local c = list[1]
    assert.are.equal("bls: " .. MID .. "-" .. KVER .. ".conf", c.entry)
    assert.are.equal("bls", c.loader)
    assert.are.equal("/boot/vmlinuz-" .. KVER, c.path)
    assert.are.equal("/boot/initramfs-" .. KVER .. ".img", c.initramfs)
    assert.are.equal("root=UUID=5b2b7a4c-1e0a-4f1e-9d4a-3b1d2c9e8f70 ro rootflags=subvol=root rhgb quiet", c.cmdline)
    assert.are.equal("/boot/loader/entries/" .. MID .. "-" .. KVER .. ".conf", c.cmdline_source)
    assert.are.equal("/etc/kernel/cmdline", c.generated_from)
    assert.are.equal("grub blscfg (/boot/grub2/grub.cfg)", c.via)
  end)

  it("verify checks the initramfs the entry boots when it is not the generator's image, and says so", function()
    root = fedora_root("/initramfs-" .. KVER .. "-custom.img", nil, true)
    local list = assert(vfioinit.verify({ root = root }))
    assert.are.equal(1, #list)
    local r = list[1]
    assert.are.equal("dracut", r.generator)
    assert.are.equal("/boot/initramfs-" .. KVER .. "-custom.img", r.image)
    assert.are.equal("/boot/initramfs-" .. KVER .. ".img", r.generator_image)
    assert.are.equal("bls: " .. MID .. "-" .. KVER .. ".conf", r.chain)
    assert.is_false(r.ok)
    assert.truthy(tostring(r.error):find("/boot/initramfs-" .. KVER .. "-custom.img", 1, true))
    local out, _, code = h.sh(h.BIN .. " --root " .. h.q(root) .. " status")
    assert.are.equal(0, code)
    assert.truthy(out:find("image: /boot/initramfs-" .. KVER .. "-custom.img (dracut, " .. KVER
      .. ", booted by bls: " .. MID .. "-" .. KVER .. ".conf)", 1, true), out)
    out, _, code = h.sh(h.BIN .. " --root " .. h.q(root) .. " verify")
    assert.are.equal(2, code)
    assert.truthy(out:find("FAIL /boot/initramfs-" .. KVER .. "-custom.img (dracut, " .. KVER .. ", booted by bls: "
      .. MID .. "-" .. KVER .. ".conf instead of /boot/initramfs-" .. KVER .. ".img)", 1, true), out)
  end)

  it("judges only the generator that builds what boots: with several and none active, each keeps its image", function()
    root = h.all_root()
    h.writefile(root .. "/lib/modules/" .. KVER .. "/modules.dep", "")
    h.writefile(root .. "/boot/loader/entries/x.conf", "linux /vmlinuz-" .. KVER .. "\ninitrd /custom.img\n")
    local list = assert(vfioinit.verify({ root = root }))
    assert.are.equal(4, #list)
    for _, r in ipairs(list) do assert.is_nil(r.chain, r.generator) end
    -- the one selected generator is the one whose image boots
    local one = assert(vfioinit.verify({ root = root, generators = { "dracut" } }))
    assert.are.equal("/boot/custom.img", one[1].image)
  end)

  it("verify keeps the generator's image when the entry boots that one", function()
    root = fedora_root()
    local r = assert(vfioinit.verify({ root = root }))[1]
    assert.are.equal("/boot/initramfs-" .. KVER .. ".img", r.image)
    assert.is_nil(r.chain)
  end)

  it("marks the entry systemd-boot's loader.conf `default` glob selects; @saved selects none here", function()
    root = fedora_root(nil, { ["/boot/grub2/grub.cfg"] = false,
      ["/boot/loader/entries/zz-" .. KVER .. "-rescue.conf"] = "title rescue\nversion " .. KVER .. "\nlinux /vmlinuz-" .. KVER
        .. "\ninitrd /initramfs-rescue.img\noptions single\n",
      ["/boot/loader/loader.conf"] = "timeout 3\n# default " .. MID .. "-*\ndefault zz-*-rescue\n" })
    h.rm(root .. "/boot/grub2")
    local list = assert(vfioinit.boot_chains({ root = root }))
    assert.are.same({ "bls: " .. MID .. "-" .. KVER .. ".conf", "bls: zz-" .. KVER .. "-rescue.conf" }, entries(list))
    assert.is_nil(list[1].default)
    assert.is_true(list[2].default)
    assert.is_nil(list[2].via)
    h.writefile(root .. "/boot/loader/loader.conf", "default [!z]*.conf\n")
    list = assert(vfioinit.boot_chains({ root = root }))
    assert.is_true(list[1].default)
    assert.is_nil(list[2].default)
    h.writefile(root .. "/boot/loader/loader.conf", "default @saved\n")
    for _, c in ipairs(assert(vfioinit.boot_chains({ root = root }))) do assert.is_nil(c.default) end
  end)

  it("names the entry file and line of a malformed entry, and status still reports", function()
    root = fedora_root(nil, { ["/boot/loader/entries/zz-broken.conf"] = "title x\n= nope\n" })
    local before = h.tree_hash(root)
    local list, err = vfioinit.boot_chains({ root = root })
    assert.is_nil(list)
    assert.are.equal("/boot/loader/entries/zz-broken.conf:2: not a `key value` line", err)
    local out, _, code = h.sh(h.BIN .. " --root " .. h.q(root) .. " status 2>&1")
    assert.are.equal(0, code)
    assert.truthy(out:find("boot chains:\n  /boot/loader/entries/zz-broken.conf:2: not a `key value` line\n", 1, true), out)
    assert.falsy(out:find("traceback", 1, true))
    assert.are.equal(before, h.tree_hash(root))
  end)
end)

describe("boot chain: kernel-install layout=uki", function()
  local root
  after_each(function() if root then h.rm(root) end end)

  it("expects $BOOT_ROOT/EFI/Linux/<entry-token>-<kver>.efi, /etc's install.conf over /usr/lib's", function()
    root = root_with({ ["/etc/os-release"] = "ID=fedora\n", ["/etc/dracut.conf"] = "",
      ["/usr/lib/kernel/install.conf"] = "layout=bls\n", ["/etc/kernel/install.conf"] = "# ours\nlayout=uki\n",
      ["/etc/kernel/entry-token"] = "fedora\n", ["/efi/EFI/BOOT/BOOTX64.EFI"] = "x",
      ["/etc/kernel/cmdline"] = "quiet\n" }, { "/usr/bin/dracut" })
    local list = assert(vfioinit.boot_chains({ root = root }))
    assert.are.equal(1, #list)
    local c = list[1]
    assert.are.equal("uki", c.kind)
    assert.are.equal("/efi/EFI/Linux/fedora-" .. KVER .. ".efi", c.path)
    assert.are.equal(c.path, c.initramfs)
    assert.are.equal(c.path, c.cmdline_source)
    assert.are.equal("/etc/kernel/cmdline", c.generated_from)
    assert.are.equal("kernel-install: layout=uki in /etc/kernel/install.conf", c.entry)
    assert.is_false(c.exists)
  end)

  it("uses /usr/lib's install.conf alone, the machine id as token, /boot without an ESP", function()
    root = root_with({ ["/etc/os-release"] = "ID=fedora\n", ["/etc/dracut.conf"] = "",
      ["/usr/lib/kernel/install.conf"] = "layout=uki\n", ["/etc/machine-id"] = MID .. "\n" }, { "/usr/bin/dracut" })
    local c = assert(vfioinit.boot_chains({ root = root }))[1]
    assert.are.equal("/boot/EFI/Linux/" .. MID .. "-" .. KVER .. ".efi", c.path)
    -- layout=bls (or none) is no UKI: the generator's image is what is left
    h.writefile(root .. "/usr/lib/kernel/install.conf", "layout=bls\n")
    local list = assert(vfioinit.boot_chains({ root = root }))
    assert.are.equal("generator: dracut", list[1].entry)
  end)

  it("verify reads the UKI kernel-install builds, not the generator's image nothing boots", function()
    local u = require "uki_helpers"
    if u.missing() then pending("needs systemd-boot-efi's stub and binutils") return end
    root = root_with({ ["/etc/os-release"] = "ID=fedora\n", ["/etc/dracut.conf"] = "",
      ["/etc/kernel/install.conf"] = "layout=uki\n", ["/etc/kernel/entry-token"] = "fedora\n",
      ["/efi/EFI/BOOT/BOOTX64.EFI"] = "x" }, { "/usr/bin/dracut" }, {})
    assert.are.equal(KVER, (h.install_kernel(root, "cloud", KVER)))
    -- the generator's own image carries the modules; the UKI that boots does not
    local dir = h.tmpdir()
    local mods = {}
    for _, m in ipairs({ "vfio/vfio.ko", "vfio/vfio_iommu_type1.ko", "vfio/pci/vfio-pci.ko", "vfio/vfio_virqfd.ko" }) do
      mods["usr/lib/modules/" .. KVER .. "/kernel/drivers/" .. m] = "ko"
    end
    h.sh("mkdir -p " .. h.q(root .. "/boot") .. " && cp " .. h.q(u.initramfs(dir, mods)) .. " " .. h.q(root .. "/boot/initramfs-" .. KVER .. ".img"))
    local uki = "/efi/EFI/Linux/fedora-" .. KVER .. ".efi"
    h.sh("mkdir -p " .. h.q(root .. "/efi/EFI/Linux"))
    u.uki(dir, root .. uki, { cmdline = "quiet", uname = KVER,
      initrd = u.initramfs(dir, { ["etc/x"] = "x\n" }, nil, "bare.img") })
    h.rm(dir)
    local r = assert(vfioinit.verify({ root = root }))[1]
    assert.are.equal(uki, r.image)
    assert.are.equal("uki", r.kind)
    assert.are.equal("kernel-install: layout=uki in /etc/kernel/install.conf", r.chain)
    assert.is_false(r.ok)
    assert.truthy(#r.missing > 0)
    local out, _, code = h.sh(h.BIN .. " --root " .. h.q(root) .. " verify")
    assert.are.equal(2, code, out)
    assert.truthy(out:find("FAIL " .. uki, 1, true), out)
  end)

  it("refuses an install.conf that is not shell, naming its line", function()
    root = root_with({ ["/etc/os-release"] = "ID=fedora\n", ["/etc/dracut.conf"] = "",
      ["/etc/kernel/install.conf"] = "layout=uki\nBOOT_ROOT=\"/efi\n" }, { "/usr/bin/dracut" })
    local list, err = vfioinit.boot_chains({ root = root })
    assert.is_nil(list)
    assert.truthy(err:match("^/etc/kernel/install%.conf:%d+: "), err)
  end)
end)

-- A real PE file: systemd-boot's stub plus .uname/.cmdline sections (as ukify and mkinitcpio
-- add them), or nil when the stub or objcopy is not installed.
local function make_uki(path, uname, cmdline)
  if not h.readfile(STUB) or not select(2, h.sh("command -v objcopy >/dev/null")) then return nil end
  local d = h.tmpdir()
  h.writefile(d .. "/uname", uname)
  h.writefile(d .. "/cmdline", cmdline .. "\n\0")
  h.sh("mkdir -p " .. h.q(path:match("^(.*)/")))
  local out, ok = h.sh(("objcopy --add-section .uname=%s --change-section-vma .uname=0x30000 --add-section .cmdline=%s "
    .. "--change-section-vma .cmdline=0x31000 %s %s 2>&1"):format(h.q(d .. "/uname"), h.q(d .. "/cmdline"), STUB, h.q(path)))
  h.rm(d)
  assert(ok, out)
  return path
end

-- A reader of a UKI's sections for the spec, through binutils' objdump (the project's own
-- PE reader is vfioinit.boot.uki, which bootchain loads when it is there).
local function objdump_uki()
  return {
    read = function(root, path)
      local file = root .. path
      local info = {}
      for line in h.sh("objdump -h " .. h.q(file) .. " 2>/dev/null"):gmatch("[^\n]+") do
        local name, size, off = line:match("^%s*%d+%s+(%.%w+)%s+(%x+)%s+%x+%s+%x+%s+(%x+)")
        if name == ".uname" or name == ".cmdline" then
          local f = assert(io.open(file, "rb"))
          f:seek("set", tonumber(off, 16))
          info[name:sub(2)] = f:read(tonumber(size, 16))
          f:close()
        end
      end
      return info
    end,
  }
end

describe("boot chain: UKIs on the ESP (systemd-boot type #2, EFI/Linux/*.efi)", function()
  local root
  local saved
  before_each(function()
    saved = package.loaded["vfioinit.boot.uki"]
    root = root_with({ ["/etc/os-release"] = "ID=arch\n", ["/etc/mkinitcpio.conf"] = "MODULES=()\nHOOKS=(base udev)\n" },
      { "/usr/bin/mkinitcpio" }, { KVER, OTHER })
  end)
  after_each(function()
    package.loaded["vfioinit.boot.uki"] = saved
    h.rm(root)
  end)

  local function it_pe(name, fn)
    if h.readfile(STUB) then it(name, fn) else pending(name .. " (needs systemd-boot-efi's stub and binutils)") end
  end

  it_pe("without a section reader, the file name decides (-<kver>- or -<kver>.efi)", function()
    package.loaded["vfioinit.boot.uki"] = {}  -- a build without the PE reader
    make_uki(root .. "/efi/EFI/Linux/arch-" .. KVER .. ".efi", KVER, "root=/dev/vda quiet")
    make_uki(root .. "/boot/efi/EFI/Linux/arch-" .. OTHER .. "-fallback.efi", OTHER, "root=/dev/vda")
    local list = assert(vfioinit.boot_chains({ root = root }))
    assert.are.same({ "esp: /efi/EFI/Linux/arch-" .. KVER .. ".efi" }, entries(by_kernel(list, KVER)))
    assert.are.same({ "esp: /boot/efi/EFI/Linux/arch-" .. OTHER .. "-fallback.efi" }, entries(by_kernel(list, OTHER)))
    local c = by_kernel(list, KVER)[1]
    assert.are.equal("uki", c.kind)
    assert.are.equal("uefi", c.loader)
    assert.are.equal(c.path, c.cmdline_source)
    assert.is_nil(c.cmdline)            -- unknown without a reader
    assert.is_nil(c.default)
    -- loader.conf on the ESP: its `default` glob is matched against the UKI's file name
    h.writefile(root .. "/efi/loader/loader.conf", "default arch-" .. KVER .. "*\n")
    list = assert(vfioinit.boot_chains({ root = root }))
    assert.is_true(by_kernel(list, KVER)[1].default)
    assert.is_nil(by_kernel(list, OTHER)[1].default)
  end)

  it_pe("with a section reader, .uname decides and .cmdline is the command line", function()
    package.loaded["vfioinit.boot.uki"] = objdump_uki()
    make_uki(root .. "/efi/EFI/Linux/linux.efi", KVER, "root=/dev/vda quiet")
    -- named for KVER, built for OTHER: .uname wins
    make_uki(root .. "/efi/EFI/Linux/arch-" .. KVER .. ".efi", OTHER, "root=/dev/vdb")
    local list = assert(vfioinit.boot_chains({ root = root }))
    local mine = by_kernel(list, KVER)
    assert.are.same({ "esp: /efi/EFI/Linux/linux.efi" }, entries(mine))
    assert.are.equal("root=/dev/vda quiet", mine[1].cmdline)
    assert.are.same({ "esp: /efi/EFI/Linux/arch-" .. KVER .. ".efi" }, entries(by_kernel(list, OTHER)))
  end)

  it_pe("a reader that fails on one file does not fail the run: the file name decides", function()
    package.loaded["vfioinit.boot.uki"] = { read = function() error("boom") end }
    make_uki(root .. "/efi/EFI/Linux/arch-" .. KVER .. ".efi", KVER, "q")
    local list = assert(vfioinit.boot_chains({ root = root, kernels = { KVER } }))
    assert.are.equal(1, #list)
  end)
end)

-- mkinitcpio v41's own preset shape (tools/mkinitcpio), switched to a UKI as Arch's docs say.
local function preset(uki_on, image_on)
  return table.concat({
    "# mkinitcpio preset file for the '" .. KVER .. "' package", "",
    'ALL_kver="/boot/vmlinuz-' .. KVER .. '"', "", "PRESETS=('default' 'fallback')", "",
    (image_on and "" or "#") .. 'default_image="/boot/initramfs-' .. KVER .. '.img"',
    (uki_on and "" or "#") .. 'default_uki="/efi/EFI/Linux/arch-' .. KVER .. '.efi"',
    '#default_options="--splash /usr/share/systemd/bootctl/splash-arch.bmp"', "",
    (image_on and "" or "#") .. 'fallback_image="/boot/initramfs-' .. KVER .. '-fallback.img"',
    (uki_on and "" or "#") .. 'fallback_uki="/efi/EFI/Linux/arch-' .. KVER .. '-fallback.efi"',
    'fallback_options="-S autodetect"', "" }, "\n")
end

describe("boot chain: mkinitcpio preset with <preset>_uki", function()
  local root
  local function arch_root(p, extra)
    local files = { ["/etc/os-release"] = "ID=arch\n", ["/etc/mkinitcpio.conf"] = "MODULES=()\nHOOKS=(base udev)\n",
      ["/etc/mkinitcpio.d/" .. KVER .. ".preset"] = p, ["/etc/kernel/cmdline"] = "root=/dev/vda rw\n" }
    for k, v in pairs(extra or {}) do files[k] = v end
    return root_with(files, { "/usr/bin/mkinitcpio" }, { KVER, OTHER })
  end
  after_each(function() if root then h.rm(root) end end)

  it("names each preset's UKI before it is built, and no generator image when UKIs boot", function()
    root = arch_root(preset(true, false))
    local list = by_kernel(assert(vfioinit.boot_chains({ root = root })), KVER)
    local file = "/etc/mkinitcpio.d/" .. KVER .. ".preset"
    assert.are.same({ "preset: " .. file .. " default_uki", "preset: " .. file .. " fallback_uki" }, entries(list))
    assert.are.equal("/efi/EFI/Linux/arch-" .. KVER .. ".efi", list[1].path)
    assert.are.equal("mkinitcpio", list[1].generator)
    assert.are.equal("/etc/kernel/cmdline", list[1].generated_from)
    assert.is_false(list[1].exists)
    -- the preset is this kernel's only (ALL_kver names its image): the other kernel boots the default image
    assert.are.same({ "generator: mkinitcpio" }, entries(by_kernel(assert(vfioinit.boot_chains({ root = root })), OTHER)))
  end)

  it("an existing UKI found on the ESP is the preset's chain, not a second one", function()
    root = arch_root(preset(true, true), { ["/efi/EFI/Linux/arch-" .. KVER .. ".efi"] = "MZ" })
    local saved = package.loaded["vfioinit.boot.uki"]
    package.loaded["vfioinit.boot.uki"] = {}  -- a build without the PE reader
    local list = by_kernel(assert(vfioinit.boot_chains({ root = root })), KVER)
    package.loaded["vfioinit.boot.uki"] = saved
    assert.are.equal(2, #list)
    assert.is_true(list[1].exists)
    assert.truthy(list[1].entry:match("^preset: "))
  end)

  it("with the UKI lines commented out, the generator's image is what boots", function()
    root = arch_root(preset(false, true))
    local list = by_kernel(assert(vfioinit.boot_chains({ root = root })), KVER)
    assert.are.same({ "generator: mkinitcpio" }, entries(list))
    assert.are.equal("/boot/initramfs-" .. KVER .. ".img", list[1].initramfs)
  end)

  it("refuses a relative <preset>_uki, naming the preset file and line, and changes nothing", function()
    root = arch_root((preset(true, false):gsub('default_uki="/efi/', 'default_uki="efi/')))
    local before = h.tree_hash(root)
    local list, err = vfioinit.boot_chains({ root = root })
    assert.is_nil(list)
    assert.are.equal("/etc/mkinitcpio.d/" .. KVER .. ".preset:8: default_uki must be an absolute path (got \"efi/EFI/Linux/arch-"
      .. KVER .. ".efi\")", err)
    local out, _, code = h.sh(h.BIN .. " --root " .. h.q(root) .. " status 2>&1")
    assert.are.equal(0, code)
    assert.truthy(out:find("boot chains:\n  /etc/mkinitcpio.d/" .. KVER .. ".preset:8: default_uki must be", 1, true), out)
    assert.are.equal(before, h.tree_hash(root))
  end)

  it("uses the uki_path hook of a generator it has no rules for", function()
    root = arch_root(preset(true, false))
    local ctx = context.new({ root = root, distro = { id = "arch", id_like = {} } })
    local gen = { name = "mkinitfs", image_path = function() return "/boot/x.img" end,
      uki_path = function(_, k) return "/boot/EFI/Linux/hook-" .. k .. ".efi" end }
    local chains = assert(bootchain.chains(ctx, { KVER }, { gen }))
    assert.are.same({ "mkinitfs: uki" }, entries(chains[KVER]))
    assert.are.equal("/boot/EFI/Linux/hook-" .. KVER .. ".efi", chains[KVER][1].path)
    gen.uki_path = function() return "rel.efi" end
    local none, err = bootchain.chains(ctx, { KVER }, { gen })
    assert.is_nil(none)
    assert.are.equal("mkinitfs: uki_path gave rel.efi for " .. KVER .. ", not an absolute path", err)
  end)

  it("agrees with mkinitcpio's own uki_path (what rebuild builds and verify reads)", function()
    root = arch_root(preset(true, false))
    local ctx = context.new({ root = root, distro = { id = "arch", id_like = {} } })
    local gen = require "vfioinit.generators.mkinitcpio"
    local chains = assert(bootchain.chains(ctx, { KVER }, { gen }))
    local own = assert(gen.uki_path(ctx, KVER))
    assert.are.equal(own, chains[KVER][1].path)
    assert.are.equal(own, gen.image_path(ctx, KVER))
  end)
end)

describe("boot chain: dracut uefi=yes", function()
  local root
  after_each(function() if root then h.rm(root) end end)

  it("expects dracut's own UKI name under the ESP when a drop-in sets uefi=yes", function()
    root = root_with({ ["/etc/os-release"] = 'ID=fedora\nBUILD_ID="rawhide"\n', ["/etc/dracut.conf"] = "",
      ["/etc/dracut.conf.d/50-uki.conf"] = 'uefi="yes"\n', ["/etc/machine-id"] = MID .. "\n",
      ["/boot/efi/EFI/fedora/shimx64.efi"] = "x" }, { "/usr/bin/dracut" })
    local list = assert(vfioinit.boot_chains({ root = root }))
    assert.are.equal(1, #list)
    assert.are.equal("/boot/efi/EFI/Linux/linux-" .. KVER .. "-" .. MID .. "-rawhide.efi", list[1].path)
    assert.are.equal("dracut: uefi=yes in /etc/dracut.conf.d/50-uki.conf", list[1].entry)
    -- the same file dracut.lua's own hook names (what rebuild builds and verify reads)
    local ctx = context.new({ root = root, distro = { id = "fedora", id_like = {} } })
    assert.are.equal(list[1].path, assert(require("vfioinit.generators.dracut").uki_path(ctx, KVER)))
    -- a later drop-in turning it off wins (dracut sources them in name order)
    h.writefile(root .. "/etc/dracut.conf.d/90-no.conf", "uefi=no\n")
    assert.are.equal("generator: dracut", assert(vfioinit.boot_chains({ root = root }))[1].entry)
  end)
end)

describe("boot chain: the generator's default image", function()
  it("is each kernel's chain when no loader file names the kernel: no command line known", function()
    local root = root_with({ ["/etc/os-release"] = "ID=debian\n", ["/etc/initramfs-tools/modules"] = "",
      ["/boot/vmlinuz-" .. KVER] = "k" }, { "/usr/sbin/update-initramfs" })
    local list = assert(vfioinit.boot_chains({ root = root }))
    assert.are.equal(1, #list)
    local c = list[1]
    assert.are.equal("generator: initramfs-tools", c.entry)
    assert.are.equal("generator", c.loader)
    assert.are.equal("/boot/vmlinuz-" .. KVER, c.path)
    assert.are.equal("/boot/initrd.img-" .. KVER, c.initramfs)
    assert.is_nil(c.cmdline)
    assert.is_nil(c.cmdline_source)
    local out = h.sh(h.BIN .. " --root " .. h.q(root) .. " status")
    assert.truthy(out:find("  generator: initramfs-tools → " .. KVER .. " → /boot/vmlinuz-" .. KVER
      .. " → /boot/initrd.img-" .. KVER .. " (no command line known) [missing]\n", 1, true), out)
    h.rm(root)
    -- no kernel installed: nothing boots, and status says so
    root = h.make_root({ os = { ID = "debian" } })
    out = h.sh(h.BIN .. " --root " .. h.q(root) .. " status")
    assert.truthy(out:find("\nboot chains:\n  (none)\n", 1, true), out)
    h.rm(root)
  end)
end)

describe("vfioinit.boot_chains arguments", function()
  it("raises on a wrong type and returns nil, message for a kernel that is not installed", function()
    assert.has_error(function() vfioinit.boot_chains(42) end)
    assert.has_error(function() vfioinit.boot_chains({ kernels = "x" }) end)
    local root = root_with({ ["/etc/os-release"] = "ID=debian\n" })
    local list, err = vfioinit.boot_chains({ root = root, kernels = { "9.9.9" } })
    assert.is_nil(list)
    assert.are.equal("/lib/modules/9.9.9: no such kernel in " .. root, err)
    -- only the kernels asked for
    h.writefile(root .. "/lib/modules/" .. OTHER .. "/modules.dep", "")
    h.writefile(root .. "/boot/grub/grub.cfg", "menuentry a {\n linux /boot/vmlinuz-" .. OTHER .. "\n}\n"
      .. "menuentry b {\n linux /boot/vmlinuz-" .. KVER .. "\n}\n")
    list = assert(vfioinit.boot_chains({ root = root, kernels = { OTHER } }))
    assert.are.same({ "grub: a" }, entries(list))
    h.rm(root)
  end)
end)

describe("boot chain: real roots (tools/mkroot)", function()
  local real = os.getenv("VFIOINIT_REAL") == "1"
  for _, flavour in ipairs({ "initramfs-tools", "multi" }) do
    local dir = h.cache_dir() .. "/roots/" .. flavour
    local name = flavour .. ": every installed kernel has a chain naming an image that exists"
    if not real or not h.readfile(dir .. "/etc/os-release") then
      pending(name .. " (VFIOINIT_REAL=1 and a cached root)")
    else
      it(name, function()
        local before = h.tree_hash(dir .. "/boot")
        local inv = assert(vfioinit.detect({ root = dir }))
        local list = assert(vfioinit.boot_chains({ root = dir }))
        for _, k in ipairs(inv.kernels) do
          local mine = by_kernel(list, k)
          assert.is_true(#mine >= 1, k)
          assert.is_true(mine[1].exists, k .. ": " .. tostring(mine[1].initramfs))
        end
        assert.are.equal(before, h.tree_hash(dir .. "/boot"))
      end)
    end
  end

  -- issue 15's setup: the Arch-like root's preset switched to a UKI, default_image commented out
  local mk = h.cache_dir() .. "/roots/mkinitcpio"
  local name = "mkinitcpio v41 root with default_uki: the UKI is the kernel's chain, status says so"
  if not real or not h.readfile(mk .. "/etc/os-release") then
    pending(name .. " (VFIOINIT_REAL=1 and a cached root)")
  else
    it(name, function()
      local dir = h.tmpdir()
      local dest = dir .. "/root"
      local out, ok = h.sh("tools/clone-root --overlay mkinitcpio " .. h.q(dest) .. " 2>&1")
      assert(ok, out)
      local okr, err = pcall(function()
        local kver = assert(vfioinit.detect({ root = dest })).kernels[1]
        local pf = dest .. "/etc/mkinitcpio.d/" .. kver .. ".preset"
        local text = assert(h.readfile(pf))
        text = text:gsub("\ndefault_image=", "\n#default_image="):gsub("\n#default_uki=", "\ndefault_uki=")
        h.writefile(pf, text)
        local list = by_kernel(assert(vfioinit.boot_chains({ root = dest })), kver)
        assert.are.equal("preset: /etc/mkinitcpio.d/" .. kver .. ".preset default_uki", list[1].entry)
        assert.are.equal("/efi/EFI/Linux/arch-" .. kver .. ".efi", list[1].path)
        assert.are.equal(1, #list)
        local st = h.sh(h.BIN .. " --root " .. h.q(dest) .. " status")
        assert.truthy(st:find("  preset: /etc/mkinitcpio.d/" .. kver .. ".preset default_uki → " .. kver
          .. " → UKI /efi/EFI/Linux/arch-" .. kver .. ".efi", 1, true), st)
      end)
      h.sh("tools/clone-root --remove " .. h.q(dest) .. " >/dev/null 2>&1")
      h.rm(dir)
      assert(okr, err)
    end)
  end
end)

-- apply with a stand-in booster (core.spawn.run writes a real newc image with the kernel's
-- VFIO modules, as in spec/42-run_spec.lua): the rebuild is judged on what it built, the
-- final verification on what the boot entry loads.
describe("boot chain: apply verifies what boots, not only what it built", function()
  local core = require "vfioinit.core"
  local root, real_spawn, built, unstub

  local function stub_spawn(o)
    local image = o.argv[6]
    h.booster_image(root, o.argv[5], image)
    built[#built + 1] = image
    return { status = 0, timed_out = false, seconds = 0.01 }
  end

  before_each(function()
    built = {}
    root = h.make_root({ os = { ID = "arch" }, files = { ["/etc/booster.yaml"] = "" } })
    h.writefile(root .. "/usr/bin/booster", "\127ELF stand-in\n", 493)
    assert.are.equal(KVER, (h.install_kernel(root, "cloud", KVER)))
    real_spawn = core.spawn.run
    core.spawn.run = stub_spawn
    unstub = h.start_via_run(core)
  end)
  after_each(function()
    unstub()
    core.spawn.run = real_spawn
    h.rm(root)
  end)

  it("fails, naming the entry, when the entry loads an image the generator does not build", function()
    h.writefile(root .. "/boot/loader/entries/arch.conf",
      "title Arch\nlinux /vmlinuz-" .. KVER .. "\ninitrd /initramfs-" .. KVER .. "-custom.img\noptions rw\n")
    local none, _, rep = vfioinit.update_initramfs({ root = root })
    assert.is_nil(none)
    assert.are.same({ "/boot/booster-" .. KVER .. ".img" }, built)   -- the rebuild builds what it always built
    assert.is_true(rep.rebuilt[1].ok)
    assert.is_false(rep.ok)
    assert.are.equal("bls: arch.conf boots /boot/initramfs-" .. KVER .. "-custom.img, not /boot/booster-" .. KVER
      .. ".img (the image booster builds): /boot/initramfs-" .. KVER .. "-custom.img: no image", rep.error)
  end)

  it("succeeds when the entry loads the generator's image", function()
    h.writefile(root .. "/boot/loader/entries/arch.conf",
      "title Arch\nlinux /vmlinuz-" .. KVER .. "\ninitrd /booster-" .. KVER .. ".img\noptions rw\n")
    local rep = vfioinit.update_initramfs({ root = root })
    assert.is_true(rep.ok, rep.error)
    assert.are.equal("/boot/booster-" .. KVER .. ".img", rep.verified[1].image)
    assert.is_nil(rep.verified[1].chain)
  end)
end)
