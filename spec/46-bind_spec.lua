-- Bind by PCI address (issue 16, item 1): addresses, the early script, the plan's files
-- per generator, apply/revert, and verify's check that the image runs it before udev.
local h = require "helpers"
local vfioinit = require "vfioinit"
local bind = require "vfioinit.bind"
local core = require "vfioinit.core"
local verify = require "vfioinit.verify"
local context = require "vfioinit.context"

local DEBIAN = { ID = "debian", VERSION_ID = '"12"' }
local ADDR = "0000:00:04.0"

local function debian_root()
  return h.make_root({ os = DEBIAN, corpus = { ["/etc/initramfs-tools/modules"] = "initramfs-tools/modules" },
    exec = { "/usr/sbin/update-initramfs", "/etc/kernel/postinst.d/initramfs-tools" } })
end

local function change(plan, path)
  for _, c in ipairs(plan.changes) do if c.path == path then return c end end
end

-- Every regular file under dir with its mode and content hash (directories left aside:
-- revert removes the files it created, not the directories apply made for them).
local function files_hash(dir)
  return (h.sh("cd " .. h.q(dir) .. " && find . -type f -printf '%p %m\\n' | sort && find . -type f -print0 | sort -z | xargs -0 -r sha256sum"))
end

-- What mkinitcpio's build puts in the image from vfioinit's install hook in root: its
-- build() run by bash with add_* doing what v41's functions do (files under a build dir).
local function mkinitcpio_build(r)
  local b = h.tmpdir()
  local stubs = ([[
BUILDROOT=%s; _d_hooks=%s
add_module() { :; }
add_binary() { :; }
add_runscript() { mkdir -p "$BUILDROOT/hooks" && cp "$_d_hooks/vfioinit-bind" "$BUILDROOT/hooks/"; }
add_file() { [ "$1" = - ] || return 1; mkdir -p "$BUILDROOT${2%%/*}" && cat > "$BUILDROOT$2" && chmod "$3" "$BUILDROOT$2"; }
add_symlink() { mkdir -p "$BUILDROOT${1%%/*}" && ln -sfn "$2" "$BUILDROOT$1"; }
. %s && build
]]):format(h.q(b), h.q(r .. "/etc/initcpio/hooks"), h.q(r .. "/etc/initcpio/install/vfioinit-bind"))
  local out, ok = h.sh("bash -c " .. h.q(stubs) .. " 2>&1")
  assert(ok, out)
  return b
end

describe("bind: PCI addresses", function()
  it("accepts dddd:bb:dd.f in any case and bb:dd.f as domain 0000", function()
    assert.are.equal("0000:01:00.0", bind.check_address("0000:01:00.0"))
    assert.are.equal("0000:0a:1f.7", bind.check_address("0000:0A:1F.7"))
    assert.are.equal("0000:01:00.1", bind.check_address("01:00.1"))
    assert.are.equal("10de:01:00.0", bind.check_address("10DE:01:00.0"))
  end)

  it("refuses anything else with one line naming the argument", function()
    for _, bad in ipairs({ "0000:01:00", "0000:01:20.0", "0000:01:00.8", "zz", "0000:001:00.0", "0000:01:00.0 ", "" }) do
      local ok, err = bind.check_address(bad)
      assert.is_nil(ok, bad)
      assert.are.equal(("--device %s: expected a PCI address dddd:bb:dd.f (hex; device 00-1f, function 0-7), e.g. 0000:01:00.0"):format(bad), err)
    end
  end)

  it("plan{devices=} with a bad address fails before anything is read or written; the CLI exits 1", function()
    local r = debian_root()
    finally(function() h.rm(r) end)
    local before = h.tree_hash(r)
    local plan, err = vfioinit.plan({ root = r, devices = { "0000:01:00" } })
    assert.is_nil(plan)
    assert.truthy(err:find("^%-%-device 0000:01:00: expected a PCI address"), err)
    local code, out, stderr = h.cli("--root " .. h.q(r) .. " --device 1:0.0 apply")
    assert.are.equal(1, code, out)
    assert.are.equal("vfioinit: --device 1:0.0: expected a PCI address dddd:bb:dd.f (hex; device 00-1f, function 0-7), e.g. 0000:01:00.0\n", stderr)
    assert.are.equal(before, h.tree_hash(r))
  end)
end)

describe("bind: the early script", function()
  -- Run the script body against a fake /sys (paths rewritten into dir, modprobe a stub that
  -- records its call): the overrides, the unbind of a built-in driver and the re-probe.
  local function run_body(devices, setup)
    local dir = h.tmpdir()
    for _, d in ipairs(devices) do
      h.writefile(dir .. "/sys/bus/pci/devices/" .. d .. "/driver_override", "(null)\n")
    end
    h.sh("mkdir -p " .. h.q(dir .. "/sys/bus/pci/drivers/vfio-pci") .. " " .. h.q(dir .. "/sys/bus/pci/drivers/e1000e"))
    h.writefile(dir .. "/sys/bus/pci/drivers_probe", "")
    h.writefile(dir .. "/sys/bus/pci/drivers/e1000e/unbind", "")
    if setup then setup(dir) end
    h.writefile(dir .. "/bin/modprobe", "#!/bin/sh\necho \"$*\" >> " .. dir .. "/modprobe.log\n", 493)
    local body = bind.body(devices):gsub("/sys/", dir .. "/sys/")
    h.writefile(dir .. "/body.sh", body)
    local out, ok = h.sh("PATH=" .. h.q(dir .. "/bin") .. ":$PATH sh " .. h.q(dir .. "/body.sh") .. " 2>&1")
    return dir, out, ok
  end

  it("writes vfio-pci to each device's driver_override, loads vfio-pci and probes the unbound ones", function()
    local dir, out, ok = run_body({ "0000:00:03.0", ADDR })
    finally(function() h.rm(dir) end)
    assert(ok, out)
    for _, d in ipairs({ "0000:00:03.0", ADDR }) do
      assert.are.equal("vfio-pci\n", h.readfile(dir .. "/sys/bus/pci/devices/" .. d .. "/driver_override"))
    end
    assert.are.equal("vfio-pci\n", h.readfile(dir .. "/modprobe.log"))
    -- sysfs takes one address per write; the plain file keeps the last
    assert.are.equal(ADDR .. "\n", h.readfile(dir .. "/sys/bus/pci/drivers_probe"))
  end)

  it("releases a device a built-in driver already holds, and leaves one vfio-pci holds alone", function()
    local dir, out, ok = run_body({ "0000:00:03.0", ADDR }, function(d)
      h.sh(("ln -s %s %s"):format(h.q(d .. "/sys/bus/pci/drivers/e1000e"), h.q(d .. "/sys/bus/pci/devices/0000:00:03.0/driver")))
      h.sh(("ln -s %s %s"):format(h.q(d .. "/sys/bus/pci/drivers/vfio-pci"), h.q(d .. "/sys/bus/pci/devices/" .. ADDR .. "/driver")))
    end)
    finally(function() h.rm(dir) end)
    assert(ok, out)
    assert.are.equal("0000:00:03.0\n", h.readfile(dir .. "/sys/bus/pci/drivers/e1000e/unbind"))
    -- both hold a driver link in the fake tree (nothing unbinds there): no probe needed
    assert.are.equal("", h.readfile(dir .. "/sys/bus/pci/drivers_probe"))
  end)

  it("names a device that is not there on stderr and carries on with the others", function()
    local dir, out, ok = run_body({ ADDR })
    finally(function() h.rm(dir) end)
    assert(ok, out)
    local body = bind.body({ "0000:09:00.0", ADDR }):gsub("/sys/", dir .. "/sys/")
    h.writefile(dir .. "/b2.sh", body)
    out, ok = h.sh("PATH=" .. h.q(dir .. "/bin") .. ":$PATH sh " .. h.q(dir .. "/b2.sh") .. " 2>&1")
    assert(ok, out)
    assert.truthy(out:find("vfioinit: 0000:09:00.0: no such PCI device", 1, true), out)
  end)
end)

describe("bind: plan, apply and revert", function()
  it("initramfs-tools: an executable init-top script named to sort before udev; revert removes it", function()
    local r = debian_root()
    finally(function() h.rm(r) end)
    local before = files_hash(r)
    local plan = assert(vfioinit.plan({ root = r, devices = { ADDR, "00:04.0" } }))
    local c = assert(change(plan, "/etc/initramfs-tools/scripts/init-top/00-vfioinit-bind"))
    assert.is_nil(c.before)
    assert.truthy(c.after:find("for vfioinit_dev in " .. ADDR .. "; do", 1, true), c.after)
    assert.are.same({ ADDR }, plan.devices)
    assert.truthy(plan:diff():find("+++ etc/initramfs-tools/scripts/init-top/00-vfioinit-bind", 1, true))
    assert(plan:apply())
    local st = assert(core.fs.stat(r, c.path))
    assert.are.equal(493, st.mode)
    -- the script answers initramfs-tools' `prereqs` question and nothing else
    local out, ok = h.sh("sh " .. h.q(r .. c.path) .. " prereqs")
    assert(ok, out)
    assert.are.equal("\n", out)
    -- a second plan has nothing to do
    assert.are.equal(0, #assert(vfioinit.plan({ root = r, devices = { ADDR } })).changes)
    assert(vfioinit.revert({ root = r }))
    assert.are.equal(before, files_hash(r))
  end)

  it("CLI: --device is repeatable, bb:dd.f is domain 0000, repeats act once; plan --json lists the devices", function()
    local r = debian_root()
    finally(function() h.rm(r) end)
    local code, out = h.cli("--root " .. h.q(r) .. " --device 00:04.0 --device=0000:00:03.0 --device 0000:00:04.0 --json plan")
    assert.are.equal(2, code, out)
    assert.are.equal("['0000:00:04.0', '0000:00:03.0']", h.pyjson(out, "d['devices']"))
    assert.are.equal("True", h.pyjson(out, "any(c['path'].endswith('/00-vfioinit-bind') and c['new'] for c in d['changes'])"))
  end)

  it("dracut: a module with a pre-udev hook, kept in by add_dracutmodules", function()
    local r = h.make_root({ os = { ID = "fedora" }, corpus = { ["/etc/dracut.conf"] = "dracut/dracut.conf" },
      exec = { "/usr/bin/dracut" } })
    finally(function() h.rm(r) end)
    local plan = assert(vfioinit.plan({ root = r, devices = { ADDR } }))
    local setup = assert(change(plan, "/usr/lib/dracut/modules.d/90vfioinit-bind/module-setup.sh"))
    assert.truthy(setup.after:find('inst_hook pre-udev 00 "$moddir/vfioinit-bind.sh"', 1, true))
    local hook = assert(change(plan, "/usr/lib/dracut/modules.d/90vfioinit-bind/vfioinit-bind.sh"))
    assert.truthy(hook.after:find(ADDR, 1, true))
    local conf = assert(change(plan, "/etc/dracut.conf.d/90-vfioinit-bind.conf"))
    assert.truthy(conf.after:find('add_dracutmodules+=" vfioinit-bind "', 1, true))
    -- dracut sources module-setup.sh with bash: it must parse
    assert(plan:apply())
    local out, ok = h.sh("bash -n " .. h.q(r .. setup.path) .. " && sh -n " .. h.q(r .. hook.path) .. " 2>&1")
    assert(ok, out)
  end)

  it("mkinitcpio: install + runtime hook, and vfioinit-bind placed in HOOKS right before udev", function()
    local r = h.make_root({ os = { ID = "arch" }, corpus = { ["/etc/mkinitcpio.conf"] = "mkinitcpio/mkinitcpio.conf" },
      exec = { "/usr/bin/mkinitcpio" } })
    finally(function() h.rm(r) end)
    local plan = assert(vfioinit.plan({ root = r, devices = { ADDR } }))
    local conf = assert(change(plan, "/etc/mkinitcpio.conf"))
    local hooks = h.bash_array({ r .. "/etc/mkinitcpio.conf" }, "HOOKS")
    local new = h.tmpdir()
    finally(function() h.rm(new) end)
    h.writefile(new .. "/c", conf.after)
    local after = h.bash_array({ new .. "/c" }, "HOOKS")
    local want = {}
    for _, w in ipairs(hooks) do
      if w == "udev" then want[#want + 1] = "vfioinit-bind" end
      want[#want + 1] = w
    end
    assert.are.same(want, after)
    local hook = assert(change(plan, "/etc/initcpio/hooks/vfioinit-bind"))
    assert.truthy(hook.after:find("run_earlyhook() {", 1, true))
    assert(change(plan, "/etc/initcpio/install/vfioinit-bind"))
  end)

  it("mkinitcpio with archinstall's systemd HOOKS: vfioinit-bind after base; its install hook adds a unit "
    .. "ordered before udevd, its coldplug and modules-load, wanted by sysinit.target", function()
    local archinstall = "MODULES=()\nBINARIES=()\nFILES=()\n"
      .. "HOOKS=(base systemd autodetect microcode modconf kms keyboard sd-vconsole block filesystems fsck)\n"
    local r = h.make_root({ os = { ID = "arch" }, exec = { "/usr/bin/mkinitcpio" },
      files = { ["/etc/mkinitcpio.conf"] = archinstall } })
    finally(function() h.rm(r) end)
    local plan = assert(vfioinit.plan({ root = r, devices = { ADDR } }))
    assert(plan:apply())
    assert.are.same({ "base", "vfioinit-bind", "systemd", "autodetect", "microcode", "modconf", "kms", "keyboard",
      "sd-vconsole", "block", "filesystems", "fsck" }, h.bash_array({ r .. "/etc/mkinitcpio.conf" }, "HOOKS"))
    local b = mkinitcpio_build(r)
    finally(function() h.rm(b) end)
    local unit = assert(h.readfile(b .. "/usr/lib/systemd/system/vfioinit-bind.service"))
    local before = {}
    for l in unit:gmatch("[^\n]+") do
      local v = l:match("^Before=(.*)$")
      for w in (v or ""):gmatch("%S+") do before[w] = true end
    end
    for _, u in ipairs({ "systemd-udevd.service", "systemd-udev-trigger.service", "systemd-modules-load.service" }) do
      assert.is_true(before[u], u .. " in\n" .. unit)
    end
    assert.truthy(unit:find("\nDefaultDependencies=no\n", 1, true), unit)
    local target = h.sh("readlink " .. h.q(b .. "/usr/lib/systemd/system/sysinit.target.wants/vfioinit-bind.service"))
    assert.are.equal("../vfioinit-bind.service\n", target)
    -- the unit's command runs the runtime hook's run_earlyhook (with /sys and /hooks moved
    -- into the build dir: never this machine's devices)
    local exec = assert(unit:match("\nExecStart=/usr/bin/busybox sh %-c '([^']+)'"), unit)
    local hook = h.readfile(b .. "/hooks/vfioinit-bind"):gsub("/sys/", b .. "/sys/")
    assert.is_nil(hook:find("[^%w/_.-]/sys/"), hook)
    h.writefile(b .. "/hooks/vfioinit-bind", hook)
    h.writefile(b .. "/bin/modprobe", "#!/bin/sh\necho \"modprobe $*\"\n", 493)
    local out, ok = h.sh(("cd %s && PATH=%s/bin:$PATH sh -c %s 2>&1"):format(h.q(b), h.q(b), h.q(exec:gsub("/hooks/", "./hooks/"))))
    assert(ok, out)
    assert.truthy(out:find("vfioinit: " .. ADDR .. ": no such PCI device", 1, true), out)
    assert.truthy(out:find("modprobe vfio-pci", 1, true), out)
  end)

  it("booster refuses, naming booster and why; the CLI writes nothing", function()
    local r = h.make_root({ os = { ID = "arch" }, exec = { "/usr/bin/booster" },
      corpus = { ["/etc/booster.yaml"] = "booster/booster.yaml" } })
    finally(function() h.rm(r) end)
    local before = h.tree_hash(r)
    local code, _, stderr = h.cli("--root " .. h.q(r) .. " --generator booster --device " .. ADDR .. " apply")
    assert.are.equal(1, code)
    assert.truthy(stderr:find("^vfioinit: booster: cannot bind devices by address: its init is a single Go program"), stderr)
    assert.are.equal(before, h.tree_hash(r))
  end)
end)

describe("bind: verify reads the image", function()
  -- A one-kernel run stand-in that requires no module (the check under test is the bind one).
  local facts = { modules = function() return {} end, module_state = function() return false end }

  local function image(r, tree)
    local t = h.tmpdir()
    for name, text in pairs(tree) do h.writefile(t .. "/" .. name, text) end
    h.sh(("mkdir -p %s/boot && cd %s && find . | LC_ALL=C sort | cpio --quiet -o -H newc | gzip > %s/boot/initrd.img-6.1.0-1-amd64")
      :format(h.q(r), h.q(t), h.q(r)))
    h.rm(t)
  end

  local function check(r, gen)
    local ctx = context.new({ root = r, distro = DEBIAN })
    return verify.check(ctx, gen, "6.1.0-1-amd64", { facts = facts, bind_script = bind.expected(r, gen) })
  end

  local it_gen = require("vfioinit.generators.initramfs_tools")

  it("initramfs-tools: ok when the script is inside and ORDER runs it before udev; names what is wrong otherwise", function()
    local r = debian_root()
    finally(function() h.rm(r) end)
    assert(assert(vfioinit.plan({ root = r, devices = { ADDR } })):apply())
    local script = h.readfile(r .. it_gen.bind.script)
    local mine = '/scripts/init-top/00-vfioinit-bind "$@"\n[ -e /conf/param.conf ] && . /conf/param.conf\n'
    local udev = '/scripts/init-top/udev "$@"\n[ -e /conf/param.conf ] && . /conf/param.conf\n'
    image(r, { ["scripts/init-top/00-vfioinit-bind"] = script, ["scripts/init-top/ORDER"] = mine .. udev })
    local res = check(r, it_gen)
    assert.is_true(res.ok, table.concat(res.missing, ", "))
    image(r, { ["scripts/init-top/00-vfioinit-bind"] = script, ["scripts/init-top/ORDER"] = udev .. mine })
    assert.are.same({ "00-vfioinit-bind (runs after udev in scripts/init-top/ORDER)" }, check(r, it_gen).missing)
    image(r, { ["scripts/init-top/ORDER"] = udev })
    assert.are.same({ it_gen.bind.script }, check(r, it_gen).missing)
    -- an image built before the device list changed carries the old script
    assert(assert(vfioinit.plan({ root = r, devices = { "0000:00:05.0" } })):apply())
    image(r, { ["scripts/init-top/00-vfioinit-bind"] = script, ["scripts/init-top/ORDER"] = mine .. udev })
    assert.are.same({ it_gen.bind.script }, check(r, it_gen).missing)
  end)

  it("without a bind script in root nothing about binding is required", function()
    local r = debian_root()
    finally(function() h.rm(r) end)
    image(r, { ["conf/modules"] = "" })
    assert.is_nil(bind.expected(r, it_gen))
    assert.is_true(check(r, it_gen).ok)
  end)

  it("mkinitcpio: the runtime hook inside and listed in EARLYHOOKS before udev", function()
    local gen = require("vfioinit.generators.mkinitcpio")
    local r = h.make_root({ os = { ID = "arch" }, corpus = { ["/etc/mkinitcpio.conf"] = "mkinitcpio/mkinitcpio.conf" },
      exec = { "/usr/bin/mkinitcpio" } })
    finally(function() h.rm(r) end)
    assert(assert(vfioinit.plan({ root = r, devices = { ADDR } })):apply())
    local hook = h.readfile(r .. gen.bind.script)
    local contents = { ["hooks/vfioinit-bind"] = hook, config = '#!/usr/bin/ash\nEARLYHOOKS="vfioinit-bind udev"\nHOOKS="udev"\n' }
    assert.are.same({}, gen.bind.check(contents, hook))
    contents.config = '#!/usr/bin/ash\nEARLYHOOKS="udev vfioinit-bind"\n'
    assert.are.same({ "vfioinit-bind (runs after udev in EARLYHOOKS)" }, gen.bind.check(contents, hook))
    contents.config = '#!/usr/bin/ash\nEARLYHOOKS="udev"\n'
    assert.are.same({ "vfioinit-bind (not in the image's EARLYHOOKS)" }, gen.bind.check(contents, hook))
  end)

  it("mkinitcpio under the systemd hook (/init is systemd): the unit inside, wanted by sysinit.target", function()
    local gen = require("vfioinit.generators.mkinitcpio")
    local r = h.make_root({ os = { ID = "arch" }, exec = { "/usr/bin/mkinitcpio" }, files = {
      ["/etc/mkinitcpio.conf"] = "MODULES=()\nHOOKS=(base systemd autodetect modconf block filesystems)\n" } })
    finally(function() h.rm(r) end)
    assert(assert(vfioinit.plan({ root = r, devices = { ADDR } })):apply())
    local b = mkinitcpio_build(r)
    finally(function() h.rm(b) end)
    local hook = h.readfile(r .. gen.bind.script)
    -- as the systemd hook leaves it: /init links to systemd; the udev-era config is unread
    h.sh(("ln -s usr/lib/systemd/systemd %s/init"):format(h.q(b)))
    h.writefile(b .. "/config", '#!/usr/bin/ash\nEARLYHOOKS="udev vfioinit-bind"\n')
    local function listed()
      local img = r .. "/boot/img"
      h.sh(("mkdir -p %s/boot && cd %s && find . | LC_ALL=C sort | cpio --quiet -o -H newc > %s"):format(h.q(r), h.q(b), h.q(img)))
      local want = {}
      for _, n in ipairs(gen.bind.want) do want[n] = true end
      local _, contents = assert(core.image.list(r, "/boot/img", want))
      return gen.bind.check(contents, hook)
    end
    assert.are.same({}, listed())
    h.rm(b .. "/usr/lib/systemd/system/sysinit.target.wants")
    assert.are.same({ "/usr/lib/systemd/system/vfioinit-bind.service (not wanted by sysinit.target)" }, listed())
    h.rm(b .. "/usr/lib/systemd/system/vfioinit-bind.service")
    assert.are.same({ "/usr/lib/systemd/system/vfioinit-bind.service (not in the image)" }, listed())
  end)
end)
