-- fs.c: root-confined file I/O, on real files in temp dirs. Every behaviour runs twice:
-- through openat2(RESOLVE_IN_ROOT) and through the fallback component walker.
local h = require "helpers"
local core = require "vfioinit.core"

local ENOENT, EIO, EEXIST, ENOTDIR, EISDIR, EINVAL, EFBIG, ENOSPC, ENOTEMPTY, ELOOP =
  2, 5, 17, 20, 21, 22, 27, 28, 39, 40

local is_root = h.sh("id -u") == "0\n"
local root_it = is_root and it or function(name) pending(name .. " (needs root)") end

-- Names in a host dir, `ls -A` style, sorted: used to see that no temp file is left.
local function listing(dir)
  local t = {}
  for l in h.sh("ls -A " .. h.q(dir)):gmatch("[^\n]+") do t[#t + 1] = l end
  table.sort(t)
  return t
end

-- Names, modes, sizes and contents under dir (dir mtimes change with a created+removed temp).
local function snapshot(dir)
  return (h.sh("cd " .. h.q(dir) .. " && find . -printf '%p %y %m %s %U %G\\n' | sort && find . -type f -print0 | sort -z | xargs -0 -r sha256sum"))
end

-- Run `code` in a fresh lua5.4 (h.lua) with extra environment (the core reads VFIOINIT_FAULT and
-- VFIOINIT_FS_FALLBACK from the environment, which a Lua state cannot set for itself).
local function run_env(env, code)
  local build = os.getenv("VFIOINIT_BUILD") or "build"
  local prog = ("package.cpath = %q; local core = require 'vfioinit.core'; %s")
    :format("./" .. build .. "/?.so", code)
  local out, ok = h.sh(env .. " " .. h.lua .. " -e " .. h.q(prog) .. " 2>&1")
  return out, ok
end

for _, mode in ipairs { "openat2", "fallback" } do
  describe("fs (" .. mode .. ")", function()
    local base, root, outside

    -- One temp dir holds both root and a sibling "outside" dir with the canary
    -- (spawning processes is slow here, so setup uses as few as it can).
    before_each(function()
      core.fs._force_fallback(mode == "fallback")
      base = h.tmpdir()
      root, outside = base .. "/root", base .. "/outside"
      h.sh(("mkdir -p %s %s"):format(h.q(root .. "/etc"), h.q(outside)))
      local f = assert(io.open(outside .. "/canary", "wb"))
      f:write("canary: must never change\n")
      f:close()
      f = assert(io.open(root .. "/etc/hostname", "wb"))
      f:write("inside\n")
      f:close()
    end)

    after_each(function()
      core.fs._force_fallback(false)
      h.rm(base)
    end)

    describe("read()", function()
      it("should read a whole file", function()
        assert.are.equal("inside\n", core.fs.read(root, "/etc/hostname"))
      end)

      it("should read an empty file", function()
        h.writefile(root .. "/empty", "")
        assert.are.equal("", core.fs.read(root, "/empty"))
      end)

      it("should read a file larger than one chunk", function()
        local big = ("0123456789abcdef"):rep(10000)
        h.writefile(root .. "/big", big)
        assert.are.equal(big, core.fs.read(root, "/big"))
      end)

      it("should return nil, path: strerror, errno for a missing file, without the host root", function()
        local v, msg, err = core.fs.read(root, "/etc/nope")
        assert.is_nil(v)
        assert.are.equal("/etc/nope: No such file or directory", msg)
        assert.are.equal(ENOENT, err)
      end)

      it("should refuse a directory", function()
        local v, msg, err = core.fs.read(root, "/etc")
        assert.is_nil(v)
        assert.are.equal("/etc: Is a directory", msg)
        assert.are.equal(EISDIR, err)
      end)

      it("should refuse a FIFO without blocking", function()
        h.sh("mkfifo " .. h.q(root .. "/fifo"))
        local v, msg, err = core.fs.read(root, "/fifo")
        assert.is_nil(v)
        assert.are.equal("/fifo: not a regular file (fifo)", msg)
        assert.are.equal(EINVAL, err)
      end)

      it("should enforce max and name the limit", function()
        assert.are.equal("inside\n", core.fs.read(root, "/etc/hostname", 7))
        local v, msg, err = core.fs.read(root, "/etc/hostname", 3)
        assert.is_nil(v)
        assert.are.equal("/etc/hostname: File too large (limit 3 bytes)", msg)
        assert.are.equal(EFBIG, err)
      end)

      it("should report a missing root by its name", function()
        local v, msg, err = core.fs.read(root .. "/nonexistent", "/etc/hostname")
        assert.is_nil(v)
        assert.are.equal(root .. "/nonexistent: No such file or directory", msg)
        assert.are.equal(ENOENT, err)
      end)

      it("should raise on bad arguments", function()
        assert.has_error(function() core.fs.read(nil, "/etc/hostname") end)
        assert.has_error(function() core.fs.read(root) end)
        assert.has_error(function() core.fs.read(root, "etc/hostname") end)
        assert.has_error(function() core.fs.read(root, "/etc/hostname\0x") end)
        assert.has_error(function() core.fs.read(root, "/etc/hostname", "many") end)
        assert.has_error(function() core.fs.read(root, "/etc/hostname", -1) end)
        assert.has_error(function() core.fs.read({}, "/etc/hostname") end)
      end)
    end)

    describe("stat()", function()
      it("should describe a file", function()
        h.writefile(root .. "/f", "12345", 416) -- 0640
        h.sh("touch -d @1700000000.25 " .. h.q(root .. "/f"))
        local st = assert(core.fs.stat(root, "/f"))
        assert.are.equal("file", st.type)
        assert.are.equal(416, st.mode)
        assert.are.equal(5, st.size)
        assert.are.equal(1700000000, st.mtime)
        assert.are.equal(250000000, st.mtime_ns)
        assert.are.equal(tonumber((h.sh("stat -c %u " .. h.q(root .. "/f")))), st.uid)
        assert.are.equal(tonumber((h.sh("stat -c %g " .. h.q(root .. "/f")))), st.gid)
      end)

      it("should describe a dir, and the root itself", function()
        assert.are.equal("dir", core.fs.stat(root, "/etc").type)
        assert.are.equal("dir", core.fs.stat(root, "/").type)
      end)

      it("should follow a symlink unless nofollow", function()
        h.sh("ln -s etc/hostname " .. h.q(root .. "/l"))
        assert.are.equal("file", core.fs.stat(root, "/l").type)
        assert.are.equal("link", core.fs.stat(root, "/l", true).type)
      end)

      it("should describe other types", function()
        h.sh("mkfifo " .. h.q(root .. "/fifo"))
        assert.are.equal("other", core.fs.stat(root, "/fifo").type)
      end)

      it("should return nil, msg, errno for a missing path", function()
        local v, msg, err = core.fs.stat(root, "/nope/x")
        assert.is_nil(v)
        assert.are.equal("/nope/x: No such file or directory", msg)
        assert.are.equal(ENOENT, err)
        v, msg, err = core.fs.stat(root, "/etc/hostname/x")
        assert.is_nil(v)
        assert.are.equal(ENOTDIR, err)
      end)

      it("should raise on bad arguments", function()
        assert.has_error(function() core.fs.stat(root, {}) end)
        assert.has_error(function() core.fs.stat(root, "relative") end)
        assert.has_error(function() core.fs.stat(nil, "/") end)
      end)
    end)

    describe("dir()", function()
      it("should list sorted names in strcmp order, without . and ..", function()
        for _, n in ipairs { "b", "a", "B", ".hidden", "a0", "_" } do
          h.writefile(root .. "/d/" .. n, "")
        end
        h.sh("mkdir " .. h.q(root .. "/d/sub"))
        assert.are.same({ ".hidden", "B", "_", "a", "a0", "b", "sub" }, core.fs.dir(root, "/d"))
      end)

      it("should list an empty dir as an empty table", function()
        h.sh("mkdir " .. h.q(root .. "/empty"))
        assert.are.same({}, core.fs.dir(root, "/empty"))
      end)

      it("should list the root", function()
        assert.are.same({ "etc" }, core.fs.dir(root, "/"))
      end)

      it("should return nil, msg, errno for a file or a missing dir", function()
        local v, msg, err = core.fs.dir(root, "/etc/hostname")
        assert.is_nil(v)
        assert.are.equal("/etc/hostname: Not a directory", msg)
        assert.are.equal(ENOTDIR, err)
        v, msg, err = core.fs.dir(root, "/nope")
        assert.is_nil(v)
        assert.are.equal(ENOENT, err)
      end)

      it("should raise on bad arguments", function()
        assert.has_error(function() core.fs.dir(root) end)
        assert.has_error(function() core.fs.dir(root, "etc") end)
      end)
    end)

    describe("write_atomic()", function()
      it("should create a new file with mode 0644", function()
        assert.is_true(core.fs.write_atomic(root, "/etc/new.conf", "hello\n"))
        assert.are.equal("hello\n", h.readfile(root .. "/etc/new.conf"))
        assert.are.equal("644\n", h.sh("stat -c %a " .. h.q(root .. "/etc/new.conf")))
        assert.are.same({ "hostname", "new.conf" }, listing(root .. "/etc"))
      end)

      it("should create a new file with the given mode", function()
        assert.is_true(core.fs.write_atomic(root, "/etc/secret", "x", 384)) -- 0600
        assert.are.equal("600\n", h.sh("stat -c %a " .. h.q(root .. "/etc/secret")))
      end)

      it("should write empty and binary content", function()
        assert.is_true(core.fs.write_atomic(root, "/e", ""))
        assert.are.equal("", h.readfile(root .. "/e"))
        local bin = "a\0b\255\n"
        assert.is_true(core.fs.write_atomic(root, "/b", bin))
        assert.are.equal(bin, h.readfile(root .. "/b"))
      end)

      root_it("should keep the mode and owner of an existing file", function()
        local f = root .. "/etc/mkinitcpio.conf"
        h.writefile(f, "old\n", 416) -- 0640
        h.sh("chown 1234:1234 " .. h.q(f))
        assert.is_true(core.fs.write_atomic(root, "/etc/mkinitcpio.conf", "new\n", 511))
        assert.are.equal("new\n", h.readfile(f))
        assert.are.equal("640 1234 1234\n", h.sh("stat -c '%a %u %g' " .. h.q(f)))
        assert.are.same({ "hostname", "mkinitcpio.conf" }, listing(root .. "/etc"))
      end)

      it("should replace the file (new inode) rather than rewrite it", function()
        local f = root .. "/etc/hostname"
        local ino = h.sh("stat -c %i " .. h.q(f))
        assert.is_true(core.fs.write_atomic(root, "/etc/hostname", "replaced\n"))
        assert.are_not.equal(ino, h.sh("stat -c %i " .. h.q(f)))
      end)

      it("should write through a final symlink, inside root, keeping the link", function()
        h.sh("ln -s /etc/hostname " .. h.q(root .. "/etc/link"))
        assert.is_true(core.fs.write_atomic(root, "/etc/link", "via link\n"))
        assert.are.equal("via link\n", h.readfile(root .. "/etc/hostname"))
        assert.are.equal("link", core.fs.stat(root, "/etc/link", true).type)
      end)

      it("should fail on a directory target and leave no temp file", function()
        h.sh("mkdir " .. h.q(root .. "/etc/dir.conf"))
        local v, msg, err = core.fs.write_atomic(root, "/etc/dir.conf", "x")
        assert.is_nil(v)
        assert.are.equal("/etc/dir.conf: Is a directory", msg)
        assert.are.equal(EISDIR, err)
        assert.are.same({ "dir.conf", "hostname" }, listing(root .. "/etc"))
        assert.are.same({}, listing(root .. "/etc/dir.conf"))
      end)

      it("should fail on a FIFO target", function()
        h.sh("mkfifo " .. h.q(root .. "/etc/fifo"))
        local v, msg, err = core.fs.write_atomic(root, "/etc/fifo", "x")
        assert.is_nil(v)
        assert.are.equal("/etc/fifo: not a regular file (fifo)", msg)
        assert.are.equal(EINVAL, err)
      end)

      it("should fail when the parent dir is missing", function()
        local v, msg, err = core.fs.write_atomic(root, "/nodir/f", "x")
        assert.is_nil(v)
        assert.are.equal("/nodir/f: No such file or directory", msg)
        assert.are.equal(ENOENT, err)
      end)

      it("should refuse the root itself", function()
        local v, _, err = core.fs.write_atomic(root, "/", "x")
        assert.is_nil(v)
        assert.are.equal(EINVAL, err)
      end)

      for _, fault in ipairs { { "write:1", ENOSPC }, { "fsync:1", EIO }, { "rename:1", EIO } } do
        it("should leave the target untouched and no temp on a failing " .. fault[1], function()
          local before = snapshot(root)
          local out = run_env(("VFIOINIT_FAULT=%s VFIOINIT_FS_FALLBACK=%d"):format(fault[1], mode == "fallback" and 1 or 0),
            ("print(core.fs.write_atomic(%q, '/etc/hostname', 'new content'))"):format(root))
          assert.are.equal(("nil\t/etc/hostname: %s\t%d\n"):format(
            fault[2] == ENOSPC and "No space left on device" or "Input/output error", fault[2]), out)
          assert.are.equal(before, snapshot(root))
          assert.are.equal("inside\n", h.readfile(root .. "/etc/hostname"))
        end)
      end

      it("should leave no temp file when a new file fails", function()
        local out = run_env("VFIOINIT_FAULT=write:1",
          ("print(core.fs.write_atomic(%q, '/etc/fresh', 'x'))"):format(root))
        assert.are.equal("nil\t/etc/fresh: No space left on device\t28\n", out)
        assert.are.same({ "hostname" }, listing(root .. "/etc"))
      end)

      it("should raise on bad arguments", function()
        assert.has_error(function() core.fs.write_atomic(root, "/f") end)
        assert.has_error(function() core.fs.write_atomic(root, "f", "x") end)
        assert.has_error(function() core.fs.write_atomic(root, "/f", {}) end)
        assert.has_error(function() core.fs.write_atomic(root, "/f", "x", 8 ^ 5) end)
        assert.has_error(function() core.fs.write_atomic(root, "/f", "x", -1) end)
        assert.has_error(function() core.fs.write_atomic(nil, "/f", "x") end)
      end)
    end)

    describe("mkdirs()", function()
      it("should create nested dirs and accept existing ones", function()
        assert.is_true(core.fs.mkdirs(root, "/a/b/c"))
        assert.are.equal("dir", core.fs.stat(root, "/a/b/c").type)
        assert.is_true(core.fs.mkdirs(root, "/a/b/c"))
        assert.is_true(core.fs.mkdirs(root, "/a//b/d/"))
        assert.are.same({ "c", "d" }, core.fs.dir(root, "/a/b"))
        assert.is_true(core.fs.mkdirs(root, "/"))
      end)

      it("should use the given mode", function()
        assert.is_true(core.fs.mkdirs(root, "/m", 448)) -- 0700
        assert.are.equal("700\n", h.sh("stat -c %a " .. h.q(root .. "/m")))
      end)

      it("should fail on a file in the way", function()
        local v, msg, err = core.fs.mkdirs(root, "/etc/hostname/x")
        assert.is_nil(v)
        assert.are.equal("/etc/hostname/x: Not a directory", msg)
        assert.are.equal(ENOTDIR, err)
      end)

      it("should raise on bad arguments", function()
        assert.has_error(function() core.fs.mkdirs(root, "a/b") end)
        assert.has_error(function() core.fs.mkdirs(root, "/a", "x") end)
        assert.has_error(function() core.fs.mkdirs(root, "/a", 65536) end)
      end)
    end)

    describe("remove()", function()
      it("should remove a file and an empty dir", function()
        assert.is_true(core.fs.remove(root, "/etc/hostname"))
        assert.is_true(core.fs.remove(root, "/etc"))
        assert.are.same({}, listing(root))
      end)

      it("should refuse a non-empty dir", function()
        local v, msg, err = core.fs.remove(root, "/etc")
        assert.is_nil(v)
        assert.are.equal("/etc: Directory not empty", msg)
        assert.are.equal(ENOTEMPTY, err)
      end)

      it("should remove a symlink itself, not its target", function()
        h.sh("ln -s /etc/hostname " .. h.q(root .. "/l"))
        assert.is_true(core.fs.remove(root, "/l"))
        assert.are.equal("inside\n", h.readfile(root .. "/etc/hostname"))
      end)

      it("should return nil, msg, errno for a missing file and for /", function()
        local v, msg, err = core.fs.remove(root, "/nope")
        assert.is_nil(v)
        assert.are.equal("/nope: No such file or directory", msg)
        assert.are.equal(ENOENT, err)
        v, _, err = core.fs.remove(root, "/")
        assert.is_nil(v)
        assert.are.equal(EINVAL, err)
      end)

      it("should raise on bad arguments", function()
        assert.has_error(function() core.fs.remove(root) end)
        assert.has_error(function() core.fs.remove(root, "x") end)
      end)
    end)

    describe("rename()", function()
      it("should move a file", function()
        assert.is_true(core.fs.rename(root, "/etc/hostname", "/hostname.old"))
        assert.are.equal("inside\n", h.readfile(root .. "/hostname.old"))
        assert.are.same({}, listing(root .. "/etc"))
      end)

      it("should return nil, msg, errno for a missing source", function()
        local v, msg, err = core.fs.rename(root, "/nope", "/x")
        assert.is_nil(v)
        assert.are.equal("/nope: No such file or directory", msg)
        assert.are.equal(ENOENT, err)
      end)

      it("should raise on bad arguments", function()
        assert.has_error(function() core.fs.rename(root, "/a") end)
        assert.has_error(function() core.fs.rename(root, "a", "/b") end)
      end)
    end)

    describe("copy()", function()
      it("should copy content and mode, leaving no temp", function()
        h.writefile(root .. "/boot/initrd.img", ("\0\1image"):rep(50000), 384)
        assert.is_true(core.fs.copy(root, "/boot/initrd.img", "/boot/initrd.img.bak"))
        assert.are.equal(h.readfile(root .. "/boot/initrd.img"), h.readfile(root .. "/boot/initrd.img.bak"))
        assert.are.equal("600\n", h.sh("stat -c %a " .. h.q(root .. "/boot/initrd.img.bak")))
        assert.are.same({ "initrd.img", "initrd.img.bak" }, listing(root .. "/boot"))
      end)

      it("should overwrite an existing file and copy an empty one", function()
        h.writefile(root .. "/empty", "")
        assert.is_true(core.fs.copy(root, "/empty", "/etc/hostname"))
        assert.are.equal("", h.readfile(root .. "/etc/hostname"))
      end)

      it("should fall back to read/write when copy_file_range fails", function()
        local big = ("0123456789abcdef"):rep(20000)
        h.writefile(root .. "/big", big, 493)
        local out = run_env("VFIOINIT_FAULT=cfr:1",
          ("print(core.fs.copy(%q, '/big', '/big.bak'))"):format(root))
        assert.are.equal("true\n", out)
        assert.are.equal(big, h.readfile(root .. "/big.bak"))
        assert.are.equal("755\n", h.sh("stat -c %a " .. h.q(root .. "/big.bak")))
      end)

      it("should leave the target untouched and no temp on a failing write", function()
        h.writefile(root .. "/etc/copy", "old\n")
        local before = snapshot(root)
        local out = run_env("VFIOINIT_FAULT=write:1",
          ("print(core.fs.copy(%q, '/etc/hostname', '/etc/copy'))"):format(root))
        assert.are.equal("nil\t/etc/copy: No space left on device\t28\n", out)
        assert.are.equal(before, snapshot(root))
      end)

      it("should refuse a directory source or target", function()
        local v, msg, err = core.fs.copy(root, "/etc", "/x")
        assert.is_nil(v)
        assert.are.equal("/etc: Is a directory", msg)
        assert.are.equal(EISDIR, err)
        v, msg, err = core.fs.copy(root, "/etc/hostname", "/etc")
        assert.is_nil(v)
        assert.are.equal("/etc: Is a directory", msg)
        assert.are.equal(EISDIR, err)
      end)

      it("should return nil, msg, errno for a missing source", function()
        local v, msg, err = core.fs.copy(root, "/nope", "/x")
        assert.is_nil(v)
        assert.are.equal("/nope: No such file or directory", msg)
        assert.are.equal(ENOENT, err)
      end)

      it("should raise on bad arguments", function()
        assert.has_error(function() core.fs.copy(root, "/a") end)
        assert.has_error(function() core.fs.copy(root, "/a", "b") end)
      end)
    end)

    describe("resolve()", function()
      it("should normalize . and .. and never go above root", function()
        assert.are.equal("/", core.fs.resolve(root, "/"))
        assert.are.equal("/etc/hostname", core.fs.resolve(root, "/./etc//../etc/hostname"))
        assert.are.equal("/etc", core.fs.resolve(root, "/../../../etc"))
      end)

      it("should resolve absolute and relative symlinks inside root", function()
        h.sh("mkdir -p " .. h.q(root .. "/usr/lib") .. " && ln -s /usr/lib " .. h.q(root .. "/lib")
          .. " && ln -s ../../etc " .. h.q(root .. "/usr/lib/etc"))
        assert.are.equal("/usr/lib", core.fs.resolve(root, "/lib"))
        assert.are.equal("/etc/hostname", core.fs.resolve(root, "/lib/etc/hostname"))
      end)

      it("should allow a missing last component only", function()
        assert.are.equal("/etc/new", core.fs.resolve(root, "/etc/new"))
        local v, msg, err = core.fs.resolve(root, "/nope/new")
        assert.is_nil(v)
        assert.are.equal("/nope/new: No such file or directory", msg)
        assert.are.equal(ENOENT, err)
      end)

      it("should report symlink loops", function()
        h.sh("ln -s b " .. h.q(root .. "/a") .. " && ln -s a " .. h.q(root .. "/b"))
        local v, msg, err = core.fs.resolve(root, "/a")
        assert.is_nil(v)
        assert.are.equal("/a: Too many levels of symbolic links", msg)
        assert.are.equal(ELOOP, err)
        v, _, err = core.fs.read(root, "/a")
        assert.is_nil(v)
        assert.are.equal(ELOOP, err)
      end)

      it("should raise on bad arguments", function()
        assert.has_error(function() core.fs.resolve(root) end)
        assert.has_error(function() core.fs.resolve(root, "etc") end)
      end)
    end)

    describe("root confinement", function()
      local canary

      before_each(function()
        canary = h.tree_hash(outside)
        -- An absolute link to a host dir, links to the canary, a relative escape chain.
        h.sh(table.concat({
          "ln -s /etc " .. h.q(root .. "/etc-link"),
          "ln -s " .. h.q(outside) .. " " .. h.q(root .. "/out"),
          "ln -s " .. h.q(outside .. "/canary") .. " " .. h.q(root .. "/etc/canary"),
          "mkdir -p " .. h.q(root .. "/a/b/c"),
          "ln -s ../../../../../../../../.." .. h.q(outside .. "/canary") .. " " .. h.q(root .. "/a/b/c/up"),
          "ln -s ../../../../../../../etc/hostname " .. h.q(root .. "/a/b/c/host"),
          -- Unconfined, this one lands exactly on the sibling canary.
          "ln -s ../../../../outside/canary " .. h.q(root .. "/a/b/c/sib"),
          "ln -s ../../../../../../.." .. h.q(outside) .. " " .. h.q(root .. "/a/b/c/updir"),
        }, " && "))
      end)

      after_each(function()
        assert.are.equal(canary, h.tree_hash(outside))
      end)

      it("should resolve an absolute link etc-link -> /etc to <root>/etc, not the host's", function()
        assert.are.equal("/etc", core.fs.resolve(root, "/etc-link"))
        assert.are.equal("inside\n", core.fs.read(root, "/etc-link/hostname"))
        assert.are.same({ "canary", "hostname" }, core.fs.dir(root, "/etc-link"))
        local v, _, err = core.fs.read(root, "/etc-link/passwd")
        assert.is_nil(v)
        assert.are.equal(ENOENT, err)
      end)

      it("should keep relative ../../.. chains inside root", function()
        assert.are.equal("inside\n", core.fs.read(root, "/a/b/c/host"))
        assert.are.equal("/etc/hostname", core.fs.resolve(root, "/a/b/c/host"))
        assert.are.equal("inside\n", core.fs.read(root, "/../../../../etc/hostname"))
      end)

      it("should never read the canary outside root", function()
        for _, p in ipairs { "/etc/canary", "/a/b/c/up", "/a/b/c/sib", "/out/canary", "/a/b/c/updir/canary" } do
          local v, msg, err = core.fs.read(root, p)
          assert.is_nil(v, p)
          assert.are.equal(p .. ": No such file or directory", msg)
          assert.are.equal(ENOENT, err)
          assert.is_nil(core.fs.stat(root, p))
          assert.is_nil(core.fs.copy(root, p, "/stolen"))
        end
        assert.is_nil(core.fs.dir(root, "/out"))
        assert.is_nil(core.fs.dir(root, "/a/b/c/updir"))
      end)

      it("should never write, create, remove or rename the canary outside root", function()
        for _, p in ipairs { "/etc/canary", "/a/b/c/up", "/a/b/c/sib", "/out/canary", "/a/b/c/updir/canary", "/out/new" } do
          assert.is_nil(core.fs.write_atomic(root, p, "pwned\n"), p)
          assert.is_nil(core.fs.copy(root, "/etc/hostname", p), p)
          assert.is_nil(core.fs.rename(root, "/out/canary", "/stolen"))
          assert.is_nil(core.fs.rename(root, "/etc/hostname", "/out/canary"))
          assert.is_nil(core.fs.mkdirs(root, p .. "/sub"))
        end
        for _, p in ipairs { "/out/canary", "/a/b/c/updir/canary", "/a/b/c/sib/../canary", "/etc-link/../out/canary" } do
          assert.is_nil(core.fs.remove(root, p), p)
        end
        assert.are.equal("inside\n", h.readfile(root .. "/etc/hostname"))
        assert.are.same({ "canary" }, listing(outside))
      end)

      it("should create inside root where a dangling link's target would be, when its dirs exist", function()
        -- /etc/canary -> <outside>/canary: inside root that is <root><outside>/canary.
        h.sh("mkdir -p " .. h.q(root .. outside))
        assert.is_true(core.fs.write_atomic(root, "/etc/canary", "inside root\n"))
        assert.are.equal("inside root\n", h.readfile(root .. outside .. "/canary"))
        assert.are.equal("inside root\n", core.fs.read(root, "/a/b/c/up"))
        assert.are.equal(outside .. "/canary", core.fs.resolve(root, "/a/b/c/up"))
        assert.is_true(core.fs.copy(root, "/etc/hostname", "/a/b/c/up"))
        assert.are.equal("inside\n", h.readfile(root .. outside .. "/canary"))
      end)
    end)
  end)
end

describe("_fs_force_fallback()", function()
  it("should raise without an argument", function()
    assert.has_error(function() core.fs._force_fallback() end)
  end)

  it("should be settable from the environment too", function()
    local root = h.tmpdir()
    finally(function() h.rm(root) end)
    h.writefile(root .. "/f", "x")
    h.sh("ln -s /f " .. h.q(root .. "/l"))
    local out = run_env("VFIOINIT_FS_FALLBACK=1", ("print(core.fs.read(%q, '/l'))"):format(root))
    assert.are.equal("x\n", out)
  end)
end)

local function util_pack(...) return { n = select("#", ...), ... } end

describe("core.fs.hold", function()
  it("serves a root's calls from one directory fd until the last release, and follows a root made again", function()
    local root = h.tmpdir()
    finally(function() h.rm(root) end)
    h.writefile(root .. "/a", "a\n")
    local one = assert(core.fs.hold(root))
    local two = assert(core.fs.hold(root))
    assert.are.equal("a\n", core.fs.read(root, "/a"))
    -- the root is removed and made again at the same path (a spec's fresh copy)
    h.sh("rm -rf " .. h.q(root) .. " && mkdir " .. h.q(root))
    h.writefile(root .. "/b", "b\n")
    local three = assert(core.fs.hold(root))  -- a new hold reaches the directory there now
    assert.are.equal("b\n", core.fs.read(root, "/b"))
    assert.is_nil(core.fs.read(root, "/a"))
    one:release(); two:release(); two:release()  -- a second release does nothing
    assert.are.equal("b\n", core.fs.read(root, "/b"))
    three:release()
    assert.are.equal("b\n", core.fs.read(root, "/b"))  -- held or not, the same answers
    local nothing, err, code = core.fs.hold(root .. "/missing")
    assert.is_nil(nothing)
    assert.are.equal(root .. "/missing: No such file or directory", err)
    assert.are.equal(ENOENT, code)
  end)

  it("resolves a path without symlinks as the walk does, a missing last name included", function()
    local root = h.tmpdir()
    finally(function() h.rm(root) end)
    h.sh("mkdir -p " .. h.q(root .. "/boot/efi") .. " && ln -s efi " .. h.q(root .. "/boot/esp"))
    for _, p in ipairs({ "/boot/efi", "/boot/efi/", "/boot//efi", "/boot/efi/new", "/boot/./efi/../efi",
      "/../boot", "/boot/esp/new", "/boot/none/new", "/" }) do
      local fast = util_pack(core.fs.resolve(root, p))
      core.fs._force_fallback(true)
      local walk = util_pack(core.fs.resolve(root, p))
      core.fs._force_fallback(false)
      assert.are.same(walk, fast, p)
    end
  end)
end)
