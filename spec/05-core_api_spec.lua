-- The C boundary (src/): one sub-table per concern, every entry takes (root, path inside
-- root), and errors name the path as seen inside root, never the host path of root.
local core = require "vfioinit.core"
local vfioinit = require "vfioinit"
local H = require "helpers"

local q = H.q

-- `s` does not mention the host directory `dir` (the root of the call) anywhere.
local function no_host(s, dir)
  return not tostring(s):find(dir, 1, true)
end

describe("vfioinit.core", function()
  it("groups its functions by concern", function()
    local want = {
      fs = { "read", "stat", "dir", "write_atomic", "mkdirs", "remove", "rename", "copy", "resolve" },
      hash = { "sha256" }, image = { "list" }, kmod = { "new" }, lock = { "acquire" },
      scan = { "shell", "yaml" }, spawn = { "run" },
    }
    for concern, names in pairs(want) do
      assert.are.equal("table", type(core[concern]), concern)
      for _, n in ipairs(names) do
        assert.are.equal("function", type(core[concern][n]), concern .. "." .. n)
      end
    end
    assert.are.equal("string", type(core._VERSION))
    assert.are.equal("boolean", type(core._TESTING))
  end)

  it("has no flat, host-path or dead entries left", function()
    for _, old in ipairs({ "read", "stat", "image_list", "kmod_new", "re_find", "shell_scan",
                           "yaml_scan", "sha256", "_fs_force_fallback" }) do
      assert.is_nil(rawget(core, old), old)
    end
    -- only the sub-tables and the two flags
    for k, v in pairs(core) do
      assert.is_true(type(v) == "table" or k == "_VERSION" or k == "_TESTING", k)
    end
  end)

  local build_cpath = H.project .. "/" .. (os.getenv("VFIOINIT_BUILD") or "build") .. "/?.so"
  -- Run `code` in a fresh interpreter with `core` required from `cpath` (default: the build's).
  local function child(code, cpath)
    return H.sh(("cd / && %s -e %s 2>&1"):format(H.lua,
      q(("package.cpath = %q; local core = require 'vfioinit.core'; %s"):format(cpath or build_cpath, code))))
  end
  -- The shared objects such an interpreter has mapped (/proc/self/maps) after `code` ran.
  local function maps_after(code)
    return child(code .. "; io.write(io.open('/proc/self/maps'):read('*a'))")
  end

  it("maps libkmod (and the libcrypto it links) and libpcre2 only once core.kmod / core.re is used", function()
    local out, ok = maps_after("assert(type(core.image.list) == 'function')")
    assert(ok, out)
    assert.truthy(out:find("/vfioinit/core.so", 1, true), out)
    for _, lib in ipairs({ "libkmod.so", "libcrypto.so", "libpcre2-8.so" }) do
      assert.is_nil(out:find(lib, 1, true), lib .. " mapped before use")
    end
    out, ok = maps_after("assert(rawget(core, 'kmod') == nil); assert(type(core.kmod.new) == 'function');"
      .. " assert(rawget(core, 'kmod') == core.kmod)")
    assert(ok, out)
    assert.truthy(out:find("libkmod.so", 1, true), out)
    assert.is_nil(out:find("libpcre2-8.so", 1, true), out)
    out, ok = maps_after("assert(type(core.re.compile) == 'function')")
    assert(ok, out)
    assert.truthy(out:find("libpcre2-8.so", 1, true), out)
    assert.is_nil(out:find("libkmod.so", 1, true), out)
    -- core.sig: libcrypto alone, not libkmod
    out, ok = maps_after("assert(type(core.sig.read) == 'function')")
    assert(ok, out)
    assert.truthy(out:find("/vfioinit/core/sig.so", 1, true), out)
    assert.truthy(out:find("libcrypto.so", 1, true), out)
    assert.is_nil(out:find("libkmod.so", 1, true), out)
  end)

  -- A cpio archive of one file compressed with `tool` (gzip, zstd, xz: what distributions
  -- build images with), in a temporary directory: its path.
  local function image_by(tool, dir)
    local ok = H.sh(("cd %s && mkdir -p t/conf && echo vfio > t/conf/modules && (cd t && echo conf/modules"
      .. " | cpio -o -H newc 2>/dev/null) | %s -c > img.%s"):format(q(dir), tool, tool))
    assert(select(2, ok) ~= false)
    return dir .. "/img." .. tool
  end

  it("maps no decompressor until core.image.list is used, libarchive only for what zlib and libzstd do not read",
    function()
    local dir = H.tmpdir()
    finally(function() H.rm(dir) end)
    local out, ok = maps_after("assert(core.fs.read and core.image.sections); assert(rawget(core.image, 'list') == nil)")
    assert(ok, out)
    assert.truthy(out:find("/vfioinit/core.so", 1, true), out)
    -- what the interpreter maps by itself (an LD_PRELOADed sanitizer runtime brings libstdc++) is not core's
    local bare = H.sh(("cd / && %s -e %s 2>&1"):format(H.lua, q("io.write(io.open('/proc/self/maps'):read('*a'))")))
    local heavy = { "libarchive.so", "libxml2.so", "libicuuc.so", "libstdc++.so" }
    local function none_of(libs, maps, why)
      for _, lib in ipairs(libs) do
        if not bare:find(lib, 1, true) then assert.is_nil(maps:find(lib, 1, true), lib .. " mapped " .. why) end
      end
    end
    none_of(heavy, out, "before use")
    none_of({ "libz.so", "libzstd.so" }, out, "before use")
    -- a gzip and a zstd image: zlib and libzstd, never libarchive and what it brings
    local read = "local e = assert(core.image.list('/', %q)); assert(e[1].name == 'conf/modules', e[1].name)"
    out, ok = maps_after(read:format(image_by("gzip", dir)) .. "; " .. read:format(image_by("zstd", dir)))
    assert(ok, out)
    assert.truthy(out:find("/vfioinit/core/image.so", 1, true), out)
    assert.truthy(out:find("libz.so", 1, true), out)
    assert.truthy(out:find("libzstd.so", 1, true), out)
    none_of(heavy, out, "for gzip and zstd")
    -- an xz one: libarchive's filter, its module loaded on the way
    out, ok = maps_after(read:format(image_by("xz", dir)))
    assert(ok, out)
    assert.truthy(out:find("libarchive.so", 1, true), out)
    assert.truthy(out:find("/vfioinit/core/archive.so", 1, true), out)
  end)

  it("names libarchive's module when an xz image needs it and it is missing; gzip is still read", function()
    local dir = H.tmpdir()
    finally(function() H.rm(dir) end)
    local build = H.project .. "/" .. (os.getenv("VFIOINIT_BUILD") or "build")
    H.sh("mkdir -p " .. q(dir .. "/lib/vfioinit/core") .. " && cp " .. q(build .. "/vfioinit/core.so") .. " "
      .. q(dir .. "/lib/vfioinit/") .. " && cp " .. q(build .. "/vfioinit/core/image.so") .. " "
      .. q(dir .. "/lib/vfioinit/core/"))
    local xz, gz = image_by("xz", dir), image_by("gzip", dir)
    local out, ok = child(("print(core.image.list('/', %q)); print(#assert(core.image.list('/', %q)))"):format(xz, gz),
      dir .. "/lib/?.so")
    assert(ok, out)
    assert.truthy(out:find("^nil\t" .. xz:gsub("%p", "%%%0") .. ": cannot read xz data: the module "
      .. "vfioinit%.core%.archive did not load %([^\n]*not found[^\n]*%) at offset 0\n1\n$"), out)
  end)

  it("names the module that did not load when core.kmod's is missing", function()
    local dir = H.tmpdir()
    finally(function() H.rm(dir) end)
    H.sh("mkdir -p " .. q(dir .. "/vfioinit") .. " && cp " .. q(H.project .. "/" .. (os.getenv("VFIOINIT_BUILD") or "build")
      .. "/vfioinit/core.so") .. " " .. q(dir .. "/vfioinit/"))
    local out, ok = child("assert(core.fs.read); print(pcall(function() return core.kmod end))", dir .. "/?.so")
    assert(ok, out)
    assert.truthy(out:find("false\t[^\n]*vfioinit.core: core.kmod is the module vfioinit.core.kmod, which did not load: "
      .. "[^\n]*module 'vfioinit.core.kmod' not found"), out)
  end)
end)

describe("core.image.list(root, path)", function()
  local r
  before_each(function() r = H.tmpdir() end)
  after_each(function() H.rm(r) end)

  it("names a bad image as seen inside root", function()
    H.writefile(r .. "/boot/junk.img", "half-written junk")
    local e, msg = core.image.list(r, "/boot/junk.img")
    assert.is_nil(e)
    assert.are.equal("/boot/junk.img: not an initramfs (no cpio or known compression magic) at offset 0", msg)
  end)

  it("resolves a symlink inside root, never on the host", function()
    H.sh("mkdir -p " .. q(r .. "/boot") .. " && ln -s /etc/hostname " .. q(r .. "/boot/link.img"))
    local e, msg = core.image.list(r, "/boot/link.img")
    assert.is_nil(e)
    assert.matches("^/boot/link%.img: No such file or directory$", msg)
  end)

  it("takes a path inside root only: a relative one or none raises", function()
    assert.error_matches(function() core.image.list(r, "boot/junk.img") end, "absolute path expected")
    assert.error_matches(function() core.image.list(r .. "/boot/junk.img") end, "string expected, got no value")
    assert.error_matches(function() core.image.list(r, "/x", "want") end, "table expected, got string")
  end)
end)

describe("core.kmod.new(root, moddir [, config_dirs])", function()
  local r, kver
  setup(function()
    r = H.tmpdir()
    kver = H.install_kernel(r, "cloud")
  end)
  teardown(function() H.rm(r) end)

  it("reads the kernel tree inside root and reports module paths inside it", function()
    local ctx = assert(core.kmod.new(r, "/lib/modules/" .. kver, { "/etc/modprobe.d" }))
    local m = assert(ctx:module("vfio_pci"))
    ctx:close()
    assert.are.equal("/lib/modules/" .. kver .. "/", m.path:sub(1, #kver + 14))
    assert.truthy(H.readfile(r .. m.path))
  end)

  it("names a FIFO among the indexes as seen inside root", function()
    local r2 = H.tmpdir()
    finally(function() H.rm(r2) end)
    H.sh("mkdir -p " .. q(r2 .. "/lib/modules/9.9") .. " && mkfifo " .. q(r2 .. "/lib/modules/9.9/modules.dep.bin"))
    local ctx, msg = core.kmod.new(r2, "/lib/modules/9.9")
    assert.is_nil(ctx)
    assert.are.equal("/lib/modules/9.9/modules.dep.bin: not a regular file (fifo)", msg)
  end)

  it("takes paths inside root only: a relative module dir or config path raises", function()
    assert.error_matches(function() core.kmod.new(r, "lib/modules/" .. kver) end, "absolute path expected")
    assert.error_matches(function() core.kmod.new(r, "/lib/modules/" .. kver, { "etc/modprobe.d" }) end,
      "absolute path expected")
  end)
end)

describe("verify", function()
  it("names a non-initramfs image /boot/... only, not the host path of root", function()
    local r = H.make_root({ os = { ID = "arch" }, corpus = { ["/etc/mkinitcpio.conf"] = "mkinitcpio/mkinitcpio.conf" },
      exec = { "/usr/bin/mkinitcpio" } })
    finally(function() H.rm(r) end)
    local kver = H.install_kernel(r, "cloud")
    local img = "/boot/initramfs-" .. kver .. ".img"
    H.writefile(r .. img, "half-written junk")
    local v = assert(vfioinit.verify({ root = r, generators = { "mkinitcpio" } }))
    assert.are.equal(1, #v)
    assert.is_false(v[1].ok)
    assert.are.equal(img .. ": not an initramfs (no cpio or known compression magic) at offset 0", v[1].error)
    assert.is_true(no_host(v[1].error, r))
  end)
end)

-- The Lua API's one error convention (docs/CONTRACT.md): expected failures return
-- `nil, message[, report]`; misuse raises, and a misspelt option is misuse like a wrong
-- type: it would otherwise be dropped and the call do something else than asked.
describe("the Lua API's options", function()
  local r
  before_each(function()
    r = H.make_root({ os = { ID = "arch" }, corpus = { ["/etc/mkinitcpio.conf"] = "mkinitcpio/mkinitcpio.conf" },
      exec = { "/usr/bin/mkinitcpio" } })
  end)
  after_each(function() H.rm(r) end)

  it("every public function raises on an unknown field, before anything runs", function()
    local before = H.tree_hash(r)
    local plan = assert(vfioinit.plan({ root = r }))
    local policy = vfioinit.policy({})
    local calls = {
      { "detect", function(o) return vfioinit.detect(o) end },
      { "modules", function(o) o.kernel = "x"; return vfioinit.modules(o) end },
      { "drivers_for", function(o) o.kernel = "x"; return vfioinit.drivers_for(o) end },
      { "plan", function(o) return vfioinit.plan(o) end },
      { "status", function(o) return vfioinit.status(o) end },
      { "verify", function(o) return vfioinit.verify(o) end },
      { "rebuild", function(o) return vfioinit.rebuild(o) end },
      { "boot_chains", function(o) return vfioinit.boot_chains(o) end },
      { "update_initramfs", function(o) return vfioinit.update_initramfs(o) end },
      { "revert", function(o) return vfioinit.revert(o) end },
      { "detect_initramfs_systems", function(o) return vfioinit.detect_initramfs_systems(o) end },
      { "ensure_dracut_modules", function(o) return vfioinit.ensure_dracut_modules(nil, o) end, 2 },
      { "apply", function(o) o.root = nil; return plan:apply(o) end },
      { "run", function(o) return policy:run(o) end },
      { "plan", function(o) return policy:plan(o) end },
      { "options", function(o) return policy:options(o) end },
      { "for_root", function(o) o.root = nil; return vfioinit.policy.for_root(r, o) end, 2 },
    }
    for _, c in ipairs(calls) do
      for _, bad in ipairs({ "idz", "dryrun", "rebuidl" }) do
        assert.has_error(function() c[2]({ root = r, [bad] = true }) end,
          ("bad argument #%d to '%s' (unknown field '%s')"):format(c[3] or 1, c[1], bad), c[1])
      end
    end
    assert.are.equal(before, H.tree_hash(r))
  end)

  it("plan{idz=} and update_initramfs{dryrun=, rebuidl=} are refused, not run without them", function()
    local before = H.tree_hash(r)
    assert.has_error(function() vfioinit.plan({ root = r, idz = "10de:1b80" }) end,
      "bad argument #1 to 'plan' (unknown field 'idz')")
    assert.has_error(function() vfioinit.update_initramfs({ root = r, dryrun = true, rebuidl = false }) end)
    assert.are.equal(before, H.tree_hash(r))
    -- the right names: a dry run writes nothing and reports the change
    local rep = assert(vfioinit.update_initramfs({ root = r, dry_run = true, rebuild = false }))
    assert.are.equal(1, #rep.changes)
    assert.are.equal(before, H.tree_hash(r))
  end)

  it("a timeout outside the one range of seconds is misuse, inf and 1e400 alike", function()
    for _, t in ipairs({ 0, -1, 1 / 0, tonumber("1e400"), 0 / 0, 2e9 }) do
      assert.has_error(function() vfioinit.rebuild({ root = r, timeout = t }) end,
        ("bad argument #1 to 'rebuild' (field 'timeout': a number of seconds > 0 and at most 1e9 expected, got %s)")
          :format(tostring(t)))
    end
  end)

  it("update_initramfs returns nil, message, report on failure, so assert() catches it", function()
    H.writefile(r .. "/etc/mkinitcpio.conf", "# header\nBINARIES=()\nMODULES=(ext4\n  nvme\n")
    local before = H.tree_hash(r)
    local rep, err, partial = vfioinit.update_initramfs({ root = r, rebuild = false })
    assert.is_nil(rep)
    assert.matches("^/etc/mkinitcpio%.conf:%d+: ", err)
    assert.is_false(partial.ok)
    assert.are.equal(err, partial.error)
    assert.has_error(function() assert(vfioinit.update_initramfs({ root = r, rebuild = false })) end)
    -- a policy's run is update_initramfs: the same three values, the report naming the policy
    rep, err, partial = vfioinit.policy({ name = "mine", rebuild = false }):run({ root = r })
    assert.is_nil(rep)
    assert.matches("^/etc/mkinitcpio%.conf:%d+: ", err)
    assert.are.equal("mine", partial.policy)
    assert.are.equal(before, H.tree_hash(r))
  end)
end)
