-- Regressions found by the fuzzers (tools/fuzz, fuzz/). Each case is the crashing input
-- (or its smallest form) and what the parser must do with it instead.
local h = require "helpers"
local core = require "vfioinit.core"

describe("image.list() fuzz regressions", function()
  local dir
  setup(function() dir = h.tmpdir() end)
  teardown(function() h.rm(dir) end)

  -- image_list-oom: an .lzma header asking for a ~4 GiB dictionary made liblzma try to
  -- allocate it (libarchive sets no memory limit for .lzma). Refused like corrupt data now.
  it("refuses an .lzma segment whose header asks for a dictionary over 1 GiB, without allocating it", function()
    local img = dir .. "/lzma-dict.img"
    h.writefile(img, "\x5d\x00\x00\x87\xff" .. ("\xff"):rep(8) .. ("\x18\x0d\xdd\x04\x63\x83\x21\xfb"):rep(8))
    local entries, err = core.image.list("/", img)
    assert.is_nil(entries)
    assert.truthy(err:find("lzma dictionary of 4287037440 bytes is larger than 1 GiB at offset 0", 1, true), err)
  end)

  it("still reads an ordinary .lzma image (and one behind an early cpio)", function()
    local t = dir .. "/tree"
    h.writefile(t .. "/conf/modules", "vfio\nvfio_pci\n")
    local out, ok = h.sh(("cd %s && find . | LC_ALL=C sort | cpio -o -H newc --quiet > ../main.cpio && lzma -c ../main.cpio > ../main.lzma && cat ../main.cpio ../main.lzma > ../both.img 2>&1")
      :format(h.q(t)))
    assert.is_true(ok, out)
    for _, name in ipairs({ "main.lzma", "both.img" }) do
      local entries, contents, segments = core.image.list("/", dir .. "/" .. name, { ["conf/modules"] = true })
      assert.is_table(entries, contents)
      assert.are.equal("vfio\nvfio_pci\n", contents["conf/modules"])
      assert.are.equal("lzma", segments[#segments].compression)
    end
  end)
end)
