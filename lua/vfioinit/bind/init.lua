--[[ vfioinit.bind: bind PCI devices to vfio-pci by address, inside the initramfs.

For two identical devices (one for the host, one for a guest) `ids` cannot tell them
apart; an address can. Each generator that can run a script early in its image gives a
`bind` table (lua/vfioinit/generators/*.lua):

  bind = {
    script = "/etc/...",            -- the file (inside root) that carries the device list
    want   = { "member", ... },     -- image members verify reads
    files  = function(ctx) end,     -- {path=, after=, mode=} for ctx.bind.body
    check  = function(contents, script_text) end, -- what the image lacks: {"why", ...}
  }

A generator without one (booster) refuses `devices`/`match` with its `bind_unsupported`
reason. This file holds what is common to all of them: address syntax, the option
checks, choosing devices by pattern (pciids.lua), the safety rules on a live system
(sysfs.lua) and the script body every generator wraps.
]]
local core = require("vfioinit.core")
local util = require("vfioinit.util")
-- what --device and --match need (an apply without them checks its options here too)
local sysfs = util.lazy "vfioinit.bind.sysfs"
local pciids = util.lazy "vfioinit.bind.pciids"

local M = {}

M.NAME = "vfioinit-bind"  -- the hook/module/script name in every generator

-- check_address(a) -> "dddd:bb:dd.f" (lower case) | nil, msg. `bb:dd.f` is domain 0000,
-- as lspci prints it on single-domain machines.
function M.check_address(a)
  local s = type(a) == "string" and a:lower() or ""
  if s:match("^%x%x:%x%x%.%x$") then s = "0000:" .. s end
  local dev, fn = s:match("^%x%x%x%x:%x%x:(%x%x)%.(%x)$")
  if not dev or tonumber(dev, 16) > 0x1f or tonumber(fn, 16) > 7 then
    return nil, ("--device %s: expected a PCI address dddd:bb:dd.f (hex; device 00-1f, function 0-7), e.g. 0000:01:00.0")
      :format(tostring(a))
  end
  return s
end

-- check_options(opts) -> sel {devices=, rx=, pattern=, force=, sysfs=} | false (none asked) | nil, msg
function M.check_options(opts)
  local devs = opts.devices
  if type(devs) == "string" then devs = { devs } end
  if (devs == nil or #devs == 0) and opts.match == nil then return false end
  local list = {}
  for _, a in ipairs(devs or {}) do
    local addr, err = M.check_address(a)
    if not addr then return nil, err end
    list[#list + 1] = addr
  end
  local sel = { devices = util.unique(list), force = opts.force == true, sysfs = opts.sysfs }
  if opts.match ~= nil then
    local rx, msg, off = core.re.compile(opts.match)
    if not rx then return nil, ("--match: %s: %s at offset %d"):format(opts.match, msg, off) end
    sel.rx, sel.pattern = rx, opts.match
  end
  return sel
end

-- match(sys, root, sel) -> list of {address=, description=} | nil, msg
function M.match(sys, root, sel)
  local text, where = pciids.read(root)
  if not text then return nil, "--match: " .. where end
  local db = pciids.parse(text)
  local found, addrs = {}, sys:devices()
  for _, a in ipairs(addrs) do
    local info = sys:info(a)
    if info then
      local desc = pciids.describe(db, info.vendor, info.device, info.class)
      local first, last = sel.rx:find(desc)  -- nil, message: PCRE2 gave up (e.g. its match limit)
      if not first and last then return nil, ("--match: %s: %s (device %s)"):format(sel.pattern, last, a) end
      if first then found[#found + 1] = { address = a, description = desc } end
    end
  end
  if #found == 0 then
    return nil, ("--match: %s: no PCI device matches (%d looked at, names from %s)"):format(sel.pattern, #addrs, where)
  end
  return found
end

-- The other endpoints of each device's IOMMU group that are not passed too.
local function group_problems(sys, devices, infos)
  local passed, problems = util.set(devices), {}
  for _, a in ipairs(devices) do
    local g = infos[a].group
    local left = {}
    for _, m in ipairs(g and sys:group_members(g) or {}) do
      local mi = sys:info(m)
      if not passed[m] and not (mi and sysfs.is_bridge(mi.class)) then left[#left + 1] = m end
    end
    if #left > 0 then
      problems[#problems + 1] = ("%s: IOMMU group %s also holds %s; pass %s too (--device), or none of them")
        :format(a, g, table.concat(left, ", "), #left > 1 and "them" or "it")
    end
  end
  return problems
end

-- check_safety(sys, devices, force, warn) -> true | nil, msg
-- Refused: a device that is not there, a group half passed (vfio could not use it), and
-- unless `force` the firmware's console (boot_vga) and the root filesystem's controller.
function M.check_safety(sys, devices, force, warn)
  local infos, problems = {}, {}
  for _, a in ipairs(devices) do
    infos[a] = sys:info(a)
    if not infos[a] then problems[#problems + 1] = a .. ": no such PCI device on this machine" end
  end
  if #problems > 0 then return nil, "--device " .. table.concat(problems, "; ") end
  if sys:iommu_on() then
    problems = group_problems(sys, devices, infos)
  else
    warn("the IOMMU is off (no /sys/kernel/iommu_groups): vfio-pci will hold the devices but no guest can use them; "
      .. "turn it on (intel_iommu=on or amd_iommu=on on the kernel command line) and run again to check their groups")
  end
  if not force then
    local rootc = sys:root_controllers()
    for _, a in ipairs(devices) do
      if infos[a].boot_vga then
        problems[#problems + 1] = a .. ": is the boot VGA device (the console the firmware set up); --force passes it anyway"
      end
      if rootc[a] then
        problems[#problems + 1] = a .. ": holds the root filesystem (or leads to it); --force passes it anyway"
      end
    end
  end
  if #problems > 0 then return nil, "--device " .. table.concat(problems, "; ") end
  return true
end

-- select(run, warn) -> {devices=, matched=} | false (nothing asked) | nil, msg
-- The safety rules need the machine's own devices: they apply on the live system (root
-- "/") or with the `sysfs` stand-in; for another root (a chroot being provisioned) the
-- devices of the machine it will boot on are not here to look at.
function M.select(run, warn)
  local sel = run.bind
  if not sel then return false end
  local live = sel.sysfs or (run.root == "/" and "/") or nil
  local sys = live and sysfs.new(live)
  local devices, matched = { util.unpack(sel.devices) }, {}
  if sel.rx then
    if not sys then
      return nil, ("--match: chooses among this machine's PCI devices, so it needs --root / (%s's machine is not "
        .. "this one): name the devices with --device"):format(run.root)
    end
    local found, err = M.match(sys, run.root, sel)
    if not found then return nil, err end
    for _, f in ipairs(found) do devices[#devices + 1] = f.address; matched[#matched + 1] = f end
    devices = util.unique(devices)
  end
  if sys then
    local ok, err = M.check_safety(sys, devices, sel.force, warn)
    if not ok then return nil, err end
  end
  return { devices = devices, matched = matched, body = M.body(devices) }
end

-- The shell every generator's script runs (POSIX sh: busybox ash, klibc/dash, bash).
-- Variables are prefixed: dracut sources its hooks into its own shell.
function M.body(devices)
  local list = table.concat(devices, " ")
  return ([[
# Written by vfioinit (--device): binds these PCI devices to vfio-pci by address
# before udev's coldplug can load their native drivers. `vfioinit revert` removes it.
for vfioinit_dev in %s; do
	vfioinit_d=/sys/bus/pci/devices/$vfioinit_dev
	if [ -e "$vfioinit_d/driver_override" ]; then
		echo vfio-pci > "$vfioinit_d/driver_override"
		# a driver built into the kernel may hold it already: let it go
		if [ -e "$vfioinit_d/driver" ] && ! [ "$vfioinit_d/driver" -ef /sys/bus/pci/drivers/vfio-pci ]; then
			echo "$vfioinit_dev" > "$vfioinit_d/driver/unbind"
		fi
	else
		echo "vfioinit: $vfioinit_dev: no such PCI device" >&2
	fi
done
modprobe vfio-pci
# vfio-pci may have been loaded before the overrides were written: probe again
for vfioinit_dev in %s; do
	[ -e "/sys/bus/pci/devices/$vfioinit_dev/driver" ] || echo "$vfioinit_dev" > /sys/bus/pci/drivers_probe
done
unset vfioinit_dev vfioinit_d
]]):format(list, list)
end

-- changes(ctx, gens, changes) -> changes | nil, msg: each generator's bind files, as
-- plan changes (so diff, apply, backups, journal and revert treat them like any edit).
function M.changes(ctx, gens, changes)
  if not ctx.bind then return changes end
  for _, g in ipairs(gens) do
    if not g.bind then
      return nil, ("%s: cannot bind devices by address: %s"):format(g.name,
        g.bind_unsupported or "it has no way to run a script early in its image")
    end
    for _, f in ipairs(g.bind.files(ctx)) do
      local before, err = ctx.read(f.path)
      if err then return nil, err end
      if before ~= f.after then
        changes[#changes + 1] = { generator = g.name, path = f.path, before = before, after = f.after, mode = f.mode }
      end
    end
  end
  return changes
end

-- expected(root, gen) -> the bind script's text in root when vfioinit put one there
-- (the image must carry it), else nil.
function M.expected(root, gen)
  if not gen.bind then return nil end
  return core.fs.stat(root, gen.bind.script) and core.fs.read(root, gen.bind.script) or nil
end

return M
