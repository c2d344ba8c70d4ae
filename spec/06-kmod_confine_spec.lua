-- Reads stay inside root, and only regular files are opened (issue item 7): libkmod's
-- indexes and modprobe.d files are read through the root-confined fs layer (src/kmod.c
-- gives libkmod a private copy), and a FIFO at a modprobe.d file, an index or an image is
-- an error naming it instead of a hang. Real libkmod on the real Debian kernel tree of
-- tools/fetch-kernel (spec/helpers.lua install_kernel).
local h = require "helpers"
local vfioinit = require "vfioinit"

local q = h.q
local BIN = (os.getenv("VFIOINIT_LUA_CMD") and h.lua .. " " or "") .. h.project .. "/bin/vfioinit"

local function by_name(list)
  local t = {}
  for _, m in ipairs(list) do t[m.name] = m end
  return t
end

-- An Arch root (mkinitcpio active) with the real cloud kernel: root, kver.
local function arch_root()
  local r = h.make_root({ os = { ID = "arch" }, corpus = { ["/etc/mkinitcpio.conf"] = "mkinitcpio/mkinitcpio.conf" },
    exec = { "/usr/bin/mkinitcpio", "/usr/lib/kernel/install.d/50-mkinitcpio.install" } })
  local kver = h.install_kernel(r, "cloud")
  -- the stub generator is a #!/bin/sh script: without a shell in root, rebuild stops at the
  -- missing interpreter before it reaches the image this spec puts a FIFO at
  local bb = h.static_busybox()
  if bb then h.sh("mkdir -p " .. h.q(r .. "/bin") .. " && cp " .. h.q(bb) .. " " .. h.q(r .. "/bin/sh")) end
  return r, kver
end

-- Replace a (possibly hard-linked) file of root by a FIFO.
local function fifo_at(path)
  local out, ok = h.sh("mkdir -p " .. q(path:match("^(.*)/")) .. " && rm -f " .. q(path) .. " && mkfifo " .. q(path) .. " 2>&1")
  assert(ok, out)
end

-- Run the CLI under `timeout 20`: exit code (124 = it hung), stdout .. stderr.
local function run_bounded(root, cmd)
  local errf = os.tmpname()
  local out, _, code = h.sh("timeout 20 " .. BIN .. " --root " .. q(root) .. " " .. cmd .. " 2>" .. q(errf))
  local err = h.readfile(errf) or ""
  os.remove(errf)
  return code, out .. err
end

local function escape(s) return (s:gsub("%p", "%%%0")) end

describe("a FIFO inside root", function()
  local base, kver
  setup(function() base, kver = arch_root() end)
  teardown(function() h.rm(base) end)

  -- Run cmd on a copy of the base root with a FIFO at the path rel(kver) gives; it must not
  -- hang. Returns its output, the path, and whether the root is as it was.
  local function with_fifo(rel, cmd)
    local r = h.tmpdir()
    finally(function() h.rm(r) end)
    h.sh("cp -a " .. q(base) .. "/. " .. q(r))
    local path = rel(kver)
    fifo_at(r .. path)
    local before = h.tree_hash(r)
    local code, out = run_bounded(r, cmd)
    assert.are_not.equal(124, code, cmd .. " hung on the FIFO " .. path)
    return out, path, before == h.tree_hash(r)
  end

  -- commands: those that read the file (each must name it); unread: those that need not
  -- read it (verify asks depmod's text lists, not libkmod's indexes or modprobe.d), which
  -- must finish all the same
  local function case(label, rel, commands, unread)
    for _, cmd in ipairs(unread or {}) do
      it(("at %s: %s, which does not read it, finishes"):format(label, cmd), function()
        local out, path, same = with_fifo(rel, cmd)
        assert.is_nil(out:find(path, 1, true), out)
        if cmd ~= "apply" then assert.is_true(same) end  -- apply writes its changes
      end)
    end
    for _, cmd in ipairs(commands) do
      it(("at %s: %s finishes and names it"):format(label, cmd), function()
        local out, path, same = with_fifo(rel, cmd)
        assert.truthy(out:find(path .. ": not a regular file (fifo)", 1, true), out)
        if cmd ~= "apply" or not path:find("^/boot/") then
          -- nothing was written: the FIFO stopped the run before any change
          assert.is_true(same)
        end
      end)
    end
  end

  -- libkmod (which reads modprobe.d and the binary indexes) answers status's module paths;
  -- the drivers of --ids (modprobe.d's aliases, modules.alias, modules.builtin.modinfo) and
  -- how a kernel has a module, depmod's text lists answer
  local IDS = "--ids 1af4:1000 "
  case("a modprobe.d file", function() return "/etc/modprobe.d/local.conf" end,
    { "status", IDS .. "plan", IDS .. "apply" }, { "plan", "apply", "verify" })
  case("modules.alias.bin", function(k) return "/lib/modules/" .. k .. "/modules.alias.bin" end,
    { "status" }, { "plan", "apply", "verify", IDS .. "plan" })
  case("modules.alias", function(k) return "/lib/modules/" .. k .. "/modules.alias" end,
    { IDS .. "plan", IDS .. "apply" }, { "plan", "verify" })
  -- the built-in modules' aliases are read only for a modalias no other source answers (as
  -- libkmod's lookup): modules.alias answers 1af4:1000 here (spec/25 has the other case)
  case("modules.builtin.modinfo", function(k) return "/lib/modules/" .. k .. "/modules.builtin.modinfo" end,
    {}, { "plan", "verify", IDS .. "plan" })
  case("modules.dep.bin", function(k) return "/lib/modules/" .. k .. "/modules.dep.bin" end, { "status" }, { "plan" })
  case("modules.dep", function(k) return "/lib/modules/" .. k .. "/modules.dep" end, { "plan", "apply", "verify" })
  -- plan does not read images; status, verify and apply do
  case("the image", function(k) return "/boot/initramfs-" .. k .. ".img" end, { "status", "verify", "apply" })

  it("at the image: plan still finishes", function()
    local r = h.tmpdir()
    finally(function() h.rm(r) end)
    h.sh("cp -a " .. q(base) .. "/. " .. q(r))
    fifo_at(r .. "/boot/initramfs-" .. kver .. ".img")
    local code = run_bounded(r, "plan")
    assert.are.equal(2, code)
  end)
end)

describe("libkmod's reads", function()
  local r, kver, host
  before_each(function()
    r, kver = arch_root()
    -- a tree outside root whose indexes say vfio is built in (and list no vfio.ko)
    host = h.tmpdir()
    h.install_kernel(host, "cloud", kver, function(dir)
      h.sh("rm -f " .. q(dir) .. "/kernel/drivers/vfio/vfio.ko")
      local b = h.readfile(dir .. "/modules.builtin")
      h.sh("rm -f " .. q(dir .. "/modules.builtin"))
      h.writefile(dir .. "/modules.builtin", b .. "kernel/drivers/vfio/vfio.ko\n")
    end)
    assert.are.equal("builtin", by_name(assert(vfioinit.modules({ root = host, kernel = kver }))).vfio.state)
  end)
  after_each(function() h.rm(r); h.rm(host) end)

  local INDEXES = { "modules.dep.bin", "modules.builtin.bin", "modules.alias.bin", "modules.builtin.alias.bin" }

  -- Point root's indexes at the host tree with `target(name)` links; the same path read
  -- inside root holds root's own (real) indexes.
  local function link_indexes(target, inroot_dir)
    local moddir = r .. "/lib/modules/" .. kver
    h.sh("mkdir -p " .. q(inroot_dir))
    for _, n in ipairs(INDEXES) do
      h.sh("cp " .. q(moddir .. "/" .. n) .. " " .. q(inroot_dir .. "/" .. n) .. " && rm -f " .. q(moddir .. "/" .. n)
        .. " && ln -s " .. q(target(n)) .. " " .. q(moddir .. "/" .. n))
    end
  end

  it("follow an absolute index symlink inside root, never to the host's index", function()
    local hostdir = host .. "/lib/modules/" .. kver
    link_indexes(function(n) return hostdir .. "/" .. n end, r .. hostdir)
    local m = by_name(assert(vfioinit.modules({ root = r, kernel = kver })))
    assert.are.equal("module", m.vfio.state)
    assert.truthy(m.vfio.path:match("^/lib/modules/" .. escape(kver) .. "/kernel/drivers/vfio/vfio%.ko$"), m.vfio.path)
    local code, out = run_bounded(r, "status")
    assert.are.equal(0, code, out)
    assert.truthy(out:find("vfio=module", 1, true), out)
  end)

  it("stop a ../../.. index symlink at root", function()
    local hostdir = host .. "/lib/modules/" .. kver
    -- from <root>/lib/modules/<kver>, 12 levels up is the host's / (on the host)
    link_indexes(function(n) return ("../"):rep(12) .. hostdir:sub(2) .. "/" .. n end, r .. hostdir)
    local m = by_name(assert(vfioinit.modules({ root = r, kernel = kver })))
    assert.are.equal("module", m.vfio.state)
    assert.are.equal("module", m.vfio_pci.state)
  end)

  it("never read a host modprobe.d file an absolute symlink names", function()
    local hostconf = host .. "/evil.conf"
    h.writefile(hostconf, "alias pci:v0000ABCDd00001234* virtio_net\n")
    -- the same path inside root says something else: that is what counts
    h.writefile(r .. hostconf, "alias pci:v0000ABCDd00001234* virtio_blk\n")
    h.sh("mkdir -p " .. q(r .. "/etc/modprobe.d") .. " && ln -s " .. q(hostconf) .. " " .. q(r .. "/etc/modprobe.d/evil.conf"))
    -- and a plain file of root's own is read as before
    h.writefile(r .. "/usr/lib/modprobe.d/own.conf", "alias pci:v0000ABCDd00005678* virtio_net\n")
    local d = assert(vfioinit.drivers_for({ root = r, kernel = kver, ids = { "abcd:1234", "abcd:5678" } }))
    assert.are.same({ "virtio_blk" }, d[1].modules)
    assert.are.same({ "virtio_net" }, d[2].modules)
  end)

  it("leave no private copy behind in TMPDIR", function()
    local tmp = h.tmpdir()
    finally(function() h.rm(tmp) end)
    local script = ([[
package.path = "./lua/?.lua;./lua/?/init.lua;" .. package.path
package.cpath = "./%s/?.so;" .. package.cpath
local v = require "vfioinit"
local m = assert(v.modules({ root = %q, kernel = %q }))
assert(v.drivers_for({ root = %q, kernel = %q, ids = { "1af4:1000" } }))
local core = require "vfioinit.core"
local c = assert(core.kmod.new(%q, %q)); c = nil
collectgarbage(); collectgarbage()
print(#m)]]):format(os.getenv("VFIOINIT_BUILD") or "build", r, kver, r, kver, r, "/lib/modules/" .. kver)
    h.writefile(tmp .. "/s.lua", script)
    h.sh("mkdir -p " .. q(tmp .. "/t"))
    local out, ok = h.sh("cd " .. q(h.project) .. " && TMPDIR=" .. q(tmp .. "/t") .. " " .. h.lua .. " " .. q(tmp .. "/s.lua") .. " 2>&1")
    assert.is_true(ok, out)
    assert.are.equal("4\n", out)
    assert.are.equal("", (h.sh("ls -A " .. q(tmp .. "/t"))))
  end)

  it("are never made by libkmod itself inside root (strace)", function()
    if not h.sh("command -v strace") :find("strace") then
      pending("strace is not installed")
      return
    end
    local log = os.tmpname()
    finally(function() os.remove(log) end)
    local _, ok = h.sh("strace -f -e trace=open,openat,stat,newfstatat -o " .. q(log) .. " " .. BIN .. " --root " .. q(r)
      .. " --ids 1af4:1000 status >/dev/null 2>&1")
    assert.is_true(ok)
    local trace = assert(h.readfile(log))
    -- every index is a plain file: libkmod reads root's own through the dirs vfioinit opened
    -- inside root (/proc/self/fd/N), no private copy is made
    assert.truthy(trace:find('"/proc/self/fd/%d+/modules%.dep%.bin"'), "libkmod did not read through /proc/self/fd")
    assert.is_nil(trace:find("/vfioinit-kmod.", 1, true), "a private copy was made")
    -- libkmod opens by absolute host path; the confined layer opens relative to root's fd
    assert.is_nil(trace:find('"' .. r .. "/lib/modules", 1, true), "a host path into root's module tree was used")
    assert.is_nil(trace:find('"' .. r .. "/etc/modprobe.d", 1, true), "a host path into root's modprobe.d was used")
  end)
end)
