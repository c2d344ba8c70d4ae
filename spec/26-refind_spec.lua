-- rEFInd (lua/vfioinit/boot/loaders/refind.lua): what each entry boots, read as rEFInd 0.13.2's
-- refind/config.c, scan.c and linux.c read refind_linux.conf and refind.conf; the words put
-- into the options fields in place (every other byte kept), read back, and reverted. The
-- files: Debian's refind.conf-sample and the linux.html example (spec/fixtures/refind), and
-- hand-written shapes. Expected values are worked out from rEFInd's rules, not from the module.
local h = require "helpers"
local v = require "vfioinit"
local refind = require "vfioinit.boot.loaders.refind"
local context = require "vfioinit.context"

local FIX = h.project .. "/spec/fixtures/refind/"
local WORDS = "intel_iommu=on iommu=pt vfio-pci.ids=1af4:1000"

-- A Debian-like root with a kernel, its initrd, rEFInd on the ESP at /boot/efi.
local function refind_root(files)
  local all = { ["/etc/initramfs-tools/modules"] = "# modules\n",
    ["/boot/efi/EFI/refind/refind.conf"] = h.readfile(FIX .. "refind.conf-sample"),
    ["/boot/refind_linux.conf"] = h.readfile(FIX .. "refind_linux.conf") }
  for k, x in pairs(files or {}) do all[k] = x or nil end
  local root = h.make_root({ os = { ID = "debian" }, files = all, exec = { "/usr/sbin/update-initramfs" } })
  local kver = h.install_kernel(root, "cloud")
  h.writefile(root .. "/boot/vmlinuz-" .. kver, "kernel")
  h.writefile(root .. "/boot/initrd.img-" .. kver, "initrd")
  return root, kver
end

local function values(list)
  local out = {}
  for i, t in ipairs(list) do out[i] = t.value end
  return out
end

describe("rEFInd: tokens as ReadTokenLine reads them", function()
  it("splits at blanks, = and , outside quotes, doubles quotes, turns an unquoted / into \\", function()
    assert.are.same({ "options", "root=/dev/sda3 ro" }, values(refind.tokens('options "root=/dev/sda3 ro"')))
    assert.are.same({ "loader", "\\boot\\vmlinuz-linux" }, values(refind.tokens("  loader   /boot/vmlinuz-linux")))
    assert.are.same({ "Boot", "root", "\\dev\\sda1", "ro" }, values(refind.tokens('"Boot" root=/dev/sda1,ro')))
    assert.are.same({ "a", 'my_opt="this is it"' }, values(refind.tokens('a "my_opt=""this is it"""')))
    assert.are.same({ "x" }, values(refind.tokens("x # comment")))
    assert.are.same({}, values(refind.tokens("   # only a comment")))
  end)

  it("the version string is first digit to last (FindNumbers); %v is replaced once, %%v is a literal %v", function()
    assert.are.equal("6.1.0-18-amd64", refind.version("vmlinuz-6.1.0-18-amd64"))
    assert.are.equal("5.4.0", refind.version("bzImage-5.4.0.efi"))
    assert.is_nil(refind.version("vmlinuz-linux"))
    assert.are.equal("initrd=a-5.5.0.img b-%v", refind.expand("initrd=a-%v.img b-%v", "5.5.0"))
    assert.are.equal("x=%v", refind.expand("x=%%v", "5.5.0"))
  end)

  it("picks the initrd sharing the kernel's version and most characters after it (FindInitrd)", function()
    local names = { "initrd-4.8.0-32-debug", "initrd-4.8.0-32-standard", "vmlinuz-4.8.0-32-standard", "initrd-5.0" }
    assert.are.equal("initrd-4.8.0-32-standard", refind.find_initrd(names, "vmlinuz-4.8.0-32-standard"))
    assert.are.equal("initramfs-linux.img", refind.find_initrd({ "initramfs-linux.img" }, "vmlinuz-linux"))
    assert.is_nil(refind.find_initrd({ "initrd-5.0" }, "vmlinuz-linux"))
  end)
end)

describe("rEFInd: what boots", function()
  it("each refind_linux.conf line rEFInd reads is an entry of the kernel, the first the default, with initrd= added", function()
    local root, kver = refind_root()
    finally(function() h.rm(root) end)
    local ctx = context.new({ root = root })
    local chains = assert(refind.entries(ctx, kver))
    -- the sample's stanzas are all `disabled`: only the three lines (the comment line is none)
    assert.are.equal(3, #chains)
    local opts = "ro root=UUID=084f544a-7559-4d4b-938a-b920f59edc7e"
    assert.are.equal(opts .. " splash=silent quiet showopts  initrd=\\boot\\initrd.img-" .. kver, chains[1].cmdline)
    assert.are.equal(opts .. " initrd=\\boot\\initrd.img-" .. kver, chains[3].cmdline)
    assert.is_true(chains[1].default)
    assert.is_nil(chains[2].default)
    assert.are.equal("/boot/initrd.img-" .. kver, chains[1].initramfs)
    assert.are.equal("/boot/vmlinuz-" .. kver, chains[1].path)
  end)

  it("an options field with initrd= gets none added; %v is the initrd's version on the default line", function()
    local root, kver = refind_root({ ["/boot/refind_linux.conf"] =
      '"Main" "root=/dev/vda initrd=\\boot\\initrd.img-%v"\n"Other" "root=/dev/vda"\n"lone"\n"Dropped" "after the lone title"\n' })
    finally(function() h.rm(root) end)
    local chains = assert(refind.entries(context.new({ root = root }), kver))
    -- scan.c reads the submenu up to the first line with fewer than two tokens
    assert.are.equal(2, #chains)
    assert.are.equal("root=/dev/vda initrd=\\boot\\initrd.img-" .. kver, chains[1].cmdline)
    assert.are.equal("root=/dev/vda initrd=\\boot\\initrd.img-" .. kver, chains[2].cmdline)
  end)

  it("an enabled refind.conf stanza booting the kernel is an entry; default_selection picks it by title", function()
    local conf = 'timeout 5\ndefault_selection "Debian direct"\nmenuentry "Debian direct" {\n    loader /boot/vmlinuz-KVER\n'
      .. '    initrd /boot/initrd.img-KVER\n    options "root=/dev/vda ro"\n    submenuentry "single" {\n'
      .. '        add_options "single"\n    }\n}\nmenuentry Off {\n    loader /boot/vmlinuz-KVER\n    disabled\n}\n'
    local root, kver = refind_root()
    finally(function() h.rm(root) end)
    h.writefile(root .. "/boot/efi/EFI/refind/refind.conf", (conf:gsub("KVER", kver)))
    local chains = assert(refind.entries(context.new({ root = root }), kver))
    assert.are.equal(5, #chains)   -- the stanza, its submenu, the three refind_linux.conf lines
    assert.are.equal("root=/dev/vda ro initrd=\\boot\\initrd.img-" .. kver, chains[1].cmdline)
    assert.are.equal("root=/dev/vda ro single initrd=\\boot\\initrd.img-" .. kver, chains[2].cmdline)
    assert.is_true(chains[1].default)
    assert.is_false(chains[3].default or false, "default_selection names the stanza, not the scanned kernel")
  end)

  it("errors name file and line: unquoted options rEFInd would cut, an unclosed stanza", function()
    local root, kver = refind_root({ ["/boot/refind_linux.conf"] = '# x\n"Boot" root=/dev/vda ro\n' })
    finally(function() h.rm(root) end)
    local ok, err = refind.entries(context.new({ root = root }), kver)
    assert.is_nil(ok)
    assert.are.equal("/boot/refind_linux.conf:2: the options are not quoted: rEFInd passes only `root` of them "
      .. "(quote the options field)", err)
    h.writefile(root .. "/boot/refind_linux.conf", '"Boot" "ro"\n')
    h.writefile(root .. "/boot/efi/EFI/refind/refind.conf", "timeout 5\n\nmenuentry Linux {\n  loader /boot/vmlinuz\n")
    ok, err = refind.entries(context.new({ root = root }), kver)
    assert.is_nil(ok)
    assert.are.equal("/boot/efi/EFI/refind/refind.conf:3: `menuentry` block not closed with `}`", err)
  end)
end)

describe("rEFInd: --cmdline", function()
  it("puts the words into every options field in place, reads them back, and revert restores every byte", function()
    local conf = "menuentry \"Debian direct\" {\r\n\tloader /boot/vmlinuz-KVER\r\n\tinitrd /boot/initrd.img-KVER\r\n}\r\n"
    local root, kver = refind_root()
    finally(function() h.rm(root) end)
    local rc = (h.readfile(FIX .. "refind.conf-sample") .. conf:gsub("KVER", kver))
    h.writefile(root .. "/boot/efi/EFI/refind/refind.conf", rc)
    local rl = h.readfile(root .. "/boot/refind_linux.conf")
    local r = v.update_initramfs({ root = root, ids = "1af4:1000", cmdline = true, rebuild = false })
    assert.is_true(r.ok, r.error)
    -- each options field ends with the words (after its own blank, or one), nothing else moved
    local u = "ro root=UUID=084f544a-7559-4d4b-938a-b920f59edc7e"
    assert.are.equal('"Boot with standard options"  "' .. u .. ' splash=silent quiet showopts ' .. WORDS .. '"\n'
      .. '"Boot to single-user mode"    "' .. u .. ' splash=silent quiet showopts single ' .. WORDS .. '"\n'
      .. '"Boot with minimal options"   "' .. u .. ' ' .. WORDS .. '"\n# This line is a comment\n',
      h.readfile(root .. "/boot/refind_linux.conf"))
    -- the stanza had no options: a line after its loader, indented and ended as that one
    local stanza = h.readfile(root .. "/boot/efi/EFI/refind/refind.conf"):sub(#h.readfile(FIX .. "refind.conf-sample") + 1)
    assert.are.equal(("menuentry \"Debian direct\" {\r\n\tloader /boot/vmlinuz-KVER\r\n\toptions \"" .. WORDS
      .. "\"\r\n\tinitrd /boot/initrd.img-KVER\r\n}\r\n"):gsub("KVER", kver), stanza)
    for _, c in ipairs(assert(refind.entries(context.new({ root = root }), kver))) do
      assert.truthy(c.cmdline:find(WORDS, 1, true), c.entry .. ": " .. c.cmdline)
    end
    local ver = v.verify({ root = root, ids = "1af4:1000", cmdline = true })
    local seen = 0
    for _, x in ipairs(ver or {}) do
      if x.generator == "cmdline" then seen = seen + 1; assert.is_true(x.ok, x.error or x.entry) end
    end
    assert.are.equal(4, seen)
    assert.truthy(v.revert({ root = root }))
    assert.are.equal(rl, h.readfile(root .. "/boot/refind_linux.conf"))
    assert.are.equal(rc, h.readfile(root .. "/boot/efi/EFI/refind/refind.conf"))
  end)

  it("merges into a parameter the options already carry, re-quoting a doubled quote", function()
    local root = refind_root({ ["/boot/refind_linux.conf"] =
      '"Boot"   "root=/dev/vda intel_iommu=sm_on x=""a b"""   # mine\n' })
    finally(function() h.rm(root) end)
    local r = v.update_initramfs({ root = root, ids = "1af4:1000", cmdline = true, rebuild = false })
    assert.is_true(r.ok, r.error)
    assert.are.equal('"Boot"   "root=/dev/vda intel_iommu=sm_on,on x=""a b"" iommu=pt vfio-pci.ids=1af4:1000"   # mine\n',
      h.readfile(root .. "/boot/refind_linux.conf"))
  end)

  it("a kernel rEFInd boots with options from /etc/fstab (no refind_linux.conf) is an error, nothing written", function()
    local root = refind_root({ ["/boot/refind_linux.conf"] = false })
    finally(function() h.rm(root) end)
    local rc = h.readfile(root .. "/boot/efi/EFI/refind/refind.conf")
    local r, err = v.update_initramfs({ root = root, ids = "1af4:1000", cmdline = true, rebuild = false })
    assert.is_nil(r)
    assert.truthy(err:find("/boot: rEFInd derives the options of /boot/vmlinuz-", 1, true), err)
    assert.are.equal(rc, h.readfile(root .. "/boot/efi/EFI/refind/refind.conf"))
  end)
end)
