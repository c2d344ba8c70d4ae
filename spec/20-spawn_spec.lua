local core = require "vfioinit.core"
local H = require "helpers"

-- Every process currently in process group `pgid`, as {pid=, state=}.
local function group_members(pgid)
  local t = {}
  local out = H.sh("cat /proc/[0-9]*/stat 2>/dev/null")
  for line in out:gmatch("[^\n]+") do
    local pid = line:match("^(%d+) ")
    local state, pgrp = line:match("%) (%S) %d+ (%d+) ")
    if pid and tonumber(pgrp) == pgid then t[#t + 1] = { pid = tonumber(pid), state = state } end
  end
  return t
end

local function alive(members)
  local n = 0
  for _, m in ipairs(members) do if m.state ~= "Z" and m.state ~= "X" then n = n + 1 end end
  return n
end

local function open_fds()
  local out = H.sh("ls /proc/" .. H.sh("echo $PPID"):gsub("%s", "") .. "/fd | wc -l")
  return tonumber(out)
end

local busybox = H.static_busybox()
local chroot_it = H.chroot_it(it, pending)

local function collect()
  local lines = { stdout = {}, stderr = {}, all = {} }
  local function on_line(stream, line)
    table.insert(lines[stream], line)
    table.insert(lines.all, stream .. ":" .. line)
  end
  return lines, on_line
end

describe("core.spawn.run()", function()
  it("should return the exit status", function()
    local r = assert(core.spawn.run { argv = { "sh", "-c", "exit 3" } })
    assert.are.equal(3, r.status)
    assert.is_nil(r.signal)
    assert.is_false(r.timed_out)
    assert.is_true(r.seconds >= 0 and r.seconds < 5)
    r = assert(core.spawn.run { argv = { "true" } })
    assert.are.equal(0, r.status)
  end)

  it("should report the signal that killed the command", function()
    local r = assert(core.spawn.run { argv = { "sh", "-c", "kill -KILL $$" } })
    assert.is_nil(r.status)
    assert.are.equal(9, r.signal)
    assert.is_false(r.timed_out)
  end)

  it("should stream stdout and stderr lines in order per stream", function()
    local lines, on_line = collect()
    local script = "for i in 1 2 3 4 5; do echo out$i; echo err$i >&2; done"
    local r = assert(core.spawn.run { argv = { "sh", "-c", script }, on_line = on_line })
    assert.are.equal(0, r.status)
    assert.are.same({ "out1", "out2", "out3", "out4", "out5" }, lines.stdout)
    assert.are.same({ "err1", "err2", "err3", "err4", "err5" }, lines.stderr)
  end)

  it("should deliver lines as they arrive, not at exit", function()
    local function clock() return tonumber((H.sh("date +%s.%N"))) end
    local seen
    local r = assert(core.spawn.run {
      argv = { "sh", "-c", "echo first; sleep 1; echo second" },
      on_line = function(_, line)
        if line == "first" then seen = clock() end
      end,
      timeout = 10,
    })
    local done = clock()
    assert.are.equal(0, r.status)
    assert.is_true(done - seen > 0.7, tostring(done - seen))
  end)

  it("should pass on a final partial line and empty lines", function()
    local lines, on_line = collect()
    assert(core.spawn.run { argv = { "printf", "a\n\nb\nlast" }, on_line = on_line })
    assert.are.same({ "a", "", "b", "last" }, lines.stdout)
    lines, on_line = collect()
    assert(core.spawn.run { argv = { "sh", "-c", "printf 'x\\ny' >&2" }, on_line = on_line })
    assert.are.same({ "x", "y" }, lines.stderr)
  end)

  it("should handle a lot of output on both streams", function()
    local n = { stdout = 0, stderr = 0 }
    local r = assert(core.spawn.run {
      argv = { "sh", "-c", "seq 1 20000; seq 1 20000 >&2" },
      on_line = function(s, l) n[s] = n[s] + 1; assert(tonumber(l) == n[s]) end,
    })
    assert.are.equal(0, r.status)
    assert.are.same({ stdout = 20000, stderr = 20000 }, n)
  end)

  it("should give a clean default environment plus env", function()
    local lines, on_line = collect()
    assert(core.spawn.run { argv = { "env" }, on_line = on_line })
    table.sort(lines.stdout)
    assert.are.same({ "LANG=C.UTF-8", "PATH=/usr/sbin:/usr/bin:/sbin:/bin" }, lines.stdout)
    lines, on_line = collect()
    assert(core.spawn.run { argv = { "env" }, env = { "FOO=bar baz", "LANG=C" }, on_line = on_line })
    table.sort(lines.stdout)
    assert.are.same({ "FOO=bar baz", "LANG=C", "PATH=/usr/sbin:/usr/bin:/sbin:/bin" }, lines.stdout)
  end)

  it("should look argv[1] up in the command's PATH and never use a shell", function()
    local lines, on_line = collect()
    assert(core.spawn.run { argv = { "echo", "$HOME;", "`id`" }, on_line = on_line })
    assert.are.same({ "$HOME; `id`" }, lines.stdout)
    local r, err = core.spawn.run { argv = { "sh", "-c", "true" }, env = { "PATH=/nonexistent" } }
    assert.is_nil(r)
    assert.are.equal("sh: No such file or directory", err)
  end)

  it("should start in cwd", function()
    local lines, on_line = collect()
    assert(core.spawn.run { argv = { "pwd" }, cwd = "/tmp", on_line = on_line })
    assert.are.same({ "/tmp" }, lines.stdout)
    local r, err = core.spawn.run { argv = { "pwd" }, cwd = "/nonexistent-dir" }
    assert.is_nil(r)
    assert.are.equal("/nonexistent-dir: chdir: No such file or directory", err)
  end)

  it("should return nil, 'argv0: strerror', errno when exec fails", function()
    local r, err, code = core.spawn.run { argv = { "vfioinit-no-such-command", "x" } }
    assert.is_nil(r)
    assert.are.equal("vfioinit-no-such-command: No such file or directory", err)
    assert.are.equal(2, code)
    r, err = core.spawn.run { argv = { "/nonexistent/cmd" } }
    assert.is_nil(r)
    assert.are.equal("/nonexistent/cmd: No such file or directory", err)
    local dir = H.tmpdir()
    finally(function() H.rm(dir) end)
    H.writefile(dir .. "/noexec", "#!/bin/sh\n", tonumber("644", 8))
    r, err, code = core.spawn.run { argv = { dir .. "/noexec" } }
    assert.is_nil(r)
    assert.are.equal(dir .. "/noexec: Permission denied", err)
    assert.are.equal(13, code)
  end)

  it("should kill the whole process group on timeout", function()
    local pgid
    local r = assert(core.spawn.run {
      argv = { "sh", "-c", "cut -d' ' -f5 /proc/self/stat; sleep 100 & sleep 100" },
      timeout = 0.5,
      on_line = function(_, line) pgid = pgid or tonumber(line) end,
    })
    assert.is_true(r.timed_out)
    assert.are.equal(15, r.signal)
    assert.is_nil(r.status)
    assert.is_true(r.seconds >= 0.5 and r.seconds < 5, tostring(r.seconds))
    assert.is_number(pgid)
    assert.are.equal(0, alive(group_members(pgid)))
  end)

  it("should escalate to SIGKILL when SIGTERM is ignored", function()
    local pgid
    local r = assert(core.spawn.run {
      argv = { "sh", "-c", "trap '' TERM; cut -d' ' -f5 /proc/self/stat; sleep 100 & while :; do sleep 1; done" },
      timeout = 0.3,
      on_line = function(_, line) pgid = pgid or tonumber(line) end,
    })
    assert.is_true(r.timed_out)
    assert.are.equal(9, r.signal)
    assert.is_true(r.seconds >= 2 and r.seconds < 6, tostring(r.seconds))
    assert.are.equal(0, alive(group_members(pgid)))
  end)

  it("should not leave the command's group running after it exits", function()
    local pgid
    local r = assert(core.spawn.run {
      argv = { "sh", "-c", "cut -d' ' -f5 /proc/self/stat; sleep 100 >/dev/null 2>&1 & exit 0" },
      timeout = 20,
      on_line = function(_, line) pgid = pgid or tonumber(line) end,
    })
    assert.are.equal(0, r.status)
    assert.is_false(r.timed_out)
    assert.is_true(r.seconds < 5)
    assert.are.equal(0, alive(group_members(pgid)))
  end)

  it("should kill and reap the child and re-raise when on_line raises", function()
    local pgid
    local before = open_fds()
    local ok, err = pcall(core.spawn.run, {
      argv = { "sh", "-c", "cut -d' ' -f5 /proc/self/stat; echo boom; sleep 100" },
      timeout = 30,
      on_line = function(_, line)
        pgid = pgid or tonumber(line)
        if line == "boom" then error({ code = 42 }) end
      end,
    })
    assert.is_false(ok)
    assert.are.same({ code = 42 }, err)
    assert.are.equal(0, alive(group_members(pgid)))
    for _, m in ipairs(group_members(pgid)) do
      assert.are_not.equal(pgid, m.pid) -- the child itself was reaped: not even a zombie
    end
    assert.are.equal(before, open_fds())
    ok, err = pcall(core.spawn.run, { argv = { "echo", "x" }, on_line = function() error("oops") end })
    assert.is_false(ok)
    assert.matches("oops", err)
  end)

  it("should not leak descriptors", function()
    local before = open_fds()
    for _ = 1, 20 do
      assert(core.spawn.run { argv = { "sh", "-c", "echo a; echo b >&2" }, on_line = function() end })
      assert.is_nil(core.spawn.run { argv = { "vfioinit-no-such-command" } })
    end
    assert(core.spawn.run { argv = { "sleep", "10" }, timeout = 0.1 })
    assert.are.equal(before, open_fds())
  end)

  it("should give the command /dev/null as stdin and no stray descriptors", function()
    local lines, on_line = collect()
    local f = assert(io.open("/dev/null")) -- opened without CLOEXEC by stdio
    finally(function() f:close() end)
    assert(core.spawn.run { argv = { "sh", "-c", "cat; ls /proc/self/fd" }, on_line = on_line })
    table.sort(lines.stdout)
    -- ls's own directory fd shows as 3
    assert.are.same({ "0", "1", "2", "3" }, lines.stdout)
  end)

  it("should raise on bad arguments", function()
    assert.has_error(function() core.spawn.run() end)
    assert.has_error(function() core.spawn.run("ls") end)
    assert.has_error(function() core.spawn.run {} end)
    assert.has_error(function() core.spawn.run { argv = {} } end)
    assert.has_error(function() core.spawn.run { argv = { 1 } } end)
    assert.has_error(function() core.spawn.run { argv = { "a\0b" } } end)
    assert.has_error(function() core.spawn.run { argv = { "true" }, timeout = "1" } end)
    assert.has_error(function() core.spawn.run { argv = { "true" }, timeout = 0 } end)
    assert.has_error(function() core.spawn.run { argv = { "true" }, timeout = 0 / 0 } end)
    assert.has_error(function() core.spawn.run { argv = { "true" }, on_line = "x" } end)
    assert.has_error(function() core.spawn.run { argv = { "true" }, env = { "NOEQUALS" } } end)
    assert.has_error(function() core.spawn.run { argv = { "true" }, env = "A=B" } end)
    assert.has_error(function() core.spawn.run { argv = { "true" }, root = 1 } end)
    assert.has_error(function() core.spawn.run { argv = { "true" }, cwd = {} } end)
  end)

  describe("with root", function()
    local root
    before_each(function()
      root = H.tmpdir()
      H.sh("mkdir -p " .. H.q(root .. "/bin") .. " && cp " .. H.q(busybox or "/bin/true") .. " " .. H.q(root .. "/bin/busybox"))
      for _, app in ipairs { "sh", "cat", "ls", "sleep", "echo", "pwd", "head", "true" } do
        H.sh("ln -s busybox " .. H.q(root .. "/bin/" .. app))
      end
      H.writefile(root .. "/etc/marker", "inside the root\n")
    end)
    after_each(function()
      local mounted = H.sh("grep -F " .. H.q(root) .. " /proc/self/mountinfo")
      if mounted == "" then H.rm(root) end -- never rm -rf through a bind-mounted /dev
      assert.are.equal("", mounted)
    end)

    local function mounted_under(dir)
      return H.sh("grep -F " .. H.q(dir) .. " /proc/self/mountinfo")
    end

    chroot_it("should chroot, with /proc, /sys and /dev mounted inside", function()
      local lines, on_line = collect()
      local r = assert(core.spawn.run {
        argv = { "sh", "-c", "cat /etc/marker; cat /proc/self/status | head -1; ls /sys | head -1 >/dev/null && echo sys; ls /dev/null; pwd" },
        root = root, on_line = on_line, timeout = 20,
      })
      assert.are.equal(0, r.status, table.concat(lines.all, "\n"))
      assert.are.same({ "inside the root", "Name:\tcat", "sys", "/dev/null", "/" }, lines.stdout)
      assert.are.equal("", mounted_under(root))
      -- the mount points were created and are left empty
      assert.are.equal("", H.sh("ls -A " .. H.q(root .. "/proc")))
    end)

    chroot_it("should leave nothing mounted after a timeout", function()
      local r = assert(core.spawn.run {
        argv = { "sh", "-c", "sleep 100 & sleep 100" }, root = root, timeout = 0.5,
      })
      assert.is_true(r.timed_out)
      assert.are.equal("", mounted_under(root))
    end)

    chroot_it("should report a command missing inside root", function()
      local r, err = core.spawn.run { argv = { "mkinitcpio", "-P" }, root = root }
      assert.is_nil(r)
      assert.are.equal("mkinitcpio: No such file or directory", err)
      assert.are.equal("", mounted_under(root))
    end)

    chroot_it("should start in cwd inside root", function()
      H.sh("mkdir -p " .. H.q(root .. "/work"))
      local lines, on_line = collect()
      assert(core.spawn.run { argv = { "pwd" }, root = root, cwd = "/work", on_line = on_line })
      assert.are.same({ "/work" }, lines.stdout)
    end)

    chroot_it("should refuse a mount point that is not a directory", function()
      H.sh("ln -s / " .. H.q(root .. "/proc"))
      local r, err = core.spawn.run { argv = { "true" }, root = root }
      assert.is_nil(r)
      assert.are.equal(root .. "/proc: Not a directory", err)
      assert.are.equal("", mounted_under(root))
    end)

    chroot_it("should bind `bind.source` on `bind.target` inside root, root itself included, and unmount it", function()
      H.sh("mkdir -p " .. H.q(root .. "/sysroot"))
      local lines, on_line = collect()
      -- the source holds root (an ostree sysroot bound on its deployment's /sysroot): not recursive
      local r = assert(core.spawn.run { argv = { "cat", "/sysroot/etc/marker" }, root = root, on_line = on_line,
        bind = { source = root, target = "/sysroot" } })
      assert.are.equal(0, r.status, table.concat(lines.all, "\n"))
      assert.are.same({ "inside the root" }, lines.stdout)
      assert.are.equal("", mounted_under(root))
      -- a target that is no directory of root is an error, nothing mounted
      H.sh("ln -s / " .. H.q(root .. "/link"))
      local r2, err = core.spawn.run { argv = { "true" }, root = root, bind = { source = root, target = "/link" } }
      assert.is_nil(r2)
      assert.are.equal(("spawn: bind-mount %s on %s/link: Not a directory"):format(root, root), err)
      assert.are.equal("", mounted_under(root))
      assert.has_error(function() core.spawn.run { argv = { "true" }, bind = { source = root, target = "/x" } } end)
      assert.has_error(function() core.spawn.run { argv = { "true" }, root = root, bind = { source = root, target = "/../x" } } end)
    end)

    it("should fail cleanly for a root that does not exist", function()
      local r, err = core.spawn.run { argv = { "true" }, root = root .. "/missing" }
      assert.is_nil(r)
      assert.is_string(err)
      assert.are.equal("", mounted_under(root))
    end)
  end)
end)
