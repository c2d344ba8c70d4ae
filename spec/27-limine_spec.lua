-- Limine (lua/vfioinit/boot/loaders/limine.lua): limine.conf as Limine 8's common/lib/config.c
-- and menu.c read it (CONFIG.md: entries, `key: value` options, macros, default_entry, the
-- `#<blake2b>` pin on a path); the words put on each Linux entry's command line in place,
-- read back, reverted; a pin on a file the rebuild changed gets the file's new BLAKE2b.
-- Oracle of the hashes: coreutils' b2sum. Limine is not in Debian: the fixtures are written
-- to its documented format (spec/fixtures/limine).
local h = require "helpers"
local v = require "vfioinit"
local limine = require "vfioinit.boot.loaders.limine"
local bootloaders = require "vfioinit.boot.cmdline"
local context = require "vfioinit.context"
local runs = require "vfioinit.run"

local FIX = h.project .. "/spec/fixtures/limine/"
local WORDS = "intel_iommu=on iommu=pt vfio-pci.ids=1af4:1000"

local function b2sum(path) return (h.sh("b2sum " .. h.q(path)):match("^(%x+)")) end

-- An Arch-like root: the kernel as vmlinuz-KVER (names_kernel's rule), its initramfs, and
-- limine.conf on the ESP mounted at /boot (its `boot():` partition).
local function limine_root(conf)
  local root = h.make_root({ os = { ID = "debian" }, files = { ["/etc/initramfs-tools/modules"] = "# modules\n" },
    exec = { "/usr/sbin/update-initramfs" } })
  local kver = h.install_kernel(root, "cloud")
  h.writefile(root .. "/boot/vmlinuz-" .. kver, "kernel")
  h.writefile(root .. "/boot/initrd.img-" .. kver, "initrd, first build")
  h.writefile(root .. "/boot/EFI/BOOT/BOOTX64.EFI", "limine (no config hash enrolled)")
  h.writefile(root .. "/boot/limine.conf", (conf:gsub("KVER", kver)))
  return root, kver
end

local CONF = "timeout: 3\n${ROOT}=root=/dev/vda rw\n\n/Debian\n    protocol: linux\n    path: boot():/vmlinuz-KVER\n"
  .. "    cmdline: ${ROOT} quiet\n    module_path: boot():/initrd.img-KVER\n\n/Debian, no command line\n"
  .. "    protocol: linux\n    kernel_path: boot():/vmlinuz-KVER\n    module_path: boot():/initrd.img-KVER\n"

describe("Limine: limine.conf as Limine reads it", function()
  it("the Arch-style fixture: entries, macros, kernel_cmdline before cmdline, module_path in order, default_entry", function()
    local conf = assert(limine.parse(h.readfile(FIX .. "limine.conf"), "limine.conf"))
    local titles = {}
    for i, e in ipairs(conf.entries) do titles[i] = e.title end
    assert.are.same({ "Arch Linux", "Arch Linux (fallback)", "Tools", "Memtest86+" }, titles)
    assert.are.equal("root=UUID=9a5c5c7a-4a1f-4c9a-a7a3-3b0b2f2e1d10 rw quiet", conf.entries[1].opts.cmdline.value)
    assert.are.equal("${ROOT} quiet", conf.entries[1].opts.cmdline.raw)
    assert.are.equal(2, #conf.entries[2].modules)
    assert.is_true(conf.entries[3].dir)
    -- default_entry: 2 counts the menu as shown: the second line is the fallback entry
    assert.are.equal("Arch Linux (fallback)", limine.default(conf).title)
  end)

  it("default_entry counts a collapsed directory as one line; remember_last_entry leaves it unknown", function()
    local text = "default_entry: 3\n/Dir\n//Inside\nprotocol: linux\n/+Open\n//A\nprotocol: linux\n//B\nprotocol: linux\n"
    assert.are.equal("A", limine.default(assert(limine.parse(text, "x"))).title)
    assert.is_nil(limine.default(assert(limine.parse("remember_last_entry: yes\n" .. text, "x"))))
    -- the first of two cmdline options counts, kernel_cmdline before it; path before kernel_path
    local c = assert(limine.parse("/E\nCMDLINE: a\nKernel_Cmdline: b\ncmdline: c\npath: boot():/x\nkernel_path: boot():/y\n", "x"))
    assert.are.equal("b", c.entries[1].opts.kernel_cmdline.value)
    assert.are.equal("a", c.entries[1].opts.cmdline.value)
    assert.are.same({ resource = "boot", arg = "", path = "/x", hash = nil },
      limine.split_path(c.entries[1].opts.path.value))
    assert.are.same({ resource = "guid", arg = "736b", path = "/a#b", hash = "ff" }, limine.split_path("$guid(736b):/a#b#ff"))
  end)

  it("errors name file and line: an unclosed macro, a child with no parent", function()
    local ok, err = limine.parse("timeout: 1\n/E\ncmdline: ${ROOT quiet\n", "/boot/limine.conf")
    assert.is_nil(ok)
    assert.are.equal("/boot/limine.conf:3: malformed macro usage (`${` without `}`)", err)
    ok, err = limine.parse("/A\n///Deep\n", "/boot/limine.conf")
    assert.is_nil(ok)
    assert.are.equal('/boot/limine.conf:2: `///` has no parent entry (Limine: "Parentless child")', err)
  end)

  it("what boots: each Linux entry of the kernel, its modules as initrds, its command line expanded", function()
    local root, kver = limine_root(CONF)
    finally(function() h.rm(root) end)
    local chains = assert(limine.entries(context.new({ root = root }), kver))
    assert.are.equal(2, #chains)
    assert.are.equal("root=/dev/vda rw quiet", chains[1].cmdline)
    assert.are.equal("", chains[2].cmdline)
    assert.are.equal("/boot/initrd.img-" .. kver, chains[1].initramfs)
    assert.is_true(chains[1].default)
  end)
end)

describe("Limine: --cmdline", function()
  it("puts the words on each entry's command line in place (a cmdline: line where there is none); revert restores", function()
    local root, kver = limine_root(CONF)
    finally(function() h.rm(root) end)
    local before = h.readfile(root .. "/boot/limine.conf")
    local r = v.update_initramfs({ root = root, ids = "1af4:1000", cmdline = true, rebuild = false })
    assert.is_true(r.ok, r.error)
    local want = (CONF:gsub("KVER", kver)):gsub("cmdline: %${ROOT} quiet\n", "cmdline: ${ROOT} quiet " .. WORDS .. "\n")
      :gsub("(/Debian, no command line\n)", "%1    cmdline: " .. WORDS .. "\n")
    assert.are.equal(want, h.readfile(root .. "/boot/limine.conf"))
    for _, c in ipairs(assert(limine.entries(context.new({ root = root }), kver))) do
      assert.truthy(c.cmdline:find(WORDS, 1, true), c.cmdline)
    end
    assert.truthy(v.revert({ root = root }))
    assert.are.equal(before, h.readfile(root .. "/boot/limine.conf"))
  end)

  it("a parameter a macro supplies is an error naming the line; an enrolled config hash refuses the edit", function()
    local root = limine_root("${K}=intel_iommu=off\n/D\nprotocol: linux\npath: boot():/vmlinuz-KVER\ncmdline: ${K} ro\n")
    finally(function() h.rm(root) end)
    local r, err = v.update_initramfs({ root = root, ids = "1af4:1000", cmdline = true, rebuild = false })
    assert.is_nil(r)
    assert.are.equal("/boot/limine.conf:5: intel_iommu comes from a macro on this line: set it in the macro's definition", err)
    h.writefile(root .. "/boot/limine.conf", (h.readfile(root .. "/boot/limine.conf"):gsub("%${K} ", "")))
    h.writefile(root .. "/boot/EFI/BOOT/BOOTX64.EFI", "\0\1" .. limine.SIGNATURE .. ("ab"):rep(64) .. "\0")
    r, err = v.update_initramfs({ root = root, ids = "1af4:1000", cmdline = true, rebuild = false })
    assert.is_nil(r)
    assert.truthy(err:find("enrolled in /boot/EFI/BOOT/BOOTX64.EFI", 1, true), err)
  end)
end)

describe("Limine: a hash pinned on a rebuilt file", function()
  local registry = require("vfioinit.generators").new()

  it("gets the file's new BLAKE2b after the rebuild (b2sum's), other bytes kept; a BLAKE3 pin fails naming the line", function()
    local root, kver = limine_root(CONF)
    finally(function() h.rm(root) end)
    local img = root .. "/boot/initrd.img-" .. kver
    local old = b2sum(img)
    local pinned = (CONF:gsub("KVER", kver)):gsub("(module_path: boot%(%):/initrd%.img%-[^\n]*)", "%1#" .. old)
    h.writefile(root .. "/boot/limine.conf", pinned)
    h.writefile(img, "initrd, rebuilt with the VFIO modules")
    local new = b2sum(img)
    assert.are_not.equal(old, new)
    local run = assert(runs.new({ root = root }, registry, "rebuild"))
    assert(bootloaders.after_rebuild(run, { { ok = true, image = "/boot/initrd.img-" .. kver } }))
    assert.are.equal((pinned:gsub(old, new)), h.readfile(root .. "/boot/limine.conf"))
    -- an image the rebuild did not write keeps its pin
    assert(bootloaders.after_rebuild(run, { { ok = true, image = "/boot/other.img" } }))
    assert.are.equal((pinned:gsub(old, new)), h.readfile(root .. "/boot/limine.conf"))
    run:close()

    local b3 = (CONF:gsub("KVER", kver)):gsub("(module_path: boot%(%):/initrd%.img%-[^\n]*)", "%1#" .. ("0f"):rep(32), 1)
    h.writefile(root .. "/boot/limine.conf", b3)
    run = assert(runs.new({ root = root }, registry, "rebuild"))
    local ok, err = bootloaders.after_rebuild(run, { { ok = true, image = "/boot/initrd.img-" .. kver } })
    run:close()
    assert.is_nil(ok)
    assert.are.equal(("/boot/limine.conf:8: /boot/initrd.img-%s is pinned by a BLAKE3 hash, which vfioinit cannot compute; "
      .. "the rebuild changed /boot/initrd.img-%s: pin it again (b2sum, 128 hex digits)"):format(kver, kver), err)
    assert.are.equal(b3, h.readfile(root .. "/boot/limine.conf"))
  end)

  it("core.sig.blake2b is b2sum's digest", function()
    local dir = h.tmpdir()
    finally(function() h.rm(dir) end)
    h.sh("head -c 300000 /dev/urandom > " .. h.q(dir .. "/f"))
    assert.are.equal(b2sum(dir .. "/f"), require("vfioinit.core").sig.blake2b(dir, "/f"))
    local ok, err = require("vfioinit.core").sig.blake2b(dir, "/missing")
    assert.is_nil(ok)
    assert.truthy(err:find("^/missing: "), err)
  end)
end)
