-- vfioinit.boot.cfg: what GRUB's generated grub.cfg and a BLS entry make the loader boot.
local bootcfg = require "vfioinit.boot.cfg"
local h = require "helpers"

local FIX = h.project .. "/spec/fixtures/boot/"

describe("bootcfg.grub_words()", function()
  it("splits on blanks and removes GRUB's quoting", function()
    assert.are.same({ "menuentry", "Debian GNU/Linux", "--class", "debian", "{" },
      bootcfg.grub_words("menuentry 'Debian GNU/Linux' --class debian {"))
    assert.are.same({ "echo", 'a "b" c', "x y" }, bootcfg.grub_words([[echo "a \"b\" c" x\ y]]))
    assert.are.same({ "linux", "/vmlinuz" }, bootcfg.grub_words("\tlinux\t/vmlinuz  # comment"))
    assert.are.same({ "a#b" }, bootcfg.grub_words("a#b"))
  end)
end)

describe("bootcfg.grub()", function()
  local cfg = bootcfg.grub(h.readfile(FIX .. "debian12-grub.cfg"))

  it("lists every menu entry in file order, submenus flattened, with their title path", function()
    local titles = {}
    for _, e in ipairs(cfg.entries) do titles[#titles + 1] = table.concat(e.titles, " > ") end
    assert.are.same({
      "Debian GNU/Linux",
      "Advanced options for Debian GNU/Linux > Debian GNU/Linux, with Linux 6.1.0-57-cloud-amd64",
      "Advanced options for Debian GNU/Linux > Debian GNU/Linux, with Linux 6.1.0-57-cloud-amd64 (recovery mode)",
      "Memory test (memtest86+x64.bin)",
    }, titles)
  end)

  it("gives each entry's kernel, initrds and the command line GRUB passes", function()
    local e = cfg.entries[1]
    assert.are.equal("/boot/vmlinuz-6.1.0-57-cloud-amd64", e.linux)
    assert.are.same({ "/boot/initrd.img-6.1.0-57-cloud-amd64" }, e.initrd)
    assert.are.equal("root=UUID=0b1c7a3e-5d2f-4c53-9b8e-1f2a3b4c5d6e ro console=ttyS0 quiet intel_iommu=on", e.cmdline)
    assert.are.equal("gnulinux-simple-0b1c7a3e-5d2f-4c53-9b8e-1f2a3b4c5d6e", e.id)
    assert.are.equal(53, e.linux_line)
    assert.truthy(cfg.entries[3].cmdline:find(" single ", 1, true))
    assert.are.equal("/boot/memtest86+x64.bin", cfg.entries[4].linux)   -- linux16
    assert.are.same({}, cfg.entries[4].initrd)
  end)

  it("keeps the top-level default, not one set inside a block", function()
    -- the header sets default twice inside if/else (not a brace block): the last one counts
    assert.are.equal("0", cfg.default)
    assert.is_nil(bootcfg.grub("menuentry 'x' {\nset default=3\n}\n").default)
  end)

  it("does not take lines of a function block for an entry's", function()
    local c = bootcfg.grub("function f {\n linux /nope\n}\nmenuentry a {\n linux /k a=1\n}\n")
    assert.are.equal(1, #c.entries)
    assert.are.equal("/k", c.entries[1].linux)
  end)

  it("marks a grub.cfg whose entries come from BLS (blscfg)", function()
    assert.is_true(bootcfg.grub("insmod blscfg\nblscfg\n").blscfg)
    assert.is_nil(cfg.blscfg)
  end)

  it("quotes an argument with a blank as GRUB's loader does", function()
    local c = bootcfg.grub("menuentry a {\n linux /k 'x=a b' y\n}\n")
    assert.are.equal('"x=a b" y', c.entries[1].cmdline)
  end)
end)

describe("bootcfg.bls()", function()
  it("reads a type #1 entry", function()
    local e = assert(bootcfg.bls(h.readfile(FIX .. "fedora-bls.conf")))
    assert.are.equal("6.5.6-300.fc39.x86_64", e.version)
    assert.are.equal("/vmlinuz-6.5.6-300.fc39.x86_64", e.linux)
    assert.are.same({ "/initramfs-6.5.6-300.fc39.x86_64.img" }, e.initrd)
    assert.are.equal("root=UUID=5b2b7a4c-1e0a-4f1e-9d4a-3b1d2c9e8f70 ro rootflags=subvol=root rhgb quiet", e.options)
    assert.are.equal(5, e.lines.options)
  end)

  it("joins repeated options and initrds in order", function()
    local e = assert(bootcfg.bls("# c\nlinux /k\ninitrd /a\ninitrd /b\noptions x=1\n\noptions  y\n"))
    assert.are.same({ "/a", "/b" }, e.initrd)
    assert.are.equal("x=1 y", e.options)
  end)

  it("names the line that is not `key value`", function()
    local e, msg, line = bootcfg.bls("linux /k\n= oops\n")
    assert.is_nil(e)
    assert.are.equal(2, line)
    assert.truthy(msg:find("key value", 1, true))
  end)
end)

describe("bootcfg.grub_defaults()", function()
  -- the menu of Debian's grub.cfg: entry 0, a submenu (1) of two entries, a memtest entry (2)
  local cfg = bootcfg.grub(h.readfile(FIX .. "debian12-grub.cfg"))
  local function pick(default, env)
    local c = bootcfg.grub(h.readfile(FIX .. "debian12-grub.cfg"):gsub('set default="0"', "set default=" .. default))
    return bootcfg.grub_defaults(c, env)
  end

  it("takes a leading number as strtoul does (0x hex, 0 octal, what follows ignored)", function()
    assert.are.same({ 4 }, pick('"2"'))
    assert.are.same({ 4 }, pick('"0x2"'))
    assert.are.same({ 4 }, pick('"02"'))
    assert.are.same({ 4 }, pick('"2 trailing"'))
    assert.are.same({ 1 }, pick('"9"'))   -- past the end: entry 0
  end)

  it("matches a title or an id per level, `>>` standing for a `>` in a name", function()
    local c = bootcfg.grub("menuentry 'a>b' {\n linux /k\n}\nmenuentry 'c' --id x {\n linux /k\n}\nset default='a>>b'\n")
    assert.are.same({ 1 }, bootcfg.grub_defaults(c))
    c.default = "x"
    assert.are.same({ 2 }, bootcfg.grub_defaults(c))
    c.default = "nosuch"
    assert.are.same({ 1 }, bootcfg.grub_defaults(c))
  end)

  it("puts grubenv's saved_entry in and starts next_entry first when the file takes it", function()
    assert.is_true(cfg.next_entry)
    local env = bootcfg.grubenv("# GRUB Environment Block\nsaved_entry=1>1\nnext_entry=2\n####")
    assert.are.same({ "1>1", "2" }, { env.saved_entry, env.next_entry })
    assert.are.same({ 4, 3 }, pick('"${saved_entry}"', env))
    assert.are.same({ 4, 1 }, pick('"0"', env))
    assert.are.same({ 1 }, pick('"$saved_entry"', {}))
  end)
end)
