--[[ vfioinit.boot.kinstall: kernels whose boot chain kernel-install builds, rebuilt with
`kernel-install add KVER <kernel image>`.

  local t = kinstall.target(ctx, chains, gen, kver)   -- nil, or what kernel-install builds
  local jobs = kinstall.split(run, gen, kernels)      -- rebuild jobs {gen=, kernels=}

A kernel's boot chain is kernel-install's (lua/vfioinit/boot/chains.lua) when
* layout=uki: the UKI `$BOOT_ROOT/EFI/Linux/<token>-<kver>.efi` (90-uki-copy.install);
* layout=bls: the BLS entry `<token>-<kver>.conf` 90-loaderentry.install writes, whose
  initrd is a copy kernel-install made under `$BOOT_ROOT/<token>/<kver>/`;
and that file is what boots the kernel instead of the generator's own image.

Then a rebuild runs kernel-install, as the distribution does (Debian's zz-systemd-boot and
initramfs post-update hooks, Fedora's kernel scriptlets):
* "instead" of the generator's own command when the generator has a kernel-install plugin
  (`50-dracut.install`, `50-mkinitcpio.install`, ..., not masked by /etc/kernel/install.d):
  kernel-install runs the generator itself (dracut 106's plugin builds the UKI with
  `--uefi` when uki_generator=dracut), and the generator's own image is not what boots;
* "after" the generator's own command otherwise (initramfs-tools): kernel-install has no
  way to build the initramfs and takes /boot/initrd.img-KVER (Debian's 55-/85-initrd.install),
  so the image is built and verified first, then copied into the entry.
The file kernel-install writes is the image of a wrapped generator (M.wrap), so
lua/vfioinit/rebuild.lua keeps it as `<file>.vfioinit-prev` until it verifies, exactly as
any image. kernel-install also rewrites the entry's `options` from /etc/kernel/cmdline.
]]
local places = require("vfioinit.boot.places")
local machine = require("vfioinit.machine")

local M = {}

M.COMMAND = "kernel-install"
-- how the UKI kernel-install builds comes out signed (vfioinit.signing's advice)
M.SIGN_HINT = "SecureBootPrivateKey= and SecureBootCertificate= in /etc/kernel/uki.conf (ukify), the "
  .. "generator's own signing option, or a plugin in /etc/kernel/install.d/ that signs"
M.PLUGIN_DIRS = { "/etc/kernel/install.d", "/usr/lib/kernel/install.d" }

-- Is kernel-install in root?
function M.installed(ctx)
  return machine.command(ctx, M.COMMAND) ~= nil
end

-- A plugin name as kernel-install runs it: /etc's file of that name wins; one that is a
-- link to /dev/null (or to nothing in root) or empty masks it.
local function plugin_runs(ctx, name)
  local etc = M.PLUGIN_DIRS[1] .. "/" .. name
  local st = ctx.stat(etc, true)
  if st then
    if st.type == "link" then
      local real = ctx.stat(etc)
      return real ~= nil and real.type == "file" and real.size > 0
    end
    return st.type == "file" and st.size > 0
  end
  st = ctx.stat(M.PLUGIN_DIRS[2] .. "/" .. name)
  return st ~= nil and st.type == "file"
end

-- The generator's kernel-install plugin that runs in root (its `active_evidence` under
-- an install.d directory), or nil.
function M.plugin(ctx, gen)
  for _, p in ipairs(gen.active_evidence or {}) do
    local name = p:match("^/usr/lib/kernel/install%.d/([^/]+)$") or p:match("^/etc/kernel/install%.d/([^/]+)$")
    if name and plugin_runs(ctx, name) then return M.PLUGIN_DIRS[2] .. "/" .. name end
  end
end

-- The BLS entry file names 90-loaderentry.install gives kver: `<token>-<kver>.conf`,
-- `<token>-<kver>+<tries>.conf` with boot counting.
local function entry_of(name, token, kver)
  local stem = token .. "-" .. kver
  return name == stem .. ".conf" or (name:sub(1, #stem + 1) == stem .. "+" and name:match("%.conf$") ~= nil)
end

-- Is this chain the one kernel-install writes for kver?
local function built_by(ki, c, kver)
  if c.kind == "uki" then
    return ki.layout == "uki" and c.entry:match("^kernel%-install:") ~= nil and "uki" or nil
  end
  if ki.layout == "bls" and c.loader == "bls" and ki.token then
    local name = c.entry:match("^bls: (.+)$")
    if name and entry_of(name, ki.token, kver) then return "bls" end
  end
end

--- target(ctx, chains, gen, kver) -> nil | {mode="uki"|"bls", path= (the file kernel-install
-- writes that boots: the UKI, or the entry's initrd), entry=, instead= (true: kernel-install
-- runs the generator itself), plugin=, argv=}. `chains` are kver's boot chains; nil when
-- the generator's own image is what boots, kernel-install is not in root or kernel-install
-- does not build what boots.
function M.target(ctx, chains, gen, kver)
  if not chains or not M.installed(ctx) then return nil end
  local c = require("vfioinit.boot.chains").boot_image(chains, gen, ctx, kver, true)
  if not c then return nil end
  local ki = places.kernel_install(ctx)
  local mode = ki and built_by(ki, c, kver)
  if not mode then return nil end
  local kimage = places.kernel_image(ctx, kver)
  if not kimage then return nil end
  local plugin = M.plugin(ctx, gen)
  return { mode = mode, path = c.initramfs, entry = c.entry, instead = plugin ~= nil, plugin = plugin,
    argv = { M.COMMAND, "add", kver, kimage } }
end

--- wrap(gen, targets) -> a generator that is `gen` except that, for each kernel of
-- `targets` ({[kver] = target}), its image is the file kernel-install writes and its
-- rebuild command is `kernel-install add` (lua/vfioinit/rebuild.lua runs it like any
-- generator's: previous file kept, new one verified, else put back).
function M.wrap(gen, targets)
  local w = setmetatable({ kinstall = targets, inner = gen, sign_hint = M.SIGN_HINT }, { __index = gen })
  function w.image_path(ctx, kver)
    local t = targets[kver]
    if t then return t.path end
    return gen.image_path(ctx, kver)
  end
  function w.rebuild_argv(_, kvers)
    local out = {}
    for _, k in ipairs(kvers) do
      local t = targets[k]
      if t then out[#out + 1] = { argv = t.argv, kernels = { k } } end
    end
    return out
  end
  return w
end

-- {[kver] = target} for gen's kernels on a run (only the generator whose images boot).
function M.targets(run, gen, kernels)
  local out, any = {}, false
  if not run:boots(gen) then return out, false end
  for _, k in ipairs(kernels) do
    local chains = run:boot_chains(k)
    local t = M.target(run.ctx, chains, gen, k)
    if t then out[k], any = t, true end
  end
  return out, any
end

--- split(run, gen, kernels) -> list of rebuild jobs {gen=, kernels=, after=}: the generator's
-- own command for the kernels kernel-install does not build or builds "after" it, then
-- kernel-install (a wrapped generator) for the kernels it builds; `after` when that job
-- copies what the first one built (a kernel whose own image failed is left out then).
function M.split(run, gen, kernels)
  local targets, any = M.targets(run, gen, kernels)
  if not any then return { { gen = gen, kernels = kernels } } end
  local own, ki, after = {}, {}, false
  for _, k in ipairs(kernels) do
    local t = targets[k]
    if not t or not t.instead then own[#own + 1] = k end
    if t then ki[#ki + 1] = k; after = after or not t.instead end
  end
  local jobs = {}
  if #own > 0 then jobs[#jobs + 1] = { gen = gen, kernels = own } end
  jobs[#jobs + 1] = { gen = M.wrap(gen, targets), kernels = ki, after = after or nil }
  return jobs
end

--- argvs(ctx, kernels, gens) -> the `kernel-install add` commands that rewrite every BLS
-- entry kernel-install wrote in root (after `revert` restored /etc/kernel/cmdline: their
-- `options` are not part of an image). A UKI's command line is in the image: `vfioinit
-- rebuild` rebuilds it, as every image after revert.
function M.argvs(ctx, kernels, gens)
  local bootchain = require("vfioinit.boot.chains")
  local out = {}
  if not M.installed(ctx) then return out end
  local st = bootchain.state(ctx, gens or {})
  if not st then return out end
  -- whether one of k's boot chains is the BLS entry kernel-install made
  local function bls_entry(k)
    for _, c in ipairs(bootchain.for_kernel(st, k)) do
      if built_by(st.ki, c, k) == "bls" then return true end
    end
    return false
  end
  for _, k in ipairs(kernels) do
    local kimage = places.kernel_image(ctx, k)
    if kimage and bls_entry(k) then out[#out + 1] = { M.COMMAND, "add", k, kimage } end
  end
  return out
end

return M
