-- The stages pass values over one run that reads each fact once (issue 24 item 3): a no-op
-- `apply` on a one-kernel mkinitcpio root (Arch's linux.preset, the real Debian kernel's
-- module tree, an image that carries the VFIO modules) reads no file more than twice, and,
-- when strace is there, makes at most 150 file syscalls (issue 24's target 180; 143 measured) beyond loading the module
-- (bench/syscalls; docs/MAINTAINERS.md "File syscalls of a no-op apply").
-- The reads are counted by wrapping core.fs.read, which every read of root goes through
-- (the context's read function too); the image is built here, the way mkinitcpio lays one
-- out, with bash reading root's mkinitcpio.conf as mkinitcpio's build does.
local h = require "helpers"
local core = require "vfioinit.core"
local vfioinit = require "vfioinit"

-- mkinitcpio's preset template as Arch's linux package installs it (pkgbase "linux")
local PRESET = [[
# mkinitcpio preset file for the 'linux' package

#ALL_config="/etc/mkinitcpio.conf"
ALL_kver="/boot/vmlinuz-linux"

PRESETS=('default' 'fallback')

#default_config="/etc/mkinitcpio.conf"
default_image="/boot/initramfs-linux.img"
#default_uki="/efi/EFI/Linux/arch-linux.efi"
#default_options="--splash /usr/share/systemd/bootctl/splash-arch.bmp"

#fallback_config="/etc/mkinitcpio.conf"
fallback_image="/boot/initramfs-linux-fallback.img"
#fallback_uki="/efi/EFI/Linux/arch-linux-fallback.efi"
fallback_options="-S autodetect"
]]

-- What `mkinitcpio -p linux` puts in the image that verify looks at: the kernel's VFIO
-- modules and /config, the build's MODULES as mkinitcpio writes it, and root's
-- /etc/modprobe.d (the modconf hook).
local function build_image(root, kver)
  local d = h.tmpdir()
  local vdir = "/lib/modules/" .. kver .. "/kernel/drivers/vfio"
  local out, ok = h.sh(("mkdir -p %s && cp -r %s %s"):format(h.q(d .. "/usr" .. vdir:match("^(.*)/vfio$")),
    h.q(root .. vdir), h.q(d .. "/usr" .. vdir)))
  assert(ok, out)
  out, ok = h.sh(("if [ -d %s ]; then mkdir -p %s && cp -r %s %s; fi"):format(h.q(root .. "/etc/modprobe.d"),
    h.q(d .. "/etc"), h.q(root .. "/etc/modprobe.d"), h.q(d .. "/etc/")))
  assert(ok, out)
  local mods = h.sh("bash -c " .. h.q('. "$1"; printf %s "${MODULES[*]}"') .. " _ " .. h.q(root .. "/etc/mkinitcpio.conf"))
  h.writefile(d .. "/config", ('MODULES="%s"\n'):format(mods))
  out, ok = h.sh(("cd %s && find . | cpio -o -H newc --quiet > %s"):format(h.q(d), h.q(root .. "/boot/initramfs-linux.img")))
  h.rm(d)
  assert(ok, out)
end

describe("a no-op apply on a one-kernel mkinitcpio root", function()
  local root

  setup(function()
    root = h.make_root({ os = { ID = "arch" }, corpus = { ["/etc/mkinitcpio.conf"] = "mkinitcpio/mkinitcpio.conf" },
      files = { ["/etc/mkinitcpio.d/linux.preset"] = PRESET, ["/boot/vmlinuz-linux"] = "kernel\n" },
      exec = { "/usr/bin/mkinitcpio" } })
    local kver = h.install_kernel(root, "cloud")
    h.writefile(root .. "/lib/modules/" .. kver .. "/pkgbase", "linux\n")
    local plan = assert(vfioinit.plan({ root = root }))
    assert.are.equal(1, #plan.changes)
    assert(plan:apply())
    build_image(root, kver)
    -- the first run reads the image and records its fingerprint; the next ones are no-ops
    local rep = vfioinit.update_initramfs({ root = root })
    assert.is_true(rep.ok, rep.error)
    assert.are.same({}, rep.rebuilt)
  end)
  teardown(function() h.rm(root) end)

  it("reads no file more than twice (the preset, the config, the manifest ...)", function()
    local reads, real = {}, core.fs.read
    finally(function() core.fs.read = real end)
    core.fs.read = function(r, path, ...)
      if r == root then reads[path] = (reads[path] or 0) + 1 end
      return real(r, path, ...)
    end
    local rep = vfioinit.update_initramfs({ root = root })
    core.fs.read = real
    assert.is_true(rep.ok, rep.error)
    assert.are.same({}, rep.changes)
    assert.are.same({}, rep.rebuilt)
    assert.is_true(rep.verified[1].ok)
    assert.truthy(reads["/etc/mkinitcpio.d/linux.preset"], "the preset was not read at all")
    local over = {}
    for path, n in pairs(reads) do
      if n > 2 then over[#over + 1] = ("%s read %d times"):format(path, n) end
    end
    table.sort(over)
    assert.are.same({}, over)
  end)

  -- The command as run (bin/vfioinit), a hook on require set before it starts: the modules
  -- of what a no-op does not do are not loaded (bench/run's no-op apply pays for each).
  it("loads no module of what it does not do: trials, diffs, signing, devices, the journal, other generators, rebuilds",
    function()
    local log = os.tmpname()
    finally(function() os.remove(log) end)
    local hook = ('local f, r = io.open(%q, "w"), require; require = function(n, ...) f:write(n, "\\n"); f:flush(); '
      .. 'return r(n, ...) end'):format(log)
    local out, ok = h.sh(h.lua .. " -e " .. h.q(hook) .. " " .. h.q(h.project .. "/bin/vfioinit") .. " --root "
      .. h.q(root) .. " apply 2>&1")
    assert.is_true(ok, out)
    assert.matches("configuration already in place", out, 1, true)
    assert.matches("every image is up to date", out, 1, true)
    local loaded = h.readfile(log)
    assert.truthy(loaded:find("vfioinit.verify\n", 1, true), loaded)  -- the hook saw the run
    -- nor the generators it does not act on, nor what only a command-line edit uses
    for _, m in ipairs({ "trial", "trial.stage", "edit.diff", "signing", "bind.sysfs", "bind.pciids", "state.journal",
      "state.revert", "generators.dracut", "generators.booster", "generators.initramfs_tools",
      "boot.cmdline.grubvars", "boot.cmdline.wordfiles", "policy", "rebuild" }) do
      assert.is_nil(loaded:find("\nvfioinit." .. m .. "\n", 1, true), "loaded vfioinit." .. m)
    end
  end)

  local strace = h.sh("command -v strace"):match("%S") ~= nil
  local it_strace = strace and it or pending
  it_strace("makes at most 150 file syscalls beyond loading the module (strace, bench/syscalls)", function()
    local out, ok = h.sh("bench/syscalls " .. h.q(root) .. " apply 2>&1")
    assert(ok, out)
    local n = tonumber(out:match("beyond loading: (%d+)"))
    assert(n and n <= 150, out)
  end)
end)

-- With device IDs (issue 25): the run asks modprobe.d (the drivers' aliases and the conflict
-- rule), the kernel's lists (the VFIO set, vfio_pci built in or not) and root's bin
-- directories (ostree, the generators, kernel-install) from several places; each answer is
-- looked up once.
describe("a no-op apply with device IDs on a one-kernel mkinitcpio root", function()
  local root, kver
  local IDS = { "1af4:1000" }  -- virtio-net: virtio_pci claims it (modules.alias)

  setup(function()
    root = h.make_root({ os = { ID = "arch" }, corpus = { ["/etc/mkinitcpio.conf"] = "mkinitcpio/mkinitcpio.conf" },
      files = { ["/etc/mkinitcpio.d/linux.preset"] = PRESET, ["/boot/vmlinuz-linux"] = "kernel\n",
        ["/usr/lib/modprobe.d/systemd.conf"] = "options bonding max_bonds=0\noptions dummy numdummies=0\n",
        ["/etc/modprobe.d/local.conf"] = "alias pci:v000010DEd*sv*sd*bc03sc*i* nouveau\n" },
      exec = { "/usr/bin/mkinitcpio", "/usr/bin/kernel-install" } })
    kver = h.install_kernel(root, "cloud")
    h.writefile(root .. "/lib/modules/" .. kver .. "/pkgbase", "linux\n")
    local plan = assert(vfioinit.plan({ root = root, ids = IDS }))
    assert(plan:apply())
    -- the driver the aliases name is in the file the image must carry
    assert.matches("softdep virtio_pci pre: vfio-pci", h.readfile(root .. "/etc/modprobe.d/vfioinit.conf"), 1, true)
    build_image(root, kver)
    local rep = vfioinit.update_initramfs({ root = root, ids = IDS })
    assert.is_true(rep.ok, rep.error)
    assert.are.same({}, rep.rebuilt)
  end)
  teardown(function() h.rm(root) end)

  -- run(wrap) -> the report of a no-op update_initramfs, with core.<ns>.<fn> wrapped by
  -- wrap[ns .. "." .. fn](real) for its length
  local function run(wrap)
    local saved = {}
    finally(function() for k, f in pairs(saved) do core[k:match("^(%w+)")][k:match("%.(%w+)$")] = f end end)
    for k, w in pairs(wrap) do
      local ns, fn = k:match("^(%w+)%.(%w+)$")
      saved[k] = core[ns][fn]
      core[ns][fn] = w(saved[k])
    end
    local rep = vfioinit.update_initramfs({ root = root, ids = IDS })
    for k, f in pairs(saved) do core[k:match("^(%w+)")][k:match("%.(%w+)$")] = f end
    assert.is_true(rep.ok, rep.error)
    assert.are.same({}, rep.changes)
    assert.are.same({}, rep.rebuilt)
    return rep
  end

  it("lists root's bin directories and modprobe.d directories once", function()
    local listed = {}
    run({ ["fs.dir"] = function(real)
      return function(r, path, ...)
        if r == root then listed[path] = (listed[path] or 0) + 1 end
        return real(r, path, ...)
      end
    end })
    assert.truthy(listed["/usr/bin"], "root's /usr/bin was not listed at all")
    assert.truthy(listed["/etc/modprobe.d"], "root's /etc/modprobe.d was not listed at all")
    local twice = {}
    for path, n in pairs(listed) do
      local watched = path:match("/modprobe%.d$") or path:match("^/usr/s?bin$") or path:match("^/s?bin$")
      if n > 1 and watched then twice[#twice + 1] = ("%s listed %d times"):format(path, n) end
    end
    table.sort(twice)
    assert.are.same({}, twice)
  end)

  it("reads the kernel's modules.dep and modules.builtin once", function()
    local asked = {}
    run({ ["moddep.states"] = function(real)
      return function(r, moddir, ...)
        asked[#asked + 1] = moddir
        return real(r, moddir, ...)
      end
    end })
    assert.are.same({ "/lib/modules/" .. kver }, asked)
  end)
end)
