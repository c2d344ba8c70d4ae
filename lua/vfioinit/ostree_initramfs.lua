--[[ vfioinit.ostree_initramfs: the VFIO modules early in what an image-based root boots.

On an ostree root (lua/vfioinit/ostree.lua) no initramfs generator of the registry acts: the
deployment's initramfs belongs to its image, and only the system's own mechanism changes what
boots. One generator, named "ostree", stands for that mechanism; its `mode`:

  forced          the image's own dracut configuration (/usr/lib/dracut/dracut.conf.d, baked into
                  the image's initramfs: Bazzite, Bluefin) force-loads the VFIO modules already:
                  nothing changes, verify reads the deployment's initramfs. Device ids cannot
                  reach that initramfs through /etc/modprobe.d: they need --cmdline.
  image           a bootc/ostree image build root (writable /usr): dracut's configuration as for
                  any dracut system, then /usr/lib/modules/KVER/initramfs.img rebuilt the way the
                  image's build does (`dracut --no-hostonly --kver KVER --reproducible --add ostree -f`).
  overlay         plain ostree: dracut's configuration in the deployment's /etc, an initramfs built
                  by the deployment's own dracut, and a new deployment of the same commit carrying
                  it as an overlay initrd (`ostree admin deploy --overlay-initrd`, ostree >= 2020.7).
  initramfs-etc   rpm-ostree, whose image's initramfs has the VFIO modules but does not force them:
                  `rpm-ostree initramfs-etc --track=/etc/modprobe.d/vfioinit.conf`, and
                  `rd.driver.pre=` on the command line (`rpm-ostree kargs --append-if-missing`).
  regenerate      rpm-ostree, whose image's initramfs lacks them: `rpm-ostree initramfs --enable`
                  with dracut's --force-drivers (force_drivers loads them before udev; add_drivers
                  would only install them) and the modprobe.d file.
For every mode but `image`, a record /etc/vfioinit/ostree.initramfs (in the plan, the diff and
the manifest) says what ran; `vfioinit revert` undoes exactly that (revert_argvs). Nothing is
planned under /usr of a deployment (read-only there). A tool the mode needs and the
deployment lacks is named, and nothing happens.
]]
local core = require("vfioinit.core")
local machine = require("vfioinit.machine")
local cmdline = require("vfioinit.edit.cmdline")
local image = require("vfioinit.image")
local modprobe = require("vfioinit.modprobe")
local ostree = require("vfioinit.ostree")

local M = {}

M.name = "ostree"
M.RECORD = "/etc/vfioinit/ostree.initramfs"
M.OVERLAY = "/var/cache/vfioinit/ostree-overlay-%s.img"
M.FORCE = { "vfio", "vfio_iommu_type1", "vfio_pci" }
M.BAKED = "/usr/lib/dracut/dracut.conf.d"

local function norm(m) return (m:gsub("-", "_")) end

-- The words force_drivers holds after dracut sources the image's own configuration
-- (/usr/lib/dracut/dracut.conf.d: what the image's initramfs was built with), or nil, err.
local function baked(ctx)
  local dracut = require("vfioinit.generators.dracut")
  local names = {}
  for _, n in ipairs(ctx.dir(M.BAKED) or {}) do
    if n:match("%.conf$") then names[#names + 1] = n end
  end
  table.sort(names, machine.version_less)
  local scans = {}
  for _, n in ipairs(names) do
    local p = M.BAKED .. "/" .. n
    local text, err = ctx.read(p)
    if err then return nil, err end
    local sc, msg, line = core.scan.shell(text or "")
    if not sc then return nil, ("%s:%d: %s"):format(p, line, msg) end
    scans[#scans + 1] = sc
  end
  local set = {}
  for _, w in ipairs(dracut.simulate(scans, "force_drivers")) do set[norm(w)] = true end
  return set
end

-- The VFIO modules the run's kernels have as loadable modules (vfio_virqfd before 6.2).
local function wanted(run)
  local out, seen = {}, {}
  for _, k in ipairs(run.kernels) do
    for _, m in ipairs(run:modules(k) or {}) do
      if m.state == "module" and not seen[m.name] then seen[m.name] = true; out[#out + 1] = m.name end
    end
  end
  return #out > 0 and out or M.FORCE
end

local function forced(run)
  local set, err = baked(run.ctx)
  if not set then return nil, err end
  for _, m in ipairs(wanted(run)) do if not set[m] then return false end end
  return true
end

-- Does the target deployment's own initramfs (the first initrd of its entry: the image's, as
-- ostree copied it to /boot) carry the VFIO modules, forced or not?
local function base_has(run, kver)
  local path = run.ostree.target.initrds[1]
  local entries = path and image.list(run.ostree.uroot, path)
  if not entries then return false end
  local have = image.modules(entries, kver)
  for _, m in ipairs(wanted(run)) do if not have[m] then return false end end
  return true
end

-- The record's text for a mode.
local function record(mode, lines)
  local t = { "# vfioinit: the VFIO modules early in what this ostree deployment boots "
    .. "(`vfioinit revert` undoes exactly this)", "mode " .. mode }
  for _, l in ipairs(lines or {}) do t[#t + 1] = l end
  return table.concat(t, "\n") .. "\n"
end

function M.parse(text)
  local r = { lines = {} }
  for line in (text or ""):gmatch("[^\n]+") do
    local k, v = line:match("^(%w[%w-]*) (.*)$")
    if k == "mode" then r.mode = v elseif k then r.lines[#r.lines + 1] = { k, v } end
  end
  return r
end

local function need(ctx, tool, why)
  if not machine.command(ctx, tool) then
    return nil, ("%s: %s needs %s, which this deployment does not have (looked in %s)"):format(ctx.root, why, tool,
      table.concat(machine.BIN_DIRS, ", "))
  end
  return true
end

-- mode(run) -> mode | nil, err
function M.mode(run)
  local info, ctx = run.ostree, run.ctx
  if info.kind == "image" then
    local ok, err = need(ctx, "dracut", "rebuilding the image's initramfs")
    if not ok then return nil, err end
    return "image"
  end
  local f, ferr = forced(run)
  if f == nil then return nil, ferr end
  if f then return "forced" end
  if machine.command(ctx, "rpm-ostree") then
    if not info.booted then
      return nil, ("%s: rpm-ostree changes the running system only (its daemon acts on the booted deployment): "
        .. "run vfioinit on that system, with root /"):format(info.uroot)
    end
    local origin = info.target.origin or ""
    if origin:match("\nregenerate%-initramfs%s*=%s*true") and not ctx.read(M.RECORD) then
      return nil, ("%s.origin: rpm-ostree already regenerates this deployment's initramfs with arguments of its own; "
        .. "vfioinit would replace them: add --force-drivers=vfio,vfio_iommu_type1,vfio_pci to them by hand")
        :format(info.target.path)
    end
    local prev = M.parse(ctx.read(M.RECORD))
    if prev.mode == "initramfs-etc" or prev.mode == "regenerate" then return prev.mode end
    return base_has(run, info.target.kver) and "initramfs-etc" or "regenerate"
  end
  for _, t in ipairs({ { "dracut", "building the overlay initramfs" }, { "ostree", "deploying it" } }) do
    local ok, err = need(ctx, t[1], t[2])
    if not ok then return nil, err end
  end
  -- `ostree admin deploy --overlay-initrd` came with ostree 2020.7: the option's name is in the binary
  local bin = machine.command(ctx, "ostree")
  local text = core.fs.read(run.root, bin, 64 * 1024 * 1024) or ""
  if not text:find("overlay-initrd", 1, true) then
    return nil, ("%s: this ostree has no `ostree admin deploy --overlay-initrd` (ostree 2020.7 and later have it): "
      .. "the deployment's initramfs cannot get the VFIO modules"):format(bin)
  end
  return "overlay"
end

-- Where `ostree admin` finds the sysroot from inside the run's root, and what to bind.
local function sysroot_args(info)
  if info.prefix ~= "" then
    return { "--sysroot=/sysroot" }, { source = info.uroot, target = "/sysroot" }, "/sysroot"
  elseif info.uroot ~= "/" then
    return { "--sysroot=" .. info.sysroot }, nil, ""
  end
  return {}, nil, ""
end
M.sysroot_args = sysroot_args

local function ostree_admin(info, sub, args)
  local sys, bind, base = sysroot_args(info)
  local argv = { "ostree", "admin", sub }
  for _, a in ipairs(sys) do argv[#argv + 1] = a end
  for _, a in ipairs(args or {}) do argv[#argv + 1] = (a:gsub("=@/", "=" .. base .. "/")) end
  return { argv = argv, bind = bind }
end

-- `ostree admin deploy` of the deployment `d`'s commit, keeping its origin (what it follows).
local function deploy(info, d, extra)
  local args = { "--os=" .. d.osname }
  if d.origin then args[#args + 1] = "--origin-file=@" .. d.path .. ".origin" end
  for _, a in ipairs(extra or {}) do args[#args + 1] = a end
  args[#args + 1] = d.csum
  return ostree_admin(info, "deploy", args)
end

local function dracut_argv(run, kver, out, tmp)
  local argv = { "dracut", "--no-hostonly", "--kver", kver, "--reproducible" }
  -- a deployment's own /var is empty until it boots (the stateroot's is mounted there): no /var/tmp
  if tmp then argv[#argv + 1] = "--tmpdir"; argv[#argv + 1] = "/tmp" end
  -- what ostree's initramfs needs (ostree-prepare-root), when the image has the module
  for _, n in ipairs(run.ctx.dir("/usr/lib/dracut/modules.d") or {}) do
    if n:match("^%d*ostree$") then argv[#argv + 1] = "--add"; argv[#argv + 1] = "ostree"; break end
  end
  argv[#argv + 1] = "-f"; argv[#argv + 1] = out
  return argv
end

-- The commands a mode runs for kver after apply: { {argv=, bind=}... }; ctx carries the
-- plan's wants (modprobe_file: the file to track or install)
local function commands(run, g, kver, ctx)
  local info, mode = run.ostree, g.mode
  if mode == "overlay" then
    local out = M.OVERLAY:format(kver)
    return { { argv = dracut_argv(run, kver, out, info.prefix ~= ""), mkdir = out:match("^(.*)/") },
      deploy(info, info.target, { "--overlay-initrd=" .. out }) }
  elseif mode == "initramfs-etc" then
    local list = {}
    if ctx.modprobe_file then
      list[#list + 1] = { argv = { "rpm-ostree", "initramfs-etc", "--track=" .. modprobe.FILE } }
    end
    list[#list + 1] = { argv = { "rpm-ostree", "kargs", "--append-if-missing=rd.driver.pre=" .. table.concat(wanted(run), ",") } }
    return list
  elseif mode == "regenerate" then
    local argv = { "rpm-ostree", "initramfs", "--enable", "--arg=--force-drivers", "--arg=" .. table.concat(wanted(run), " ") }
    if ctx.modprobe_file then argv[#argv + 1] = "--arg=--install"; argv[#argv + 1] = "--arg=" .. modprobe.FILE end
    return { { argv = argv } }
  end
  return {}
end

-- The plan's changes for a mode (paths inside the run's root).
local function edits(run, g, ctx, dracut)
  local mode = g.mode
  if mode == "forced" then
    if ctx.ids and #ctx.ids > 0 and not run.opts.cmdline then
      return nil, ("%s: this image's initramfs force-loads vfio-pci (%s) before /etc/modprobe.d can be read: the "
        .. "ids %s must go on the kernel command line as vfio-pci.ids=; run again with --cmdline"):format(M.BAKED,
        "force_drivers", table.concat(ctx.ids, ","))
    end
    return {}
  end
  local out = {}
  if mode == "image" or mode == "overlay" then
    local list, err = dracut.edits(ctx)
    if not list then return nil, err end
    for _, c in ipairs(list) do out[#out + 1] = c end
    if mode == "image" then return out end
  end
  local before, err = ctx.read(M.RECORD)
  if err then return nil, err end
  -- what revert needs, nothing that names this commit or kernel (a new deployment of the
  -- same commit holds the same record)
  local lines = {}
  if mode == "initramfs-etc" then
    if ctx.modprobe_file then lines[#lines + 1] = "track " .. modprobe.FILE end
    lines[#lines + 1] = "karg rd.driver.pre=" .. table.concat(wanted(run), ",")
  end
  local after = record(mode, lines)
  if before ~= after then out[#out + 1] = { path = M.RECORD, before = before, after = after } end
  for _, c in ipairs(out) do
    if c.path:match("^/usr/") then
      return nil, ("%s: under /usr, read-only in an ostree deployment: vfioinit edits nothing there"):format(c.path)
    end
  end
  return out
end

-- rebuild_run(ctx, gens, opts): rebuild.run's report for the deployed modes: the mode's
-- commands per kernel (chrooted into the run's root; `ostree admin` with the sysroot bound
-- on /sysroot there), then opts.verify reads what the default deployment now boots.
local function rebuild_run(run, g, ctx, opts)
  local bl = require("vfioinit.boot.cmdline")
  local report = { ok = true, rebuilt = {}, leftovers = opts.leftovers or {} }
  local log = opts.log or function() end
  for _, k in ipairs(opts.kernels or run.kernels) do
    local e = { kernel = k, generator = g.name, ok = false, timed_out = false, image = g.image_path(ctx, k) }
    report.rebuilt[#report.rebuilt + 1] = e
    for _, c in ipairs(commands(run, g, k, ctx)) do
      if c.mkdir then core.fs.mkdirs(ctx.root, c.mkdir, 493) end
      log(("%s %s: running %s"):format(g.name, k, table.concat(c.argv, " ")))
      local out = opts.on_output and function(line) opts.on_output(line, "stdout", g.name, { k }) end
      local r = bl.run_command(ctx.root, { target = g.name, argv = c.argv, bind = c.bind },
        { timeout = opts.timeout or require("vfioinit.rebuild").DEFAULT_TIMEOUT, on_output = out })
      e.command, e.status, e.seconds, e.timed_out = c.argv, r.status, r.seconds, r.timed_out
      if not r.ok then e.error = g.name .. ": " .. r.error; break end
    end
    if not e.error then
      local ok, missing = true, nil
      if opts.verify then ok, missing = opts.verify(g, k) end
      e.ok, e.missing = ok == true, missing
      if not e.ok then
        e.error = ("%s: what the default deployment boots for kernel %s lacks %s"):format(g.name, k,
          table.concat(missing or {}, ", "))
      end
    end
    if not e.ok then report.ok = false; report.error = report.error or e.error end
  end
  return report
end

-- early load: rd.driver.pre in the image (dracut's etc/cmdline.d), and for the initramfs-etc
-- mode on the entry's own command line, where rpm-ostree kargs put it
local function early(dracut)
  return function(contents, chain)
    local set = dracut.early_modules(contents)
    for _, w in ipairs((chain and chain.cmdline) and cmdline.split(chain.cmdline) or {}) do
      if w.key == "rd.driver.pre" or w.key == "rdloaddriver" then
        for m in (w.value or ""):gmatch("[^,]+") do set[norm(m)] = true end
      end
    end
    return set
  end
end

-- generators(run) -> { the ostree generator } | nil, err
function M.generators(run)
  if run.opts.generators and #run.opts.generators > 0 then
    return nil, ("%s: an ostree root: its %s builds what boots, not a generator of vfioinit's (--generator %s)")
      :format(run.ostree.uroot, run.ostree.manager, run.opts.generators[1])
  end
  local dracut = run.registry:get("dracut")
  local mode, err = M.mode(run)
  if not mode then return nil, err end
  local deployed = run.ostree.kind == "deployed"
  local g = setmetatable({ name = "ostree", mode = mode, built_by_chain = deployed or nil,
    modprobe_in_image = mode ~= "forced" and nil or false, early_modules = early(dracut) }, { __index = dracut })
  if deployed then
    g.bind = nil
    g.bind_unsupported = "binding by address puts a dracut module under /usr/lib/dracut, read-only in an ostree deployment"
  end
  function g.edits(ctx) return edits(run, g, ctx, dracut) end
  function g.image_path(_, kver)
    if mode == "overlay" then return M.OVERLAY:format(kver) end
    if mode == "image" then return "/usr/lib/modules/" .. kver .. "/initramfs.img" end
    return ostree.base_image(run.root, "", kver) or ("/usr/lib/modules/" .. kver .. "/initramfs.img")
  end
  if mode == "image" then
    function g.rebuild_argv(_, kvers)
      local out = {}
      for _, k in ipairs(kvers) do out[#out + 1] = { argv = dracut_argv(run, k, g.image_path(nil, k)), kernels = { k } } end
      return out
    end
  else
    function g.rebuild_argv() return {} end
    function g.rebuild_run(ctx, _, opts) return rebuild_run(run, g, ctx, opts) end
  end
  return { g }
end

-- revert_argvs(ctx, before) -> the commands that undo what the record `before` says ran, in
-- the shape of bootloaders' commands ({argv=, bind=} each). ctx.ostree: the root's ostree info.
function M.revert_argvs(ctx, before)
  local info, r = ctx.ostree, M.parse(before)
  if not info or info.kind ~= "deployed" then return {} end
  if r.mode == "initramfs-etc" then
    local out = {}
    for _, l in ipairs(r.lines) do
      if l[1] == "track" then out[#out + 1] = { argv = { "rpm-ostree", "initramfs-etc", "--untrack=" .. l[2] } }
      elseif l[1] == "karg" then out[#out + 1] = { argv = { "rpm-ostree", "kargs", "--delete-if-present=" .. l[2] } } end
    end
    return out
  elseif r.mode == "regenerate" then
    return { { argv = { "rpm-ostree", "initramfs", "--disable" } } }
  elseif r.mode ~= "overlay" then
    return {}
  end
  -- overlay: the deployment vfioinit made is the one whose overlay initrd is vfioinit's
  -- (ostree names it by its sha256): undeployed while it is not running, else replaced by a
  -- deployment of the same commit without it
  local fresh = ostree.detect(info.uroot)
  local d = fresh and fresh.default
  local out, files = {}, {}
  for _, k in ipairs(d and { d.kver } or {}) do
    local p = M.OVERLAY:format(k)
    local text = core.fs.read(ctx.root, p, 1024 * 1024 * 1024)
    local sum = text and core.hash.sha256(text)
    for _, i in ipairs(d.initrds) do
      if sum and i:match("/" .. sum .. "%.img$") then
        if d.booted then out[#out + 1] = deploy(info, d)
        else out[#out + 1] = ostree_admin(info, "undeploy", { tostring(d.index) }) end
        break
      end
    end
    if text then files[#files + 1] = p end
  end
  -- the overlay vfioinit built goes once nothing boots it
  for _, p in ipairs(files) do out[#out + 1] = { argv = { "rm", "-f", p } } end
  return out
end

return M
