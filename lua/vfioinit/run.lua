--[[ vfioinit.run: what one public call knows about root, computed once.

  local run, err = require("vfioinit.run").new(opts, registry, "plan")

`new` checks the options' values (a bad root, generator name, module name, device ID or
kernel returns nil, message; the public call checked their fields and types first:
lua/vfioinit/options.lua), holds root's directory open for the run's calls
(core.fs.hold), detects root once (the inventory) and builds the one context the
generators see. Everything else is a read-only fact computed on first use and kept for
the rest of the run: the generators acted on, the module states of each kernel (depmod's
text lists), libkmod's answers where they are needed (status' module paths, a module
name the lists lack), the boot chains and the verification result of each image. The stages
(lua/vfioinit/pipeline.lua) take the run and each other's results, and change no fact
but through run:forget (a rebuilt image is read again); docs/INTERNALS.md ("The pipeline") draws them. A run lives as long as one public
call: `run:close()` releases root's fd and the libkmod contexts.
]]
local core = require("vfioinit.core")
local util = require("vfioinit.util")
local detect = require("vfioinit.detect")
local kernel = require("vfioinit.kernel")
local context = require("vfioinit.context")
local modprobe = require("vfioinit.modprobe")
local bind = require("vfioinit.bind")
local fingerprint = require("vfioinit.fingerprint")
local machine = require("vfioinit.machine")

local M = {}

local Run = {}
Run.__index = Run

-- A missing root would otherwise surface much later, e.g. as a lock failure.
function M.check_root(opts)
  if opts.root == nil then return true end
  local ok, why = util.check_root(opts.root)
  if not ok then return nil, ("root %s: %s"):format(opts.root == "" and "''" or opts.root, why) end
  return true
end

-- Each selected kernel must be installed in root; repeats are dropped.
local function check_kernels(inv, kernels, root)
  kernels = util.unique(kernels)
  for _, k in ipairs(kernels or {}) do
    if type(k) ~= "string" or not inv.kernel_dirs[k] then
      return nil, ("/lib/modules/%s: no such kernel in %s"):format(tostring(k), root)
    end
  end
  return kernels or inv.kernels
end

-- The generators an operation acts on: the named ones, else the active one(s), else
-- every installed one.
function M.select_generators(inv, registry, names)
  local list = {}
  if names and #names > 0 then
    for _, n in ipairs(names) do
      local g, err = registry:get(n)
      if not g then return nil, err end
      list[#list + 1] = g
    end
    -- `--generator X --generator X` acts once: twice would edit the same file twice
    return util.unique(list)
  end
  for _, want in ipairs({ "active", "installed" }) do
    for _, g in ipairs(inv.generators) do
      if g[want] then list[#list + 1] = assert(registry:get(g.name)) end
    end
    if #list > 0 then return list end
  end
  local cmds = {}
  for _, g in ipairs(inv.generators) do cmds[#cmds + 1] = registry:get(g.name).command end
  return nil, inv.root .. ": no initramfs generator installed (looked for " .. table.concat(cmds, ", ") .. ")"
end

-- new(opts, registry, fname) -> run | nil, err. Checks, in order: root, generator names,
-- module names, device IDs, device addresses and --match, then detects and checks the
-- selected kernels.
function M.new(opts, registry, fname)
  opts = opts or {}
  local root = opts.root or "/"
  -- one directory fd of root for the run's many reads (a deployment's root is held too);
  -- a root that cannot be held is checked for its message, as the public calls check it
  local first = root ~= "" and not root:find("\0", 1, true) and core.fs.hold(root) or nil
  if not first then
    local ok, err = M.check_root(opts)
    if not ok then return nil, err end
  end
  local held = { first }
  local function fail(e)
    for _, h in ipairs(held) do h:release() end
    return nil, e
  end
  -- an unknown generator is an error for every call, also one (status) that would
  -- otherwise report it as a plan error and succeed
  for _, n in ipairs(opts.generators or {}) do
    local g, gerr = registry:get(n)
    if not g then return fail(gerr) end
  end
  -- an ostree sysroot: the run acts on a deployment (lua/vfioinit/ostree.lua)
  -- one finder per root acted on: ostree's detection, detect and the run's context each
  -- look for commands, and list root's bin directories once between them
  local look = context.finder(root)
  local oinfo, oerr = require("vfioinit.ostree").locate(root, fname, look)
  if oerr then return fail(oerr) end
  if oinfo and oinfo.root ~= root then
    root = oinfo.root; held[#held + 1] = core.fs.hold(root); look = context.finder(root)
  end
  local extra, merr = util.check_modules(opts.modules)
  if not extra then return fail(merr) end
  local ids, ierr = util.check_ids(opts.ids)
  if opts.ids and not ids then return fail(ierr) end
  local sel, berr = bind.check_options(opts)  -- devices, match (compiled once), force
  if sel == nil then return fail(berr) end
  local inv, derr = detect.detect(root, registry, look)
  if not inv then return fail(derr) end
  local kernels, kerr = check_kernels(inv, opts.kernels, root)
  if not kernels then return fail(kerr) end
  local run = setmetatable({
    op = fname, opts = opts, root = root, registry = registry, inventory = inv, kernels = kernels,
    loaders = registry.loaders or require("vfioinit.boot").new(),
    extra = util.unique(extra), ids = ids, bind = sel, held = held,
    facts = { kmod = {}, lists = {}, modules = {}, details = {}, states = {}, asked = {}, verified = {} }, reread = {},
    ostree = oinfo,
  }, Run)
  run.ctx = context.new({ root = root, distro = inv.distro, kernels = kernels, ids = ids,
    softdeps = opts.softdeps, facts = true, once = look.once })
  run.ctx.ostree = oinfo
  return run
end

--- run:generators() -> list of generator tables | nil, err (computed once)
function Run:generators()
  if not self.gens and not self.gens_error then
    if self.ostree then
      -- an image-based root: the deployment's own mechanism builds what boots
      self.gens, self.gens_error = require("vfioinit.ostree_initramfs").generators(self)
    else
      self.gens, self.gens_error = M.select_generators(self.inventory, self.registry, self.opts.generators)
    end
  end
  return self.gens, self.gens_error
end

--- run:targets() -> generators | nil, err: also checks every generator names an image
-- for every kernel, before anything runs (rebuild and verify act on images).
function Run:targets()
  local gens, err = self:generators()
  if not gens then return nil, err end
  for _, g in ipairs(gens) do
    for _, k in ipairs(self.kernels) do
      local path, perr = g.image_path(self.ctx, k)
      if not path then return nil, perr or (g.name .. ": no image path for kernel " .. k) end
    end
  end
  return gens
end

-- run:once(kind, key, compute) -> self.facts[kind][key], from compute() the first time it
-- gives a value (an error is not kept: the next call tries again) | nil, err
function Run:once(kind, key, compute)
  local f = self.facts[kind]
  if not f[key] then
    local v, err = compute()
    if not v then return nil, err end
    f[key] = v
  end
  return f[key]
end

--- run:kmod(kver) -> the run's libkmod context on that kernel | nil, err
function Run:kmod(kver)
  return self:once("kmod", kver, function()
    return kernel.open(self.root, kver, self.inventory.kernel_dirs[kver])
  end)
end

-- run:lists(kver) -> {states=, asked=}: depmod's text lists (kernel.states) read once per
-- kernel for every name the run knows it will ask: the VFIO set and the extra modules
-- (`asked`, a set; their states in `states`) | nil, err
function Run:lists(kver)
  return self:once("lists", kver, function()
    local names, asked = {}, {}
    for _, list in ipairs({ machine.VFIO, self.extra }) do
      for _, n in ipairs(list) do
        for _, form in ipairs({ n, util.norm(n) }) do
          if not asked[form] then asked[form] = true; names[#names + 1] = form end
        end
      end
    end
    local st, err = kernel.states(self.root, self.inventory.kernel_dirs[kver], names)
    if not st then return nil, err end
    return { states = st, asked = asked }
  end)
end

--- run:modules(kver) -> the VFIO set's states on that kernel, {name=, state="module"|
-- "builtin"|"missing"} each (vfio_virqfd only where the kernel ships it, before 6.2), from
-- depmod's text lists (kernel.states: no libkmod, which maps 1.4 MB of libcrypto and reads
-- every index for lookups the stages do not make); computed once | nil, err
function Run:modules(kver)
  return self:once("modules", kver, function()
    local l, err = self:lists(kver)
    if not l then return nil, err end
    local mods = {}
    for _, name in ipairs(machine.VFIO) do
      local st = l.states[name]
      if st or name ~= "vfio_virqfd" then mods[#mods + 1] = { name = name, state = st or "missing" } end
    end
    return mods
  end)
end

--- run:module_details(kver) -> kernel.modules' list for that kernel (libkmod: each module's
-- path and dependencies, what status shows), computed once | nil, err
function Run:module_details(kver)
  return self:once("details", kver, function()
    local kctx, err = self:kmod(kver)
    if not kctx then return nil, err end
    return kernel.modules({ root = self.root, kernel = kver, kmod = kctx })
  end)
end

--- run:module_state(kver, name) -> "module" | "builtin" | false | nil, err (computed once)
-- from depmod's text lists (run:lists' answer for a name it asked). A name the lists do not
-- have may still be an alias of a built-in module, which libkmod resolves: outside `verify`
-- (which checks the image for the names themselves) it is asked.
function Run:module_state(kver, name)
  local f = self.facts.states
  local key = kver .. "\0" .. name
  if f[key] == nil then
    local l, err = self:lists(kver)
    if not l then return nil, err end
    local st = l.states
    if not l.asked[name] then
      st, err = kernel.states(self.root, self.inventory.kernel_dirs[kver], { name })
      if not st then return nil, err end
    end
    f[key] = st[name] or false
  end
  if f[key] == false and self.op ~= "verify" and not self.facts.asked[key] then
    self.facts.asked[key] = true
    local kctx, err = self:kmod(kver)
    if not kctx then return nil, err end
    local st, serr = kernel.module_state({ root = self.root, kernel = kver, name = name, kmod = kctx })
    if st == nil then return nil, serr end
    f[key] = st
  end
  return f[key]
end

--- run:reading(kver): verify is about to read an image of that kernel in full, knowing the
-- modules it checks for (run:modules and run:module_state keep their answers). A `verify`
-- run asks libkmod nothing more, so that kernel's context is closed first: libkmod's mapped
-- indexes and caches (0.4 MB for Debian's 6.1 kernel) are then not held alongside the
-- image's decoder, whose window is the peak of a `verify`. Other runs (status, apply) still
-- ask libkmod afterwards and keep their one context per kernel.
function Run:reading(kver)
  local kctx = self.facts.kmod[kver]
  if self.op == "verify" and kctx then kctx:close(); self.facts.kmod[kver] = nil end
end

--- run:drivers_for(kver, ids) -> list of {id=, modules=} | nil, err
-- (depmod's text lists answer; libkmod only for a kernel without modules.alias)
function Run:drivers_for(kver, ids)
  return kernel.drivers_for({ root = self.root, kernel = kver, ids = ids, dir = self.inventory.kernel_dirs[kver],
    kmod = self.facts.kmod[kver], ctx = self.ctx })
end

--- run:boot_chains(kver) -> list of boot chains of that kernel (lua/vfioinit/boot/chains.lua,
-- from the run's boot-loader plugins), computed once per run until run:boot_changed() |
-- nil, err (a loader file at fault: "PATH:LINE: reason")
function Run:boot_chains(kver)
  if self.ostree then return require("vfioinit.ostree").chains(self.ostree, kver) end
  local f = self.facts
  f.chains = f.chains or {}
  if f.chains[kver] == nil then
    local chains = require("vfioinit.boot.chains")
    if not f.bootstate and not f.bootstate_error then
      f.bootstate, f.bootstate_error = chains.state(self.ctx, self:generators() or {}, self.loaders)
    end
    if not f.bootstate then return nil, f.bootstate_error end
    local list, err = chains.for_kernel(f.bootstate, kver)
    f.chains[kver] = list or { error = err }
  end
  local c = f.chains[kver]
  if c.error then return nil, c.error end
  return c
end

--- run:boot_changed(): what boots was written (grub.cfg regenerated, images rebuilt): the
-- boot chains are read again when next asked for.
function Run:boot_changed()
  self.facts.chains, self.facts.bootstate, self.facts.bootstate_error = nil, nil, nil
end

--- run:cmdline_targets() -> the command-line targets of root (lua/vfioinit/boot/init.lua
-- `targets`: detected, minus the covered ones) | nil, err; computed once per run.
function Run:cmdline_targets()
  local f = self.facts
  if not f.targets and not f.targets_error then f.targets, f.targets_error = self.loaders:targets(self.ctx) end
  return f.targets, f.targets_error
end

-- Is `gen` the generator whose images boot? The active one; with none active, the only
-- one acted on. Boot chains judge only its images.
function Run:boots(gen)
  if self.ostree then return true end
  local active = self.inventory.active
  if active then return active == gen.name end
  local gens = self:generators()
  return gens ~= nil and #gens == 1 and gens[1] == gen
end

-- The runs that may write the fingerprint store: those that hold root's lock and write
-- anyway. A read-only one (verify, status) only looks fingerprints up: it writes nothing.
local RECORDS = { update_initramfs = true, rebuild = true }

--- run:verified(gen, kver, need) -> verify.check's result for that kernel's image, read
-- once per run unless `forget` drops it (the image was rebuilt): reading a 13 MB image is
-- most of a no-op apply's time. `need` is what the calling stage asks of the image:
-- {modules= (extra modules beside the VFIO set), built= (check the generator's own image:
-- what a rebuild just wrote)}. Across runs the fingerprint store (lua/vfioinit/fingerprint.lua)
-- answers for an image that has not changed since it was read; `opts.full` re-reads. The images
-- checked are those the kernel's boot chains start (chains.boot_images: each loader's default
-- entry). Several images make one result: the first failing one's (else the first), with
-- `checked` (every result) and `note` (why several).
function Run:verified(gen, kver, need)
  local key = gen.name .. "\0" .. kver
  -- what an image-based system built is in the deployment it made: read through its chain
  local built = need.built and not gen.built_by_chain
  local list, note = {}, nil
  if not built and self:boots(gen) then
    local chains, cerr = self:boot_chains(kver)
    if not chains then
      return { kernel = kver, generator = gen.name, ok = false, missing = {}, error = cerr }
    end
    list, note = require("vfioinit.boot.chains").boot_images(chains, gen, self.ctx, kver, true)
  end
  if #list == 0 then list = { false } end  -- the generator's own image
  local rs = {}
  for _, c in ipairs(list) do
    local chain = c and not c.own and c or nil
    local images = chain and table.concat(chain.initrds or { chain.initramfs }, "\0")
    rs[#rs + 1] = self:verified_one(gen, kver, chain and (key .. "\0" .. images) or key, chain, need.modules)
  end
  if #rs == 1 then return rs[1] end
  local pick = rs[1]
  for _, r in ipairs(rs) do if not r.ok then pick = r; break end end
  local r = {}
  for k, v in pairs(pick) do r[k] = v end
  r.checked, r.note = rs, note
  for _, x in ipairs(rs) do r.ok = r.ok and x.ok end
  return r
end

-- One image's verify.check result, kept under `key` for the run.
function Run:verified_one(gen, kver, key, chain, modules)
  local f = self.facts.verified
  if not f[key] then
    local verify = require("vfioinit.verify")
    -- the image must carry vfioinit's modprobe.d file as it is now in root (a read of an
    -- absent one is nil: no stat first)
    local mp = gen.modprobe_in_image ~= false and core.fs.read(self.root, modprobe.FILE) or nil
    self.fingerprints = self.fingerprints or fingerprint.load(self.root)
    f[key] = verify.check(self.ctx, gen, kver, { modules = modules, modprobe_content = mp, facts = self,
      bind_script = bind.expected(self.root, gen), chain = chain,
      fingerprints = self.fingerprints, record = RECORDS[self.op],
      full = self.opts.full or self.reread[gen.name .. "\0" .. kver] })
  end
  return f[key]
end

-- A rebuilt image is read again in full, whatever its fingerprint says; a UKI's .cmdline
-- with it (the boot chains).
function Run:forget(gen, kver)
  self:boot_changed()
  local prefix = gen.name .. "\0" .. kver
  for key in pairs(self.facts.verified) do
    if key == prefix or key:sub(1, #prefix + 1) == prefix .. "\0" then self.facts.verified[key] = nil end
  end
  self.reread[prefix] = true
end

--- run:close(): release root's fd and the libkmod contexts (also done by their __gc).
function Run:close()
  for _, h in ipairs(self.held) do h:release() end
  for k, kctx in pairs(self.facts.kmod) do kctx:close(); self.facts.kmod[k] = nil end
  self.facts.lists, self.facts.modules, self.facts.details, self.facts.states, self.facts.asked = {}, {}, {}, {}, {}
end

M.Run = Run
return M
