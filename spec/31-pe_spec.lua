-- core.image.sections / core.image.section (src/pe.c) and core.image.list's window, on
-- real unified kernel images: the systemd EFI stub with sections added by objcopy as
-- mkinitcpio v41 adds them (spec/uki_helpers.lua), checked against objdump and GNU cpio.
local h = require "helpers"
local u = require "uki_helpers"
local core = require "vfioinit.core"

local q, sh = h.q, h.sh
local uit = u.guard(it, pending)

local function lines(s)
  local t = {}
  for l in s:gmatch("([^\n]*)\n") do t[#t + 1] = l end
  return t
end

local function names(entries)
  local t = {}
  for i, e in ipairs(entries) do t[i] = e.name end
  return t
end

local function find(secs, name)
  for _, s in ipairs(secs) do if s.name == name then return s end end
end

describe("core.image.sections (PE/COFF section table)", function()
  local dir, root
  before_each(function()
    dir = h.tmpdir(); root = dir .. "/root"
    sh("mkdir -p " .. q(root .. "/efi"))
  end)
  after_each(function() h.rm(dir) end)

  local function build(opts)
    opts = opts or {}
    local initrd = opts.initrd or u.initramfs(dir, { ["etc/x"] = "x\n", ["usr/lib/modules/6.1.0-test/kernel/vfio-pci.ko"] = "ko" })
    return u.uki(dir, root .. "/efi/uki.efi", { cmdline = opts.cmdline or "console=ttyS0 quiet", initrd = initrd })
  end

  uit("lists every section with objdump's names, file offsets and sizes", function()
    build()
    local secs = assert(core.image.sections(root, "/efi/uki.efi"))
    local want = u.objdump(root .. "/efi/uki.efi")
    assert.are.equal(#want, #secs)
    assert.is_true(#secs >= 10)
    for i, w in ipairs(want) do
      assert.are.same(w, secs[i])
    end
    for _, n in ipairs({ ".osrel", ".cmdline", ".uname", ".linux", ".initrd" }) do assert.truthy(find(secs, n), n) end
  end)

  uit("reads a section's bytes without objcopy's padding (.cmdline as mkinitcpio writes it)", function()
    build({ cmdline = "root=/dev/vda rw vfio-pci.ids=1af4:1000" })
    assert.are.equal("root=/dev/vda rw vfio-pci.ids=1af4:1000\n\0", core.image.section(root, "/efi/uki.efi", ".cmdline"))
    assert.are.equal("6.1.0-test", core.image.section(root, "/efi/uki.efi", ".uname"))
    -- the same bytes objcopy extracts
    sh(("objcopy -O binary --only-section=.cmdline %s %s"):format(q(root .. "/efi/uki.efi"), q(dir .. "/c.bin")))
    assert.are.equal(h.readfile(dir .. "/c.bin"), core.image.section(root, "/efi/uki.efi", ".cmdline"))
  end)

  uit("says which section is missing or too large", function()
    build()
    local v, err = core.image.section(root, "/efi/uki.efi", ".splash")
    assert.is_nil(v); assert.are.equal("/efi/uki.efi: no .splash section", err)
    v, err = core.image.section(root, "/efi/uki.efi", ".linux", 100)
    assert.is_nil(v); assert.are.equal("/efi/uki.efi: section .linux is 4096 bytes (limit 100)", err)
  end)

  uit("lists the .initrd section's cpio segments through a window: early plain + zstd main", function()
    local early = u.initramfs(dir, { ["kernel/x86/microcode/GenuineIntel.bin"] = "ucode" }, "none", "early")
    local main = u.initramfs(dir, { ["etc/modules-load.d/MODULES.conf"] = "vfio_pci\n", ["init"] = "#!/bin/sh\n" }, "zstd")
    sh(("cat %s %s > %s"):format(q(early), q(main), q(dir .. "/both.img")))
    build({ initrd = dir .. "/both.img" })
    local sec = find(assert(core.image.sections(root, "/efi/uki.efi")), ".initrd")
    local entries, contents, segments = core.image.list(root, "/efi/uki.efi",
      { ["etc/modules-load.d/MODULES.conf"] = true }, { offset = sec.offset, size = sec.size })
    assert.truthy(entries, contents)
    -- GNU cpio's listing of the two archives, in order
    local want = lines(sh("cpio -t --quiet < " .. q(early)))
    for _, l in ipairs(lines(sh("zstd -dc " .. q(main) .. " | cpio -t --quiet"))) do want[#want + 1] = l end
    assert.are.same(want, names(entries))
    assert.are.equal("vfio_pci\n", contents["etc/modules-load.d/MODULES.conf"])
    assert.are.equal(2, #segments)
    assert.are.equal(sec.offset, segments[1].offset)
    assert.are.equal("none", segments[1].compression)
    -- cpio's 512-byte block padding is skipped: the zstd stream starts where cat put it
    assert.are.same({ offset = sec.offset + io.open(early):seek("end"), compression = "zstd",
      size = io.open(main):seek("end") }, segments[2])
  end)

  uit("reads no byte outside the window", function()
    build()
    local sec = find(assert(core.image.sections(root, "/efi/uki.efi")), ".initrd")
    -- the whole file is not an initramfs; the window one byte short truncates the stream
    local v, err = core.image.list(root, "/efi/uki.efi")
    assert.is_nil(v); assert.truthy(err:find("not an initramfs", 1, true), err)
    v, err = core.image.list(root, "/efi/uki.efi", nil, { offset = sec.offset, size = sec.size - 1 })
    assert.is_nil(v); assert.truthy(err:find("^/efi/uki.efi: truncated zstd data at offset " .. sec.offset), err)
    v, err = core.image.list(root, "/efi/uki.efi", nil, { offset = sec.offset, size = 1 << 40 })
    assert.is_nil(v)
    assert.truthy(err:find("^/efi/uki.efi: window of %d+ bytes at offset %d+ is outside the file"), err)
    assert.has_error(function() core.image.list(root, "/efi/uki.efi", nil, { offset = -1, size = 1 }) end)
    assert.has_error(function() core.image.list(root, "/efi/uki.efi", nil, { offset = "x" }) end)
  end)

  uit("refuses what is not a PE image, naming the path inside root", function()
    local img = u.initramfs(dir, { ["etc/x"] = "x" }, "gzip")
    sh(("cp %s %s"):format(q(img), q(root .. "/efi/initrd.img")))
    local v, err = core.image.sections(root, "/efi/initrd.img")
    assert.is_nil(v); assert.are.equal("/efi/initrd.img: not a PE image (no MZ header)", err)
    v, err = core.image.sections(root, "/efi/none.efi")
    assert.is_nil(v); assert.are.equal("/efi/none.efi: No such file or directory", err)
    sh("mkfifo " .. q(root .. "/efi/fifo.efi"))
    v, err = core.image.sections(root, "/efi/fifo.efi")
    assert.is_nil(v); assert.are.equal("/efi/fifo.efi: not a regular file (fifo)", err)
    -- a symlink cannot leave root: /etc/passwd of the host is not read
    sh(("ln -s /../../../../etc/passwd %s"):format(q(root .. "/efi/link.efi")))
    v, err = core.image.sections(root, "/efi/link.efi")
    assert.is_nil(v); assert.truthy(err:find("^/efi/link.efi: "), err)
  end)

  uit("refuses truncated and corrupt headers of a real UKI with one line each", function()
    local path = build()
    local full = h.readfile(path)
    local lfanew = string.unpack("<I4", full, 0x3c + 1)
    local nsec = string.unpack("<I2", full, lfanew + 6 + 1)
    local sec = find(assert(core.image.sections(root, "/efi/uki.efi")), ".initrd")
    local initrd_end = sec.offset + sec.size
    local table_at = lfanew + 24 + string.unpack("<I2", full, lfanew + 20 + 1)
    local cases = {
      { full:sub(1, 40), "no MZ header" },
      { full:sub(1, lfanew + 10), "no PE signature at e_lfanew" },
      { full:sub(1, 0x3c) .. string.pack("<I4", 0x7fffffff) .. full:sub(0x41), "no PE signature at e_lfanew" },
      { full:sub(1, table_at + 40 * nsec - 1), "section table past the end of the file" },
      { full:sub(1, lfanew + 6) .. string.pack("<I2", 97) .. full:sub(lfanew + 9), "more than 96 sections" },
      { full:sub(1, initrd_end - 1), "a section's data lies past the end of the file" },
    }
    for i, c in ipairs(cases) do
      h.writefile(root .. "/efi/bad.efi", c[1])
      local v, err = core.image.sections(root, "/efi/bad.efi")
      assert.is_nil(v, "case " .. i)
      assert.are.equal("/efi/bad.efi: not a PE image (" .. c[2] .. ")", err, "case " .. i)
      v, err = core.image.section(root, "/efi/bad.efi", ".cmdline")
      assert.is_nil(v, "case " .. i); assert.truthy(err:find("not a PE image", 1, true), err)
    end
  end)

  it("raises on misuse", function()
    assert.has_error(function() core.image.sections("/", "relative") end)
    assert.has_error(function() core.image.section("/", "/x") end)
    assert.has_error(function() core.image.section("/", "/x", ".cmdline", -1) end)
  end)
end)
