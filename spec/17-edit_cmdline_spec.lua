-- cmdline: kernel command line words as the kernel reads them, and adding parameters.
local cmdline = require "vfioinit.edit.cmdline"

local IDS = { name = "vfio-pci.ids", value = "1af4:1000", list = true }
local IOMMU = { name = "intel_iommu", value = "on", list = true, refuse = { "off" } }
local PT = { name = "iommu", value = "pt" }

describe("cmdline.split()", function()
  it("splits on blanks, groups double quotes, stops at --", function()
    local w, init = cmdline.split('ro  a="b c" vfio-pci.ids=1:2 -- single x')
    assert.are.same({ "ro", 'a="b c"', "vfio-pci.ids=1:2" }, { w[1].text, w[2].text, w[3].text })
    assert.are.equal("b c", w[2].value)
    assert.is_nil(w[1].value)
    assert.are.equal("vfio_pci.ids", w[3].key)
    assert.are.equal(30, init.first)
  end)

  it("splits on every byte C's isspace calls a blank (a CRLF file's CR too), as the kernel's next_arg", function()
    for c = 1, 127 do
      local ch = string.char(c)
      if ch ~= '"' then
        local blank = ch:match("^%s$") ~= nil  -- Lua's %s is C's isspace
        assert.are.equal(blank and 2 or 1, #cmdline.split("rw" .. ch .. "intel_iommu=on"), ("byte %d"):format(c))
      end
    end
  end)
end)

describe("cmdline.add()", function()
  it("appends what is missing and keeps every other byte", function()
    local s, added = cmdline.add("root=/dev/vda ro  quiet", { IOMMU, PT, IDS })
    assert.are.equal("root=/dev/vda ro  quiet intel_iommu=on iommu=pt vfio-pci.ids=1af4:1000", s)
    assert.are.same({ "intel_iommu=on", "iommu=pt", "vfio-pci.ids=1af4:1000" }, added)
  end)

  it("treats vfio_pci.ids and vfio-pci.ids as one parameter and merges ids into it", function()
    local s, added = cmdline.add("quiet vfio_pci.ids=10de:1b80 splash", { IDS })
    assert.are.equal("quiet vfio_pci.ids=10de:1b80,1af4:1000 splash", s)
    assert.are.same({ "vfio_pci.ids=10de:1b80,1af4:1000" }, added)
  end)

  it("changes nothing when every parameter is there (ids in any case, any order)", function()
    local line = "vfio-pci.ids=1AF4:1000,10de:1b80 intel_iommu=on,igfx_off iommu=pt"
    local s, added = cmdline.add(line, { IOMMU, PT, { name = "vfio_pci.ids", value = "10de:1b80,1af4:1000", list = true } })
    assert.are.equal(line, s)
    assert.are.same({}, added)
    assert.is_true(cmdline.has(line, { IOMMU, PT, IDS }))
  end)

  it("acts on the last occurrence, as the kernel does", function()
    local s = cmdline.add("vfio-pci.ids=1:1 x vfio-pci.ids=1af4:1000", { IDS })
    assert.are.equal("vfio-pci.ids=1:1 x vfio-pci.ids=1af4:1000", s)
    assert.is_false((cmdline.has("vfio-pci.ids=1af4:1000 vfio-pci.ids=1:1", { IDS })))
  end)

  it("puts new words before init's --", function()
    assert.are.equal("ro iommu=pt -- single", (cmdline.add("ro -- single", { PT })))
    assert.are.equal("iommu=pt -- single", (cmdline.add("-- single", { PT })))
    assert.are.equal("iommu=pt", (cmdline.add("", { PT })))
  end)

  it("refuses to override what the user turned off or set otherwise", function()
    local s, why = cmdline.add("quiet intel_iommu=off", { IOMMU })
    assert.is_nil(s)
    assert.truthy(why:find("intel_iommu=off", 1, true))
    s, why = cmdline.add("iommu=soft", { PT })
    assert.is_nil(s)
    assert.truthy(why:find("iommu=soft", 1, true))
    assert.is_false((cmdline.has("intel_iommu=off", { IOMMU })))
  end)
end)
