--[[ vfioinit.bootchain: what the firmware or bootloader actually loads for each kernel.

  local chains, err = bootchain.chains(run_or_ctx, kvers [, gens])   -- {[kver] = {chain...}}

A chain: {kernel=, kind="uki"|"image", path= (the UKI, or the kernel image), initramfs=
(the image the loader passes; a UKI's is the UKI itself), initrds= (every initrd the entry
names, in order), cmdline= (as the loader passes it; nil when unknown), cmdline_source=
(the file the loader reads it from), generated_from= (the file that file is generated
from, when one is), entry= ("grub: Debian GNU/Linux", "bls: X.conf", "esp: /efi/EFI/Linux/
x.efi", "preset: /etc/mkinitcpio.d/linux.preset default_uki", ...), loader="uefi"|"bls"|
"grub"|"generator", exists= (the UKI or initramfs is there), default= (GRUB's default
entry; systemd-boot's: loader.conf's `default` glob), generator= (the generator whose rule names it), via= (a BLS entry GRUB reads
through `blscfg`)}.

Evidence, in this order (README "Boot chains"); a UKI found twice is one chain:
 1. UKIs the generators acted on build: their `uki_path` hook, else genuki's reading of
    mkinitcpio's `<preset>_uki` and dracut's `uefi=yes`;
 2. kernel-install `layout=uki`: `$BOOT_ROOT/EFI/Linux/<token>-<kver>.efi`;
 3. UKIs on an ESP/XBOOTLDR (`/efi`, `/boot`, `/boot/efi` + `EFI/Linux/*.efi`) whose
    `.uname` is the kernel (file name holding `-<kver>-`/`-<kver>.efi` when unreadable);
 4. BLS entries (`<same dirs>/loader/entries/*.conf`) whose `version` or `linux`/`efi`
    path names the kernel;
 5. grub.cfg menu entries (/boot/grub*/grub.cfg, then an ESP's EFI/<vendor>/grub.cfg) whose
    `linux` path is `vmlinuz-<kver>` (the default entry first);
 6. none of these: each generator's default image (loader "generator", no command line).
]]
local bootcfg = require "vfioinit.bootcfg"
local places = require "vfioinit.bootplaces"
local genuki = require "vfioinit.genuki"

local M = {}

-- vfioinit.uki (the PE reader) may be absent in this build: then a UKI's sections are
-- unknown and the file name decides. Any error reading one UKI is that UKI's, not the run's.
local function uki_info(ctx, path)
  local ok, uki = pcall(require, "vfioinit.uki")
  if not ok or type(uki) ~= "table" or type(uki.read) ~= "function" then return nil end
  local ok2, info = pcall(uki.read, ctx.root, path)
  if ok2 and type(info) == "table" then return info end
  return nil
end

local function trim(s)
  if type(s) ~= "string" then return nil end
  return (s:gsub("%z+$", ""):gsub("^%s+", ""):gsub("%s+$", ""))
end

-- What is known of root once per run: kernel-install's view, grub.cfg files, BLS
-- entries, the UKIs on the ESP (each read once).
function M.state(ctx, gens)
  local st = { ctx = ctx, gens = gens or {}, ukis = {} }
  local ki, err = places.kernel_install(ctx)
  if not ki then return nil, err end
  st.ki, st.grubs, st.sdboot = ki, {}, places.loader_default(ctx)
  for _, p in ipairs(places.grub_cfgs(ctx)) do
    local text, rerr = ctx.read(p)
    if rerr then return nil, rerr end
    if text then st.grubs[#st.grubs + 1] = { path = p, cfg = bootcfg.grub(text) } end
  end
  local bls, berr = M.read_bls(ctx)
  if not bls then return nil, berr end
  st.bls = bls
  return st
end

-- Every BLS entry: {path=, dir= (the partition it is relative to), name=, e=bootcfg.bls}.
function M.read_bls(ctx)
  local out = {}
  for _, d in ipairs(places.boot_dirs(ctx, "loader/entries")) do
    for _, n in ipairs(ctx.dir(d.path) or {}) do
      local path = d.path .. "/" .. n
      local fst = n:match("%.conf$") and ctx.stat(path)
      if fst and fst.type == "file" then
        local text, err = ctx.read(path)
        if not text then return nil, err or (path .. ": unreadable") end
        local e, msg, line = bootcfg.bls(text)
        if not e then return nil, ("%s:%d: %s"):format(path, line, msg) end
        out[#out + 1] = { path = path, dir = d.dir, name = n, e = e }
      end
    end
  end
  return out
end

local function uki_of(st, path)
  if st.ukis[path] == nil then st.ukis[path] = uki_info(st.ctx, path) or false end
  return st.ukis[path] or nil
end

local function uki_chain(st, kver, path, entry, loader, extra)
  local exists = st.ctx.stat(path) ~= nil
  local info = exists and uki_of(st, path) or nil
  local c = { kernel = kver, kind = "uki", path = path, initramfs = path, initrds = { path },
    cmdline = info and trim(info.cmdline), cmdline_source = path, entry = entry, loader = loader,
    exists = exists }
  for k, v in pairs(extra or {}) do if c[k] == nil then c[k] = v end end
  return c
end

-- 1 and 2: the UKIs that are built for kver, existing or not yet.
local function planned(st, kver, add)
  for _, g in ipairs(st.gens) do
    local list, err = genuki.for_generator(st.ctx, g, kver)
    if not list then return nil, err end
    for _, u in ipairs(list) do
      add(uki_chain(st, kver, u.path, u.entry, "uefi", { generator = u.generator, generated_from = u.generated_from }))
    end
  end
  local ki = st.ki
  if ki.layout == "uki" and ki.token then
    local p = ("%s/EFI/Linux/%s-%s.efi"):format(ki.boot_root, ki.token, kver)
    local cl = st.ctx.stat("/etc/kernel/cmdline") and "/etc/kernel/cmdline" or nil
    add(uki_chain(st, kver, p, "kernel-install: layout=uki in " .. (ki.conf or "install.conf"), "uefi",
      { generated_from = cl }))
  end
  return true
end

-- Does this UKI boot kver? Its `.uname`, else its file name.
local function uki_is(st, path, name, kver)
  local info = uki_of(st, path)
  if info and trim(info.uname) then return trim(info.uname) == kver end
  local stem = name:gsub("%.efi$", "")
  return ("-" .. stem .. "-"):find("-" .. kver .. "-", 1, true) ~= nil
end

-- systemd-boot's loader.conf `default` glob selects this entry file?
local function sdboot_default(st, name)
  return (st.sdboot and st.sdboot.match(name)) or nil
end

-- 3: systemd-boot's type #2 entries.
local function on_esp(st, kver, add)
  for _, d in ipairs(places.boot_dirs(st.ctx, "EFI/Linux")) do
    for _, n in ipairs(st.ctx.dir(d.path) or {}) do
      local path = d.path .. "/" .. n
      if n:lower():match("%.efi$") and uki_is(st, path, n, kver) then
        add(uki_chain(st, kver, path, "esp: " .. path, "uefi", { default = sdboot_default(st, n) }))
      end
    end
  end
end

-- 4: BLS type #1 entries.
local function from_bls(st, kver, add)
  local via
  for _, g in ipairs(st.grubs) do if g.cfg.blscfg then via = "grub blscfg (" .. g.path .. ")" end end
  for _, b in ipairs(st.bls) do
    local e = b.e
    local mine = e.version == kver or places.names_kernel(e.linux, kver) or places.names_kernel(e.efi, kver)
    if mine and e.efi then
      add(uki_chain(st, kver, places.on_partition(st.ctx, b.dir, e.efi), "bls: " .. b.name, "bls",
        { via = via, default = not via and sdboot_default(st, b.name) or nil }))
    elseif mine and e.linux then
      local initrds = {}
      for i, p in ipairs(e.initrd) do initrds[i] = places.on_partition(st.ctx, b.dir, p) end
      local ird = initrds[#initrds]
      add({ kernel = kver, kind = "image", path = places.on_partition(st.ctx, b.dir, e.linux), initramfs = ird,
        initrds = initrds, cmdline = e.options, cmdline_source = b.path, entry = "bls: " .. b.name, loader = "bls",
        exists = ird ~= nil and st.ctx.stat(ird) ~= nil, via = via,
        default = not via and sdboot_default(st, b.name) or nil,
        generated_from = st.ctx.stat("/etc/kernel/cmdline") and "/etc/kernel/cmdline" or nil })
    end
  end
end

-- 5: grub.cfg's menu entries, its default one first.
local function from_grub(st, kver, add)
  local ctx = st.ctx
  local src = ctx.stat("/etc/default/grub") and "/etc/default/grub" or nil
  for _, g in ipairs(st.grubs) do
    local def = bootcfg.grub_default(g.cfg)
    local list = {}
    for i, e in ipairs(g.cfg.entries) do
      if places.names_kernel(e.linux, kver) then
        local initrds = {}
        for k, p in ipairs(e.initrd) do initrds[k] = places.grub_path(ctx, p) end
        local ird = initrds[#initrds]
        local c = { kernel = kver, kind = "image", path = places.grub_path(ctx, e.linux), initramfs = ird,
          initrds = initrds, cmdline = e.cmdline, cmdline_source = g.path, generated_from = src,
          entry = "grub: " .. table.concat(e.titles, " > "), loader = "grub", default = i == def or nil,
          exists = ird ~= nil and ctx.stat(ird) ~= nil }
        table.insert(list, i == def and 1 or #list + 1, c)
      end
    end
    for _, c in ipairs(list) do add(c) end
  end
end

-- 6: what the generators build when no loader configuration names the kernel.
local function generator_default(st, kver, add)
  for _, g in ipairs(st.gens) do
    local img = g.image_path(st.ctx, kver)
    if img then
      add({ kernel = kver, kind = "image", path = places.kernel_image(st.ctx, kver), initramfs = img,
        initrds = { img }, entry = "generator: " .. g.name, loader = "generator", generator = g.name,
        exists = st.ctx.stat(img) ~= nil })
    end
  end
end

--- for_kernel(state, kver) -> list of chains | nil, err
function M.for_kernel(st, kver)
  local list, seen = {}, {}
  local function add(c)
    local key = c.kind == "uki" and c.path or nil
    if key and seen[key] then return end
    if key then seen[key] = true end
    list[#list + 1] = c
  end
  local ok, err = planned(st, kver, add)
  if not ok then return nil, err end
  on_esp(st, kver, add)
  from_bls(st, kver, add)
  from_grub(st, kver, add)
  if #list == 0 then generator_default(st, kver, add) end
  return list
end

--- chains(run_or_ctx, kvers [, gens]) -> {[kver] = list of chains} | nil, err.
-- A run brings its ctx and generators; a bare ctx uses `gens` (none: no generator rules).
function M.chains(src, kvers, gens)
  local ctx = src.ctx or src
  if not gens and type(src.generators) == "function" then gens = src:generators() end
  local st, err = M.state(ctx, gens)
  if not st then return nil, err end
  local out = {}
  for _, k in ipairs(kvers) do
    local list, lerr = M.for_kernel(st, k)
    if not list then return nil, lerr end
    out[k] = list
  end
  return out
end

-- The initramfs (a classic image, or a UKI read through its .initrd) a kernel's boot chain
-- loads instead of `gen`'s own image, or nil when some chain loads that image (a
-- generator that builds the UKI names it as its image). A UKI the generator does not
-- build (kernel-install's layout=uki, one put on the ESP by hand) is what verify then
-- reads: "ok" for an image nothing boots would be a lie. Only the generator that builds
-- what boots (`owner`) is judged by the chains: another installed generator's image is
-- its own business.
function M.boot_image(chains, gen, ctx, kver, owner)
  if not owner or not chains then return nil end
  local core = require "vfioinit.core"
  local own = gen.image_path(ctx, kver)
  local own_real = own and (core.fs.resolve(ctx.root, own) or own)
  local first
  for _, c in ipairs(chains) do
    if (c.kind == "image" or c.kind == "uki") and c.loader ~= "generator" and c.initramfs then
      local real = core.fs.resolve(ctx.root, c.initramfs) or c.initramfs
      if real == own_real then return nil end
      first = first or c
    end
  end
  return first
end

return M
