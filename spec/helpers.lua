-- Shared spec helpers: temp roots, file I/O outside the code under test, shell oracles.
local M = {}

M.project = os.getenv("PWD")
-- Generator config corpus carried in the repository (spec/fixtures/corpus, origins in its README).
M.corpus = M.project .. "/spec/fixtures/corpus"
-- The interpreter child processes run under (tools/matrix sets it to luajit, lua5.1, ...).
M.lua = os.getenv("VFIOINIT_LUA_CMD") or "lua5.4"

-- Run a shell command, return its stdout (trailing newline kept), success flag, exit code.
-- On Lua 5.1/LuaJIT a pipe's close() has no exit status: the shell appends it after a NUL.
local LUA51 = _VERSION == "Lua 5.1"
function M.sh(cmd)
  if LUA51 then
    local p = assert(io.popen("( " .. cmd .. "\n); printf '\\000%d' $?", "r"))
    local all = p:read("*a"); p:close()
    local out, code = all:match("^(.*)%z(%d+)$")
    code = tonumber(code)
    return out, code == 0 or nil, code
  end
  local p = assert(io.popen(cmd, "r"))
  local out = p:read("*a")
  local ok, _, code = p:close()
  return out, ok, code
end

function M.q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

-- The VFIO module files the proofs look for in a generator's own listing of an image.
M.VFIO_KO = { "vfio.ko", "vfio_iommu_type1.ko", "vfio-pci.ko", "vfio_virqfd.ko" }

-- Which of M.VFIO_KO of kver a lister's output (lsinitramfs, lsinitrd, lsinitcpio) names,
-- space-separated in M.VFIO_KO's order; any compression suffix, any path prefix (usr/).
function M.vfio_listed(listing, kver)
  local got = {}
  local dir = ("lib/modules/" .. kver .. "/kernel/drivers/vfio/"):gsub("%p", "%%%0")
  for _, ko in ipairs(M.VFIO_KO) do
    local pat = dir .. "[%w_/-]*/?" .. ko:gsub("%p", "%%%0") .. "[%.%w]*%f[^%w%.]"
    if listing:find(pat) then got[#got + 1] = ko end
  end
  return table.concat(got, " ")
end

function M.tmpdir()
  local out = M.sh("mktemp -d /tmp/vfioinit-spec.XXXXXX")
  return (out:gsub("%s+$", ""))
end

function M.rm(path) M.sh("rm -rf " .. M.q(path)) end

function M.readfile(path)
  local f = io.open(path, "rb"); if not f then return nil end
  local s = f:read("*a"); f:close(); return s
end

-- Write a file under a host path, creating parent dirs.
function M.writefile(path, content, mode)
  M.sh("mkdir -p " .. M.q(path:match("^(.*)/[^/]*$")))
  local f = assert(io.open(path, "wb")); f:write(content); f:close()
  if mode then M.sh(("chmod %o %s"):format(mode, M.q(path))) end
end

function M.copy_corpus(rel, root, dest)
  M.writefile(root .. dest, (assert(M.readfile(M.corpus .. "/" .. rel), rel)))
end

-- A hash of every file's path, mode, mtime and content under dir: equal before/after means nothing changed.
function M.tree_hash(dir)
  return (M.sh("cd " .. M.q(dir) .. " && find . -printf '%p %m %T@ %s\\n' | sort && find . -type f -print0 | sort -z | xargs -0 -r sha256sum"))
end

-- bash as the oracle: source files in order and print an array's elements one per line.
function M.bash_array(files, var)
  local src = {}
  for _, f in ipairs(files) do src[#src + 1] = "source " .. M.q(f) end
  local script = table.concat(src, "; ") .. ("; for x in \"${%s[@]}\"; do printf '%%s\\n' \"$x\"; done"):format(var)
  local out, ok = M.sh("bash -c " .. M.q(script) .. " 2>&1")
  assert(ok, out)
  local t = {}
  for l in out:gmatch("([^\n]*)\n") do t[#t + 1] = l end
  return t
end

-- Where the real Debian kernel fixtures live (downloaded and unpacked by tools/fetch-kernel).
function M.cache_dir()
  return os.getenv("VFIOINIT_CACHE") or (os.getenv("HOME") .. "/.cache/vfioinit")
end

-- The unpacked real Debian kernel package (tools/fetch-kernel): dir, kver.
local kernels = {}
function M.real_kernel(flavour)
  flavour = flavour or "cloud"
  if kernels[flavour] then return kernels[flavour][1], kernels[flavour][2] end
  local out, ok = M.sh("tools/fetch-kernel " .. (flavour or "cloud") .. " 2>/dev/null")
  assert(ok, "tools/fetch-kernel failed (needs apt-get update and network to Debian's mirror)")
  local dir = out:gsub("%s+$", ""):match("[^\n]+$")
  local kver = M.sh("ls " .. M.q(dir .. "/lib/modules")):gsub("%s+$", "")
  kernels[flavour] = { dir, kver }
  return dir, kver
end

-- Put a kernel module tree into root: a full copy (hard links) of the real kernel,
-- optionally transformed by fn(moddir) before depmod regenerates the indexes.
function M.install_kernel(root, flavour, kver_as, fn)
  local dir, kver = M.real_kernel(flavour)
  kver_as = kver_as or kver
  local dest = root .. "/lib/modules/" .. kver_as
  M.sh("mkdir -p " .. M.q(root .. "/lib/modules") .. " && cp -al " .. M.q(dir .. "/lib/modules/" .. kver) .. " " .. M.q(dest)
    .. " 2>/dev/null || cp -a " .. M.q(dir .. "/lib/modules/" .. kver) .. " " .. M.q(dest))
  -- the cached tree carries depmod's indexes already; a transformed one needs new ones
  if fn or kver_as ~= kver then
    if fn then fn(dest) end
    local out, ok = M.sh("depmod -b " .. M.q(root) .. " " .. M.q(kver_as) .. " 2>&1")
    assert(ok, out)
  end
  return kver_as, dest
end

-- The generator of the booster stand-in (spec/fixtures/standin-booster, booster's real
-- command line): one command per kernel, image /boot/booster-KVER.img. Returns it and image_of.
function M.standin_booster()
  local function image_of(kver) return "/boot/booster-" .. kver .. ".img" end
  return {
    name = "booster",
    command = "booster",
    image_path = function(_, kver) return image_of(kver) end,
    rebuild_argv = function(_, kvers)
      local cmds = {}
      for _, k in ipairs(kvers) do
        cmds[#cmds + 1] = { argv = { "booster", "build", "--force", "--kernel-version", k, image_of(k) }, kernels = { k } }
      end
      return cmds
    end,
  }, image_of
end

-- (pgrep runs without the ASan preload of tools/test: procps deadlocks under it.)
-- Every pid whose command line contains `token` ("[v]..." so the shell running pgrep,
-- whose own command line holds the pattern, does not match it).
function M.pids_of(token)
  local out = M.sh("env -u LD_PRELOAD pgrep -f " .. M.q("[" .. token:sub(1, 1) .. "]" .. token:sub(2)))
  local t = {}
  for p in out:gmatch("%d+") do t[#t + 1] = p end
  return t
end

-- Poll fn every 0.1 s for up to `secs` seconds; its last answer.
function M.wait_until(fn, secs)
  for _ = 1, secs * 10 do
    if fn() then return true end
    M.sh("sleep 0.1")
  end
  return fn()
end

-- After a spec that ran a vfioinit driver (pid) whose commands carry `token`: kill only those
-- processes, by id, wait for the root's mounts to go, then remove the root.
function M.end_driver(token, driver_pid, root)
  for _, p in ipairs(M.pids_of(token)) do M.sh("kill -9 " .. p .. " 2>/dev/null") end
  if driver_pid then M.sh("kill -9 " .. driver_pid .. " 2>/dev/null") end
  local function unmounted() return M.sh("grep -F " .. M.q(root) .. " /proc/self/mountinfo") == "" end
  M.wait_until(unmounted, 5)
  if unmounted() then M.rm(root) end
end

-- Specs that stand in for a generator's command replace core.spawn.run; rebuild.lua starts
-- commands with core.spawn.start and core.spawn.wait. This makes start call core.spawn.run
-- as it is at that time (the stub), the command ending before start returns. Returns the
-- function that puts the real start and wait back.
function M.start_via_run(core)
  local start, wait = core.spawn.start, core.spawn.wait
  core.spawn.start = function(o)
    local res, err, code = core.spawn.run(o)
    if not res then return nil, err, code end
    return { done = function() return true end, result = function() return res end, close = function() end }
  end
  core.spawn.wait = function() return true end
  return function() core.spawn.start, core.spawn.wait = start, wait end
end

-- A statically linked busybox (to populate a tiny chroot with), or nil.
function M.static_busybox()
  for _, p in ipairs({ "/bin/busybox", "/usr/bin/busybox" }) do
    if M.readfile(p) then
      local out = M.sh("ldd " .. M.q(p) .. " 2>&1")
      if out:find("not a dynamic", 1, true) or out:find("statically linked", 1, true) then return p end
    end
  end
end

-- `it` for cases that chroot into a busybox root: pending (not skipped) without root or busybox.
function M.chroot_it(it_fn, pending_fn)
  local is_root = M.sh("id -u"):match("^0") ~= nil
  if is_root and M.static_busybox() then return it_fn end
  return function(name)
    pending_fn(name .. " (needs root and a static busybox: apt-get install busybox-static)")
  end
end

-- A synthetic root: os-release, plus files {path=content} and executables {path}.
function M.make_root(spec)
  local root = M.tmpdir()
  if spec.os then
    local lines = {}
    for k, v in pairs(spec.os) do lines[#lines + 1] = k .. "=" .. v end
    table.sort(lines)
    M.writefile(root .. "/etc/os-release", table.concat(lines, "\n") .. "\n")
  end
  for path, content in pairs(spec.files or {}) do M.writefile(root .. path, content) end
  for _, path in ipairs(spec.exec or {}) do M.writefile(root .. path, "#!/bin/sh\nexit 0\n", 493) end
  for path, rel in pairs(spec.corpus or {}) do M.copy_corpus(rel, root, path) end
  return root
end

-- booster_image(root, kver, image [, modprobe]): what a stand-in `booster build` writes: a
-- real newc image at root..image with kver's VFIO modules (usr/lib/modules) named in
-- booster.init.yaml, and with `modprobe` root's /etc/modprobe.d as generators copy it.
function M.booster_image(root, kver, image, modprobe)
  local d = M.tmpdir()
  local vdir = "/lib/modules/" .. kver .. "/kernel/drivers/vfio"
  M.sh(("mkdir -p %s && cp -r %s %s"):format(M.q(d .. "/usr" .. vdir:match("^(.*)/vfio$")), M.q(root .. vdir), M.q(d .. "/usr" .. vdir)))
  local list = {}
  for name in M.sh("find " .. M.q(root .. vdir) .. " -name '*.ko*'"):gmatch("([^/\n]+)%.ko[^\n]*") do list[#list + 1] = "- " .. name .. "\n" end
  M.writefile(d .. "/etc/booster.init.yaml", "modulesforceload:\n" .. table.concat(list))
  if modprobe then M.sh(("[ -d %s ] && cp -r %s %s"):format(M.q(root .. "/etc/modprobe.d"), M.q(root .. "/etc/modprobe.d"), M.q(d .. "/etc/"))) end
  local _, ok = M.sh(("cd %s && find . | cpio -o -H newc --quiet > %s"):format(M.q(d), M.q(root .. image)))
  M.rm(d)
  assert(ok, "stand-in booster: cpio failed")
end

-- All four generators installed (corpus configs, stub commands), none active by hook.
function M.all_root()
  return M.make_root({ os = { ID = "gentoo" },
    corpus = { ["/etc/mkinitcpio.conf"] = "mkinitcpio/mkinitcpio.conf",
               ["/etc/dracut.conf"] = "dracut/dracut.conf",
               ["/etc/initramfs-tools/modules"] = "initramfs-tools/modules",
               ["/etc/booster.yaml"] = "booster/booster.yaml" },
    exec = { "/usr/bin/mkinitcpio", "/usr/bin/dracut", "/usr/sbin/update-initramfs", "/usr/bin/booster" } })
end

-- The CLI as users run it (bin/vfioinit; under VFIOINIT_LUA_CMD's interpreter in the matrix).
M.BIN = (os.getenv("VFIOINIT_LUA_CMD") and M.lua .. " " or "") .. M.project .. "/bin/vfioinit"

-- cli(args [, env]) -> exit code, stdout, stderr. args: shell words, already quoted.
function M.cli(args, env)
  local errf = os.tmpname()
  local out, _, code = M.sh((env and env .. " " or "") .. M.BIN .. " " .. args .. " 2>" .. M.q(errf))
  local err = M.readfile(errf) or ""
  os.remove(errf)
  return code, out, err
end

-- python3 (strict: the bytes must be UTF-8, the text exactly one JSON value) evaluates `expr`
-- over `d`; fails the spec when the text is not that.
function M.pyjson(text, expr)
  local f = os.tmpname()
  M.writefile(f, text)
  local out, ok = M.sh("python3 -c " .. M.q("import json,sys; d=json.loads(open(sys.argv[1],'rb').read().decode('utf-8')); "
    .. "print(" .. expr .. ")") .. " " .. M.q(f) .. " 2>&1")
  os.remove(f)
  assert(ok, out .. "\n--- the text was:\n" .. text)
  return (out:gsub("\n$", ""))
end

-- clone_real(flavour) -> root, kver, dir, cleanup: a throwaway copy (tools/clone-root) of
-- tools/mkroot's cached root of flavour (built first when needed) as dir/root, its one
-- kernel, and the function that removes both (for `finally`).
function M.clone_real(flavour)
  local function plain(cmd) return M.sh("env -u LD_PRELOAD " .. cmd) end
  local out, ok = plain("tools/mkroot " .. flavour .. " 2>&1")
  assert(ok, out)
  local dir = M.tmpdir()
  local root = dir .. "/root"
  out, ok = plain("tools/clone-root " .. flavour .. " " .. M.q(root) .. " 2>&1")
  assert(ok, out)
  local function cleanup() plain("tools/clone-root --remove " .. M.q(root) .. " >/dev/null 2>&1"); M.rm(dir) end
  return root, (M.sh("ls " .. M.q(root .. "/lib/modules")):gsub("%s+$", "")), dir, cleanup
end


-- A tool that is not vfioinit, without the sanitizer runtime tools/test preloads.
function M.sh_plain(cmd) return M.sh("env -u LD_PRELOAD " .. cmd) end

-- A command chrooted into root (tools/lib-chroot.sh), its output; fails the spec on error.
function M.in_root(root, cmd)
  local out, ok = M.sh_plain(("bash -c %s 2>&1"):format(M.q(("PROG=spec; . tools/lib-chroot.sh; chroot_run %s %s")
    :format(M.q(root), cmd))))
  assert(ok, cmd .. " failed:\n" .. out)
  return out
end

-- /etc/default/grub of a VM's user, from the package's template in the mounted root `mnt`: no
-- menu delay, GRUB and the kernel on the serial console, GRUB_CMDLINE_LINUX_DEFAULT =
-- `cmdline`, and the root device as the guest sees it (update-grub runs on a loop device,
-- which 10_linux will not name: "We can't cope with devices loop-mounted from files").
function M.grub_user_config(mnt, cmdline)
  local template = assert(M.readfile(mnt .. "/usr/share/grub/default/grub"))
  local text = template:gsub("\nGRUB_TIMEOUT=[^\n]*", "\nGRUB_TIMEOUT=0")
    :gsub("\nGRUB_CMDLINE_LINUX_DEFAULT=[^\n]*", '\nGRUB_CMDLINE_LINUX_DEFAULT="' .. cmdline .. '"')
  text = text .. 'GRUB_TERMINAL="serial console"\nGRUB_SERIAL_COMMAND="serial --unit=0 --speed=115200"\n'
    .. "GRUB_DEVICE=/dev/vda1\n"
  M.writefile(mnt .. "/etc/default/grub", text)
end

return M
