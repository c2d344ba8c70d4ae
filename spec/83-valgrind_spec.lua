-- Every core function under valgrind (memcheck) with the release build: a Lua driver calls
-- each one on its success and error paths (fs, kmod on the real Debian kernel,
-- scan.shell, scan.yaml, spawn.run, image.list, image.sections/section, re.compile/find, sig.read/verify/cert, lock.acquire), then closes the state. It must give
-- 0 errors and 0 bytes definitely lost. The release build is used on purpose: ASan and
-- valgrind do not mix, and tools/test runs busted with ASan preloaded, so the driver runs
-- in a clean environment against build/vfioinit/core.so (env VFIOINIT_VALGRIND_BUILD
-- picks another release build dir).
local h = require "helpers"
local u = require "uki_helpers"

local q, sh = h.q, h.sh
local vbuild = os.getenv("VFIOINIT_VALGRIND_BUILD") or "build"

local DRIVER = [=[
local project, build, root, moddir, img_gz, img_zst, uki, signed, cert = ...
package.cpath = project .. "/" .. build .. "/?.so;" .. package.cpath
local core = require "vfioinit.core"
local n = 0
local function ok(v, ...) n = n + 1; assert(v ~= nil, (select(1, ...))); return v, ... end
local function fails(v, ...) n = n + 1; assert(v == nil, "expected a failure"); return ... end
local function raises(f, ...) n = n + 1; assert(not pcall(f, ...), "expected a raise") end

-- fs, both resolvers
for _, fallback in ipairs({ false, true }) do
  core.fs._force_fallback(fallback)
  ok(core.fs.mkdirs(root, "/etc/a/b", 493))
  ok(core.fs.write_atomic(root, "/etc/a/b/f", ("x"):rep(100000), 420))
  ok(core.fs.write_atomic(root, "/etc/a/b/f", "small\n"))
  assert(ok(core.fs.read(root, "/etc/a/b/f")) == "small\n")
  fails(core.fs.read(root, "/etc/a/b/f", 2))
  fails(core.fs.read(root, "/nope"))
  ok(core.fs.stat(root, "/etc/a/b/f")); ok(core.fs.stat(root, "/etc", true)); fails(core.fs.stat(root, "/nope"))
  ok(core.fs.dir(root, "/etc/a/b")); fails(core.fs.dir(root, "/nope"))
  ok(core.fs.copy(root, "/etc/a/b/f", "/etc/a/b/g")); fails(core.fs.copy(root, "/nope", "/etc/x"))
  ok(core.fs.rename(root, "/etc/a/b/g", "/etc/a/b/h")); fails(core.fs.rename(root, "/nope", "/etc/y"))
  os.execute("ln -sfn a/b/h '" .. root .. "/etc/link'")
  assert(ok(core.fs.resolve(root, "/etc/link")) == "/etc/a/b/h"); fails(core.fs.resolve(root, "/no/such/x"))
  ok(core.fs.write_atomic(root, "/etc/link", "through the link\n"))
  ok(core.fs.remove(root, "/etc/link")); ok(core.fs.remove(root, "/etc/a/b/h")); fails(core.fs.remove(root, "/etc/a"))
  fails(core.fs.write_atomic("/nonexistent-root", "/x", "y"))
  raises(core.fs.read, root, "relative")
end
core.fs._force_fallback(false)

-- kmod on the real kernel
local ctx = ok(core.kmod.new("/", moddir))
ok(ctx:module("vfio_pci")); ok(ctx:module("vfio-iommu-type1")); fails(ctx:module("no_such_module"))
ok(ctx:lookup("pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00"))
ctx:close(); ctx:close()
do local c2 <close> = ok(core.kmod.new("/", moddir, { root .. "/etc" })) ; ok(c2:module("vfio")) end
local c3 = ok(core.kmod.new("/", moddir)); c3 = nil  -- left to __gc
local c4 = core.kmod.new(root, "/no/modules"); if c4 then c4:module("vfio"); c4:lookup("pci:v1d1"); c4:close() end

-- scanners
ok(core.scan.shell("MODULES=(vfio 'a b' \"c$d\")\nHOOKS+=(x) # c\nif x; then Y=1; fi\nZ=`q` W=$(e)\ncat <<EOF\nA=1\nEOF\n"))
fails(core.scan.shell("MODULES=(vfio\n"))
fails(core.scan.shell("X=\"unterminated\n"))
ok(core.scan.yaml("universal: false\nmodules_force_load: \"a,b\"\nextra_files: [x, 'y']\nblock: |\n  text\n"))
fails(core.scan.yaml("key: \"unterminated\n"))

-- spawn, without and with a root (mount namespace + chroot)
local lines = {}
ok(core.spawn.run({ argv = { "sh", "-c", "echo out; echo err >&2; exit 3" }, on_line = function(s, l) lines[#lines + 1] = s .. l end }))
ok(core.spawn.run({ argv = { "sleep", "5" }, timeout = 0.2 }))
ok(core.spawn.run({ argv = { "env" }, env = { "A=1" }, cwd = "/" }))
fails(core.spawn.run({ argv = { "/no/such/command" } }))
raises(core.spawn.run, { argv = { "echo", "x" }, on_line = function() error("stop") end, timeout = 1 })

-- images
-- gzip and zstd through zlib and libzstd, xz through libarchive's module; each cut short too
local images = img_gz:match("^(.*)/")
for _, img in ipairs({ img_gz, img_zst, images .. "/img.xz" }) do
  local entries, contents = ok(core.image.list("/", img, { ["conf/modules"] = true, ["etc/"] = true }))
  assert(#entries > 0 and contents["conf/modules"])
end
for _, ext in ipairs({ "gz", "zst", "xz" }) do fails(core.image.list("/", images .. "/cut." .. ext)) end
fails(core.image.list(root, "/etc/a/b/f"))
fails(core.image.list(root, "/nope"))

-- re (--match): compile error, match, no match, close, __close, __gc
fails(core.re.compile("a(b"))
local rx = ok(core.re.compile("NVIDIA.*(VGA|Audio)"))
ok(rx:find("10de:2206 NVIDIA Corporation GA102 [VGA compatible controller]")); assert(rx:find("none") == nil)
rx:close(); rx:close()
do local r2 <close> = ok(core.re.compile("^1af4:")); ok(r2:find("1af4:1000")) end
local r3 = ok(core.re.compile("x+")); r3 = nil

-- unified kernel images (pe.c) and a window over the .initrd section
if uki ~= "" then
  local secs = ok(core.image.sections("/", uki))
  local initrd
  for _, sec in ipairs(secs) do if sec.name == ".initrd" then initrd = sec end end
  ok(core.image.list("/", uki, { ["conf/modules"] = true }, { offset = initrd.offset, size = initrd.size }))
  fails(core.image.list("/", uki, nil, { offset = initrd.offset, size = initrd.size - 1 }))
  fails(core.image.list("/", uki, nil, { offset = initrd.offset, size = 1 << 40 }))
  assert(ok(core.image.section("/", uki, ".cmdline")) == "quiet\n\0")
  fails(core.image.section("/", uki, ".nope")); fails(core.image.section("/", uki, ".linux", 1))
  raises(core.image.list, "/", uki, nil, { offset = -1, size = 1 })
end
fails(core.image.sections(root, "/etc/a/b/f")); fails(core.image.sections(root, "/nope"))

-- signatures (sig.c): a signed stub, its certificate, the unsigned UKI, a non-PE file
if signed ~= "" then
  local pem = io.open(cert):read("a")
  assert(#ok(core.sig.read("/", signed)).signatures == 1)
  assert(ok(core.sig.verify("/", signed, pem)) == 1)
  assert(ok(core.sig.verify("/", signed, { pem, "junk" })) == 1)
  ok(core.sig.cert(pem)); fails(core.sig.cert("junk"))
  fails(core.sig.verify("/", signed, "junk"))
  if uki ~= "" then ok(core.sig.read("/", uki)); assert(core.sig.verify("/", uki, pem) == false) end
end
fails(core.sig.read(root, "/etc/a/b/f")); fails(core.sig.read(root, "/nope"))
fails(core.image.section(root, "/etc/a/b/f", ".cmdline"))

-- lock
local lk = ok(core.lock.acquire(root, "/")); fails(core.lock.acquire(root, "/", 0)); lk:unlock(); lk:unlock()
do local l2 <close> = ok(core.lock.acquire(root, "/lockfile")) end
local l3 = ok(core.lock.acquire(root, "/", 0)); l3 = nil
fails(core.lock.acquire(root, "/no/dir/lock", 0))
collectgarbage(); collectgarbage()
io.write("driver: ", n, " calls\n")
]=]

describe("valgrind (release build)", function()
  local have = select(2, sh("command -v valgrind >/dev/null 2>&1"))
  local so = h.project .. "/" .. vbuild .. "/vfioinit/core.so"
  local why = not have and "valgrind not installed" or not io.open(so) and (so .. " not built") or nil
  if why then pending("every core function under memcheck (" .. why .. ")") return end

  it("runs every core function with 0 errors and 0 bytes definitely lost", function()
    local dir = h.tmpdir()
    finally(function() h.rm(dir) end)
    local kdir, kver = h.real_kernel("cloud")
    local root = dir .. "/root"
    h.writefile(root .. "/etc/modprobe.d/x.conf", "options vfio_pci ids=1af4:1000\n")
    h.writefile(dir .. "/tree/conf/modules", "vfio\nvfio_pci\n")
    h.writefile(dir .. "/tree/etc/cmdline.d/00.conf", "rd.driver.pre=vfio_pci\n")
    local out, ok = sh(("cd %s/tree && find . | LC_ALL=C sort | cpio -o -H newc --quiet > ../main.cpio && gzip -nc ../main.cpio > ../img.gz && { cat ../main.cpio; zstd -qc ../main.cpio; } > ../img.zst"
      .. " && xz -c ../main.cpio > ../img.xz && for e in gz zst xz; do head -c -20 ../img.$e > ../cut.$e; done 2>&1")
      :format(q(dir)))
    assert.is_true(ok, out)
    -- a real UKI (systemd stub + objcopy) when the stub is installed; else "" skips that part
    local uki = ""
    if not u.missing() then
      h.writefile(dir .. "/cmdline", "quiet\n\0")
      h.writefile(dir .. "/linux", ("\0"):rep(4096))
      uki = u.make(dir .. "/uki.efi", { { ".cmdline", dir .. "/cmdline" }, { ".linux", dir .. "/linux" }, { ".initrd", dir .. "/img.zst" } })
    end
    -- the stub signed by sbsign with a throwaway key, when sbsigntool is installed
    local signed, cert = "", dir .. "/key.pem"
    if not u.missing() and select(2, sh("command -v sbsign >/dev/null 2>&1")) then
      signed = dir .. "/signed.efi"
      assert(select(2, sh(("openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj /CN=valgrind -keyout %s -out %s 2>&1 && "
        .. "sbsign --key %s --cert %s --output %s %s 2>&1"):format(q(dir .. "/key.key"), q(cert), q(dir .. "/key.key"), q(cert),
        q(signed), q(u.STUB)))))
    end
    h.writefile(dir .. "/driver.lua", DRIVER)
    local log = dir .. "/valgrind.log"
    out = sh(("cd %s && env -u LD_PRELOAD -u ASAN_OPTIONS -u UBSAN_OPTIONS valgrind --leak-check=full "
      .. "--errors-for-leak-kinds=definite --error-exitcode=9 --log-file=%s lua5.4 %s %s %s %s %s %s %s %s %s %s 2>&1; echo rc=$?")
      :format(q(h.project), q(log), q(dir .. "/driver.lua"), q(h.project), q(vbuild), q(root),
        q(kdir .. "/lib/modules/" .. kver), q(dir .. "/img.gz"), q(dir .. "/img.zst"), q(uki), q(signed), q(cert)))
    local report = h.readfile(log) or ""
    local errors = tonumber(report:match("ERROR SUMMARY: (%d+) errors"))
    local lost = report:match("definitely lost: ([%d,]+) bytes") or (report:find("All heap blocks were freed", 1, true) and "0")
    io.stderr:write(("\n[83-valgrind] %s; ERROR SUMMARY: %s errors, definitely lost: %s bytes\n"):format(
      (out:match("driver: %d+ calls") or "driver did not finish"), tostring(errors), tostring(lost)))
    assert.truthy(out:find("driver: %d+ calls"), out .. report)
    assert.truthy(out:find("rc=0", 1, true), out .. report)
    assert.are.equal(0, errors, report)
    assert.are.equal("0", lost, report)
  end)
end)
