-- core.image.list (src/image.c) and lua/vfioinit/image.lua, checked against GNU cpio,
-- lsinitramfs (initramfs-tools-core) and lsinitrd (dracut-core) on real images.
local h = require "helpers"
local core = require "vfioinit.core"
local image = require "vfioinit.image"

local q, sh = h.q, h.sh

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

local function sorted(t)
  local c = { table.unpack(t) }
  table.sort(c)
  return c
end

-- Write without helpers.writefile's `mkdir -p` (the fuzz loops write hundreds of files).
local function put(path, data)
  local f = assert(io.open(path, "wb")); f:write(data); f:close()
end

local function have(cmd)
  local _, ok = sh("command -v " .. cmd .. " >/dev/null 2>&1")
  return ok
end

-- An `it` that shows as pending with a reason when `why` is set.
local function it_if(why, desc, fn)
  if why then pending(desc .. " (" .. why .. ")") else it(desc, fn) end
end

-- Names GNU cpio lists for an uncompressed cpio file (stops at the first trailer).
local function cpio_t(file)
  local out, ok = sh("cpio -t --quiet < " .. q(file) .. " 2>/dev/null")
  assert(ok, "cpio -t failed on " .. file)
  return lines(out)
end

-- Names listed by lsinitrd (ls -l style lines; symlinks as "name -> target").
local function lsinitrd_names(out)
  local t = {}
  for _, l in ipairs(lines(out)) do
    local name = l:match("^[-dlcbps][-rwxsStT]+%s+%d+%s+%S+%s+%S+%s+[%d, ]+%s+%a+%s+%d+%s+[%d:]+%s(.+)$")
    if name then
      if l:sub(1, 1) == "l" then name = name:gsub(" %-> .*$", "") end
      t[#t + 1] = name
    end
  end
  return t
end

local COMPRESSORS = {
  { name = "gzip", cmd = "gzip -c -n" },
  { name = "zstd", cmd = "zstd -q -c" },
  { name = "xz", cmd = "xz -c --check=crc32" },
  { name = "lz4", cmd = "lz4 -l -q -c" },
  { name = "bzip2", cmd = "bzip2 -c" },
  { name = "lzma", cmd = "lzma -c" },
}

describe("core.image.list()", function()
  local dir

  -- A small tree packed with `cpio -o -H newc` into dir/<name>.cpio.
  local function pack(name, build)
    local src = dir .. "/" .. name
    sh("mkdir -p " .. q(src))
    build(src)
    local _, ok = sh(("cd %s && find . | LC_ALL=C sort | cpio --quiet -o -H newc > %s")
      :format(q(src), q(dir .. "/" .. name .. ".cpio")))
    assert(ok)
    return dir .. "/" .. name .. ".cpio"
  end

  local function cat(out, ...)
    local parts = {}
    for _, p in ipairs({ ... }) do parts[#parts + 1] = q(p) end
    assert(select(2, sh("cat " .. table.concat(parts, " ") .. " > " .. q(out))))
    return out
  end

  local function compress(file, c)
    local out = file .. "." .. c.name
    assert(select(2, sh(c.cmd .. " < " .. q(file) .. " > " .. q(out))))
    return out
  end

  local early, main, extra
  setup(function()
    dir = h.tmpdir()
    early = pack("early", function(d)
      h.writefile(d .. "/kernel/x86/microcode/GenuineIntel.bin", ("\1\2\3"):rep(1000))
    end)
    main = pack("main", function(d)
      h.writefile(d .. "/conf/modules", "vfio\nvfio_pci\n")
      h.writefile(d .. "/etc/cmdline.d/20-force_drivers.conf", "rd.driver.pre=vfio_pci\n")
      h.writefile(d .. "/etc/cmdline.d/01-default.conf", "root=/dev/sda\n")
      h.writefile(d .. "/usr/lib/modules/6.1.0-9-amd64/kernel/drivers/vfio/pci/vfio-pci.ko.xz",
        (sh("head -c 70000 /dev/urandom")))
      h.writefile(d .. "/usr/lib/modules/6.1.0-9-amd64/kernel/drivers/vfio/vfio.ko", "elf")
      h.writefile(d .. "/empty", "")
      sh("ln -s usr/lib " .. q(d .. "/lib") .. " && mkfifo " .. q(d .. "/fifo"))
    end)
    extra = pack("extra", function(d) h.writefile(d .. "/extra/file", "x") end)
  end)
  teardown(function() h.rm(dir) end)

  it("should raise on bad arguments", function()
    assert.has_error(function() core.image.list() end)
    assert.has_error(function() core.image.list("/", {}) end)
    assert.has_error(function() core.image.list("/", main, 5) end)
    assert.has_error(function() core.image.list("/", main, "conf/modules") end)
  end)

  it("should return nil, 'path: strerror', errno for a missing file", function()
    local e, msg, errno = core.image.list("/", dir .. "/nope")
    assert.is_nil(e)
    assert.are.equal(dir .. "/nope: No such file or directory", msg)
    assert.are.equal(2, errno)
  end)

  it("should list a plain cpio exactly as cpio -t does", function()
    local e, c, s = core.image.list("/", main)
    assert.are.same(cpio_t(main), names(e))
    assert.are.same({}, c)
    assert.are.same({ { offset = 0, compression = "none", size = s[1].size } }, s)
    local by = {}
    for _, x in ipairs(e) do by[x.name] = x end
    assert.are.same({ name = "conf/modules", type = "file", size = 14, segment = 1 }, by["conf/modules"])
    assert.are.equal("dir", by["."].type)
    assert.are.equal("link", by["lib"].type)
    assert.are.equal(7, by["lib"].size)
    assert.are.equal("other", by["fifo"].type)
    assert.are.equal(0, by["empty"].size)
  end)

  for _, c in ipairs(COMPRESSORS) do
    it_if(not have(c.cmd:match("^%S+")) and c.cmd:match("^%S+") .. " not installed",
      "should list an early cpio followed by a " .. c.name .. " main cpio", function()
      local img = cat(dir .. "/img." .. c.name, early, compress(main, c))
      local e, contents, s = core.image.list("/", img, { ["conf/modules"] = true, ["./empty"] = true })
      local expect = cpio_t(early)
      for _, n in ipairs(cpio_t(main)) do expect[#expect + 1] = n end
      assert.are.same(expect, names(e))
      assert.are.equal(2, #s)
      assert.are.same({ 0, "none" }, { s[1].offset, s[1].compression })
      assert.are.same({ #h.readfile(early), c.name }, { s[2].offset, s[2].compression })
      assert.are.equal(#h.readfile(img) - #h.readfile(early), s[2].size)
      assert.are.equal(1, e[1].segment)
      assert.are.equal(2, e[#e].segment)
      assert.are.same({ ["conf/modules"] = "vfio\nvfio_pci\n", ["./empty"] = "" }, contents)
    end)
  end

  it("should list two early cpio archives and a main one (early, early2, main)", function()
    local img = cat(dir .. "/img3", early, extra, compress(main, COMPRESSORS[2]))
    local e, _, s = core.image.list("/", img)
    local expect = {}
    for _, f in ipairs({ early, extra, main }) do
      for _, n in ipairs(cpio_t(f)) do expect[#expect + 1] = n end
    end
    assert.are.same(expect, names(e))
    assert.are.same({ "none", "none", "zstd" },
      { s[1].compression, s[2].compression, s[3].compression })
    assert.are.equal(#h.readfile(early), s[2].offset)
  end)

  -- The kernel unpacks every compressed stream in turn; each must end where it
  -- says it does for the next one to be found.
  for _, c in ipairs({ COMPRESSORS[1], COMPRESSORS[2], COMPRESSORS[3], COMPRESSORS[5], COMPRESSORS[6] }) do
    it("should read a gzip segment after a " .. c.name .. " one", function()
      local first = compress(main, c)
      local img = cat(dir .. "/two." .. c.name, early, first, compress(extra, COMPRESSORS[1]))
      local e, _, s = core.image.list("/", img)
      local expect = {}
      for _, f in ipairs({ early, main, extra }) do
        for _, n in ipairs(cpio_t(f)) do expect[#expect + 1] = n end
      end
      assert.are.same(expect, names(e))
      if c.name ~= "gzip" then -- libarchive reads concatenated gzip members as one stream
        assert.are.equal(3, #s)
        assert.are.equal(#h.readfile(early) + #h.readfile(first), s[3].offset)
        assert.are.equal(3, e[#e].segment)
      end
    end)
  end

  it("should skip zero padding between and after segments", function()
    local z = dir .. "/zeros"
    h.writefile(z, ("\0"):rep(512))
    local img = cat(dir .. "/padded", early, z, compress(main, COMPRESSORS[2]), z)
    local e = assert(core.image.list("/", img))
    assert.are.equal(#cpio_t(early) + #cpio_t(main), #e)
  end)

  it("should return the contents of wanted members under every key naming them", function()
    local img = cat(dir .. "/w", early, compress(main, COMPRESSORS[1]))
    local _, c = core.image.list("/", img, {
      ["conf/modules"] = true, ["./conf/modules"] = true, ["/etc/cmdline.d/"] = true,
      ["kernel/x86/microcode/GenuineIntel.bin"] = true, ["absent"] = true, ["lib"] = false,
    })
    assert.are.same({
      ["conf/modules"] = "vfio\nvfio_pci\n", ["./conf/modules"] = "vfio\nvfio_pci\n",
      ["/etc/cmdline.d/20-force_drivers.conf"] = "rd.driver.pre=vfio_pci\n",
      ["/etc/cmdline.d/01-default.conf"] = "root=/dev/sda\n",
      ["kernel/x86/microcode/GenuineIntel.bin"] = ("\1\2\3"):rep(1000),
    }, c)
    local _, c2 = core.image.list("/", img, { ["usr/lib/modules/6.1.0-9-amd64/kernel/drivers/vfio/pci/vfio-pci.ko.xz"] = true })
    assert.are.equal(70000, #c2["usr/lib/modules/6.1.0-9-amd64/kernel/drivers/vfio/pci/vfio-pci.ko.xz"])
  end)

  describe("on corrupt input", function()
    local function fails(file, pattern)
      local e, msg = core.image.list("/", file)
      assert.is_nil(e)
      assert.is_string(msg)
      assert.is_truthy(msg:find("^" .. file:gsub("%p", "%%%0") .. ": .* at offset %d+"), msg)
      if pattern then assert.is_truthy(msg:find(pattern), msg) end
      return msg
    end

    it("should refuse an empty file, zeros only, random data and a directory", function()
      h.writefile(dir .. "/empty.img", "")
      fails(dir .. "/empty.img", "empty")
      h.writefile(dir .. "/zeros.img", ("\0"):rep(4096))
      fails(dir .. "/zeros.img", "only zero bytes")
      h.writefile(dir .. "/text.img", "hello world\n")
      fails(dir .. "/text.img", "not an initramfs")
      local e, msg = core.image.list("/", dir)
      assert.is_nil(e)
      assert.are.equal(dir .. ": Is a directory", msg)
    end)

    for _, c in ipairs(COMPRESSORS) do
      it("should refuse a truncated " .. c.name .. " image", function()
        local data = h.readfile(cat(dir .. "/t." .. c.name, early, compress(main, c)))
        for _, cut in ipairs({ #data - 1, #data - 20, #h.readfile(early) + 40, math.floor(#data / 2) }) do
          local f = dir .. "/cut." .. c.name
          h.writefile(f, data:sub(1, cut))
          fails(f)
        end
      end)
    end

    it("should refuse a truncated early cpio", function()
      local data = h.readfile(early)
      for _, cut in ipairs({ 50, 110, 200, 3000, #data - 512 }) do
        h.writefile(dir .. "/cut.cpio", data:sub(1, cut))
        fails(dir .. "/cut.cpio", "truncated")
      end
    end)

    it("should refuse junk after the last segment and garbage in a header", function()
      local junk = dir .. "/junk"
      h.writefile(junk, "garbage\n")
      fails(cat(dir .. "/j1", early, compress(main, COMPRESSORS[2]), junk), "junk")
      local data = h.readfile(main)
      h.writefile(dir .. "/badhex", data:sub(1, 20) .. "zz" .. data:sub(23))
      fails(dir .. "/badhex", "bad cpio header")
      h.writefile(dir .. "/badmagic", "070707" .. data:sub(7))
      fails(dir .. "/badmagic", "bad cpio magic")
      local inner = dir .. "/inner"
      local at = data:find("070701", 600, true)
      h.writefile(inner, data:sub(1, at - 1) .. "XXXXXX" .. data:sub(at + 6))
      local z = compress(inner, COMPRESSORS[1])
      fails(z, "^" .. z:gsub("%p", "%%%0") .. ": bad cpio magic %(not newc%) %(byte " .. (at - 1)
        .. " of its data%) in the gzip segment at offset 0$")
    end)

    it("should never crash on damaged images (every truncation, flipped bytes)", function()
      local img = h.readfile(cat(dir .. "/f", early, compress(main, COMPRESSORS[2])))
      local f = dir .. "/fuzz"
      local early_end = #h.readfile(early)
      for cut = 0, #img - 1, 97 do
        put(f, img:sub(1, cut))
        local e, msg = core.image.list("/", f)
        -- a cut inside the early archive's trailing zero padding leaves a valid image
        if cut > early_end or cut < early_end - 512 then
          assert.is_true(e == nil and type(msg) == "string", "cut at " .. cut)
        else
          assert.is_true(type(e) == "table" or type(msg) == "string", "cut at " .. cut)
        end
      end
      math.randomseed(42)
      for _ = 1, 200 do
        local pos = math.random(1, #img)
        put(f, img:sub(1, pos - 1) .. string.char(math.random(0, 255)) .. img:sub(pos + 1))
        local e, msg = core.image.list("/", f)
        assert.is_true(type(e) == "table" or type(msg) == "string")
      end
    end)
  end)
end)

describe("image.list()", function()
  it("should read an image inside root and name it as seen in root on errors", function()
    local root = h.tmpdir()
    finally(function() h.rm(root) end)
    sh(("mkdir -p %s/boot && cd %s && mkdir -p t/conf && echo x > t/conf/modules && cd t && find . | cpio --quiet -o -H newc | gzip > ../boot/initrd.img-1")
      :format(q(root), q(root)))
    local e, c, s = image.list(root, "/boot/initrd.img-1", { ["conf/modules"] = true })
    assert.are.same({ ".", "conf", "conf/modules" }, names(e))
    assert.are.same({ ["conf/modules"] = "x\n" }, c)
    assert.are.equal("gzip", s[1].compression)
    h.writefile(root .. "/boot/bad", "junk")
    local e2, msg = image.list(root, "/boot/bad")
    assert.is_nil(e2)
    assert.are.equal("/boot/bad: not an initramfs (no cpio or known compression magic) at offset 0", msg)
    local e3, msg3 = image.list(root .. "/", "/boot/none")
    assert.is_nil(e3)
    assert.are.equal("/boot/none: No such file or directory", msg3)
  end)
end)

describe("image.has_modules()", function()
  local K = "6.1.0-9-amd64"
  local function E(...)
    local t = {}
    for i, n in ipairs({ ... }) do t[i] = { name = n, type = "file", size = 1, segment = 1 } end
    return t
  end

  it("should find modules under lib/ and usr/lib/, any suffix, - and _ alike", function()
    local entries = E("lib/modules/" .. K .. "/kernel/drivers/vfio/vfio.ko",
      "usr/lib/modules/" .. K .. "/kernel/drivers/vfio/pci/vfio-pci.ko.zst",
      "./lib/modules/" .. K .. "/kernel/drivers/vfio/vfio_iommu_type1.ko.xz",
      "lib/modules/" .. K .. "/updates/dkms/vfio_virqfd.ko.gz")
    assert.are.same({}, image.has_modules(entries, K,
      { "vfio", "vfio_pci", "vfio-iommu-type1", "vfio_virqfd" }))
  end)

  it("should report missing modules once each, as given", function()
    local entries = E("lib/modules/" .. K .. "/kernel/drivers/vfio/vfio.ko",
      "lib/modules/6.1.0-10-amd64/kernel/drivers/vfio/pci/vfio-pci.ko", -- other kernel
      "lib/modules/" .. K .. "/kernel/drivers/vfio/vfio_iommu_type1.ko.bak",
      "lib/modules/" .. K .. "/kernel/drivers/vfio/pci/vfio_pci.ko.txt",
      "lib/modules/" .. K .. "/kernel/drivers/vfio/vfio_pci_core.ko")
    assert.are.same({ "vfio-pci", "vfio_iommu_type1" },
      image.has_modules(entries, K, { "vfio", "vfio-pci", "vfio_iommu_type1", "vfio_pci" }))
    local dirs = { { name = "lib/modules/" .. K .. "/vfio.ko", type = "dir" } }
    assert.are.same({ "vfio" }, image.has_modules(dirs, K, { "vfio" }))
  end)
end)

-- Real images: a ~14 MB zstd image built from a real Debian kernel's modules, and the
-- images update-initramfs/dracut built in debootstrap roots (when those exist).
describe("real images", function()
  local listers, kdir, real
  local why_listers, why_kernel
  setup(function()
    local out, ok = sh(h.q(h.project .. "/spec/fixtures/image/fetch-listers") .. " 2>&1")
    if ok then listers = lines(out) else why_listers = "lsinitramfs/lsinitrd unavailable: " .. out end
    local k, kok = sh(h.q(h.project .. "/tools/fetch-kernel") .. " cloud 2>/dev/null")
    if kok and k ~= "" then
      kdir = k:gsub("%s+$", "")
      real = h.cache_dir() .. "/images/" .. kdir:match("[^/]+$") .. "-zstd.img"
      if not h.readfile(real) then
        sh("mkdir -p " .. q(h.cache_dir() .. "/images"))
        local _, bok = sh(("%s %s %s.tmp && mv %s.tmp %s"):format(
          q(h.project .. "/spec/fixtures/image/mkimage-real"), q(kdir), q(real), q(real), q(real)))
        if not bok then why_kernel = "could not build the real image" end
      end
    else
      why_kernel = "no real kernel (tools/fetch-kernel cloud failed)"
    end
  end)

  local function compare(img)
    local e, c, s = core.image.list("/", img)
    assert.is_table(e, c)
    -- env -u: the ASan run preloads libasan, which the listers' tools do not want
    local out, ok = sh("env -u LD_PRELOAD " .. q(listers[1]) .. " " .. q(img) .. " 2>/dev/null")
    assert.is_true(ok)
    assert.are.same(lines(out), names(e))
    local out2 = sh("env -u LD_PRELOAD " .. q(listers[2]) .. " " .. q(img) .. " 2>/dev/null")
    assert.are.same(sorted(lsinitrd_names(out2)), sorted(names(e)))
    return e, s
  end

  it("should list the real zstd image as lsinitramfs and lsinitrd do", function()
    if why_kernel or why_listers then return pending(why_kernel or why_listers) end
    local e, s = compare(real)
    assert.are.same({ "none", "zstd" }, { s[1].compression, s[2].compression })
    local kver = kdir:match("linux%-image%-(.+)$")
    assert.are.same({}, image.has_modules(e, kver, { "vfio", "vfio_pci", "vfio-iommu-type1" }))
    assert.are.same({ "nonexistent_mod" }, image.has_modules(e, kver, { "vfio", "nonexistent_mod" }))
  end)

  it("should list images built by update-initramfs and dracut in debootstrap roots", function()
    if why_listers then return pending(why_listers) end
    local out = sh("ls -d " .. q(h.cache_dir() .. "/roots") .. "/*/boot/initrd.img-* "
      .. q(h.cache_dir() .. "/roots") .. "/*/boot/initramfs-* 2>/dev/null")
    local imgs = {}
    for _, p in ipairs(lines(out)) do
      if not p:match("%.vfioinit%-prev$") and not p:match("%.bak$") then imgs[#imgs + 1] = p end
    end
    if #imgs == 0 then return pending("no images under " .. h.cache_dir() .. "/roots yet") end
    local tmp = h.tmpdir()
    finally(function() h.rm(tmp) end)
    for _, img in ipairs(imgs) do
      -- a private copy: another process may rebuild the image meanwhile
      assert(select(2, sh("cp " .. q(img) .. " " .. q(tmp .. "/image"))))
      compare(tmp .. "/image")
    end
  end)
end)
