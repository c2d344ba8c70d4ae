--[[ vfioinit.bootchain: what the firmware or bootloader actually loads for each kernel.

  local chains, err = bootchain.chains(run_or_ctx, kvers [, gens])   -- {[kver] = {chain...}}

A chain: {kernel=, kind="uki"|"image", path= (the UKI, or the kernel image), initramfs=
(the image the loader passes; a UKI's is the UKI itself), initrds= (every initrd the entry
names, in order), cmdline= (as the loader passes it; nil when unknown), cmdline_source=
(the file the loader reads it from), generated_from= (the file that file is generated
from, when one is), entry= ("grub: Debian GNU/Linux", "bls: X.conf", "esp: /efi/EFI/Linux/
x.efi", "preset: /etc/mkinitcpio.d/linux.preset default_uki", ...), loader="uefi"|"bls"|
"grub"|"generator", exists= (the UKI or initramfs is there), default= (an entry a loader starts
by default: GRUB's (bootcfg.grub_defaults), systemd-boot's loader.conf `default` glob),
default_by= (those loaders, "GRUB (<grub.cfg>)", "systemd-boot (<loader.conf>)"), generator=
(the generator whose rule names it), via= (a BLS entry GRUB reads through `blscfg`)}.

Evidence, in the order docs/CONTRACT.md "Boot chains" gives (the one statement of it); a UKI
found twice is one chain.
]]
local bootcfg = require "vfioinit.bootcfg"
local trial = require "vfioinit.trial.record"
local places = require "vfioinit.bootplaces"
local genuki = require "vfioinit.genuki"
local machine = require "vfioinit.machine"

local M = {}

-- A UKI's sections, or nil: any error reading one UKI is that UKI's, not the run's (then
-- its file name decides). The reader is looked up per call: spec/33 stands in its own.
local function uki_info(ctx, path)
  local ok, info = pcall(require("vfioinit.uki").read, ctx.root, path)
  if ok and type(info) == "table" then return info end
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
    if text then
      local env, eerr = places.grubenv(ctx, p)
      if not env then return nil, eerr end
      st.grubs[#st.grubs + 1] = { path = p, cfg = bootcfg.grub(text), env = env }
    end
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
      if n:lower():match("%.efi$") and not trial.owns_entry(n) and uki_is(st, path, n, kver) then
        local def = sdboot_default(st, n)
        add(uki_chain(st, kver, path, "esp: " .. path, "uefi",
          { default = def, default_by = def and { "systemd-boot (" .. st.sdboot.path .. ")" } or nil }))
      end
    end
  end
end

-- Arch names a kernel by its package (machine.pkgbase), read once per kernel.
local function pkgbase(st, kver)
  st.bases = st.bases or {}
  if st.bases[kver] == nil then st.bases[kver] = machine.pkgbase(st.ctx.read, kver) or false end
  return st.bases[kver] or nil
end

-- The BLS entry GRUB's blscfg starts by default: grub.cfg's `default` (grubenv's
-- `next_entry`, then `saved_entry` or the literal) names it by its id (the file name
-- without .conf, what grubby and grub2-set-default write) or its title. An index counts
-- in blscfg's own sort order, which is not read here: no entry is then called the default.
local function blscfg_default(g, b)
  local specs = {}
  if g.cfg.next_entry and (g.env.next_entry or "") ~= "" then specs[1] = g.env.next_entry end
  if not (g.cfg.default or ""):match("next_entry") then
    specs[#specs + 1] = bootcfg.grub_expand(g.cfg.default or "0", g.env)
  end
  local id = b.name:gsub("%.conf$", "")
  for _, spec in ipairs(specs) do
    local head = bootcfg.split_default(spec)
    if head == id or (b.e.title and head == b.e.title) then return true end
  end
  return nil
end

-- 4: BLS type #1 entries.
local function from_bls(st, kver, add)
  local via, grub
  for _, g in ipairs(st.grubs) do if g.cfg.blscfg then via, grub = "grub blscfg (" .. g.path .. ")", g end end
  local base = pkgbase(st, kver)
  for _, b in ipairs(st.bls) do
    local e = b.e
    local mine = e.version == kver or places.names_kernel(e.linux, kver, base) or places.names_kernel(e.efi, kver, base)
    mine = mine and not trial.owns_entry(b.name)
    -- GRUB (blscfg) and systemd-boot may both read the entries: either one's default counts
    local by = {}
    if grub and blscfg_default(grub, b) then by[#by + 1] = "GRUB (" .. grub.path .. ")" end
    if sdboot_default(st, b.name) then by[#by + 1] = "systemd-boot (" .. st.sdboot.path .. ")" end
    local default, default_by = by[1] and true or nil, by[1] and by or nil
    if mine and e.efi then
      add(uki_chain(st, kver, places.on_partition(st.ctx, b.dir, e.efi), "bls: " .. b.name, "bls",
        { via = via, default = default, default_by = default_by }))
    elseif mine and e.linux then
      local initrds = {}
      for i, p in ipairs(e.initrd) do initrds[i] = places.on_partition(st.ctx, b.dir, p) end
      local ird = initrds[#initrds]
      add({ kernel = kver, kind = "image", path = places.on_partition(st.ctx, b.dir, e.linux), initramfs = ird,
        initrds = initrds, cmdline = e.options, cmdline_source = b.path, entry = "bls: " .. b.name, loader = "bls",
        exists = ird ~= nil and st.ctx.stat(ird) ~= nil, via = via, default = default, default_by = default_by,
        generated_from = st.ctx.stat("/etc/kernel/cmdline") and "/etc/kernel/cmdline" or nil })
    end
  end
end

-- 5: grub.cfg's menu entries, its default ones first (bootcfg.grub_defaults: grubenv's
-- next_entry, then the default).
local function from_grub(st, kver, add)
  local ctx = st.ctx
  local src = ctx.stat("/etc/default/grub") and "/etc/default/grub" or nil
  local base = pkgbase(st, kver)
  for _, g in ipairs(st.grubs) do
    local defs = {}
    for _, i in ipairs(bootcfg.grub_defaults(g.cfg, g.env)) do defs[i] = true end
    local list, first = {}, 0
    for i, e in ipairs(g.cfg.entries) do
      if places.names_kernel(e.linux, kver, base) and not trial.owns_entry(e.id) then
        local initrds = {}
        for k, p in ipairs(e.initrd) do initrds[k] = places.grub_path(ctx, p) end
        local ird = initrds[#initrds]
        local c = { kernel = kver, kind = "image", path = places.grub_path(ctx, e.linux), initramfs = ird,
          initrds = initrds, cmdline = e.cmdline, cmdline_source = g.path, generated_from = src,
          entry = "grub: " .. table.concat(e.titles, " > "), loader = "grub", default = defs[i],
          default_by = defs[i] and { "GRUB (" .. g.path .. ")" } or nil,
          exists = ird ~= nil and ctx.stat(ird) ~= nil }
        if defs[i] then first = first + 1 end
        table.insert(list, defs[i] and first or #list + 1, c)
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

-- What boots kver, for `gen`'s verification: boot_images(chains, gen, ctx, kver, owner) ->
-- list of chains whose initramfs (a classic image, or a UKI read through its .initrd) must
-- be checked, and a note; an empty list: `gen`'s own image. Only the generator that builds
-- what boots (`owner`) is judged by the chains: another installed generator's image is its
-- own business.
--  * A loader's default entry that boots kver (GRUB's `default`, systemd-boot's loader.conf)
--    is what the machine starts: its image is checked, even when another entry loads the
--    generator's. Several loaders with a default (GRUB and systemd-boot: which one the
--    firmware starts is in NVRAM, not in root): each one's, and the note says so.
--  * No loader starts kver by default: `gen`'s image when some entry loads it, else the
--    first entry's (a UKI the generator does not build, kernel-install's layout=uki, one put
--    on the ESP by hand): "ok" for an image nothing boots would be a lie.
-- A chain loading the generator's own image comes back with own = true.
function M.boot_images(chains, gen, ctx, kver, owner)
  if not owner or not chains then return {} end
  local core = require "vfioinit.core"
  local own = gen.image_path(ctx, kver)
  local own_real = own and (core.fs.resolve(ctx.root, own) or own)
  local function is_own(c) return (core.fs.resolve(ctx.root, c.initramfs) or c.initramfs) == own_real end
  local defaults, loaders, seen, first = {}, {}, {}, nil
  for _, c in ipairs(chains) do
    if c.loader ~= "generator" and c.initramfs then
      first = first or c
      if c.default then
        local real = core.fs.resolve(ctx.root, c.initramfs) or c.initramfs
        if not seen[real] then seen[real] = true; defaults[#defaults + 1] = c end
        for _, l in ipairs(c.default_by or {}) do
          if not loaders[l] then loaders[l] = true; loaders[#loaders + 1] = l end
        end
      end
    end
  end
  if #defaults > 0 then
    local out, mine = {}, 0
    for _, c in ipairs(defaults) do
      local o = { own = is_own(c) or nil }
      for k, v in pairs(c) do o[k] = v end
      out[#out + 1] = o
      if o.own then mine = mine + 1 end
    end
    local note = #loaders > 1 and ("%s each start kernel %s by default, and which one the firmware starts cannot "
      .. "be told from the root: the default entry of each is checked"):format(table.concat(loaders, " and "), kver) or nil
    if mine == #out and not note then return {} end
    return out, note
  end
  for _, c in ipairs(chains) do
    if c.loader ~= "generator" and c.initramfs and is_own(c) then return {} end
  end
  return { first }
end

-- The first chain boot_images checks instead of the generator's own image, or nil.
function M.boot_image(chains, gen, ctx, kver, owner)
  for _, c in ipairs((M.boot_images(chains, gen, ctx, kver, owner))) do
    if not c.own then return c end
  end
  return nil
end

return M
