--[[ vfioinit.boot.chains: what the firmware or bootloader actually loads for each kernel.

  local chains, err = chains.chains(run_or_ctx, kvers [, gens, loaders])   -- {[kver] = {chain...}}

A chain: {kernel=, kind="uki"|"image", path= (the UKI, or the kernel image), initramfs=
(the image the loader passes; a UKI's is the UKI itself), initrds= (every initrd the entry
names, in order), cmdline= (as the loader passes it; nil when unknown), cmdline_source=
(the file the loader reads it from), generated_from= (the file that file is generated
from, when one is), entry= ("grub: Debian GNU/Linux", "bls: X.conf", "esp: /efi/EFI/Linux/
x.efi", "preset: /etc/mkinitcpio.d/linux.preset default_uki", ...), loader="uefi"|"bls"|
"grub"|"generator" (the plugin that read it, lua/vfioinit/boot/loaders/), exists= (the UKI or initramfs is there), default= (an entry a loader starts
by default: GRUB's (bootcfg.grub_defaults), systemd-boot's loader.conf `default` glob),
default_by= (those loaders, "GRUB (<grub.cfg>)", "systemd-boot (<loader.conf>)"), generator=
(the generator whose rule names it), via= (a BLS entry GRUB reads through `blscfg`),
cmdline_line= (the line of cmdline_source that holds it, when known), cmdline_unknown= (why
the command line cannot be known, when a loader makes it from elsewhere)}.

Evidence, in the order docs/CONTRACT.md "Boot chains" gives (the one statement of it): the
UKIs the rebuild writes (the generators' own rule, kernel-install's layout=uki), then each
boot-loader plugin's chains by its declared `order`, else the generators' default images; a
UKI found twice is one chain.
]]
local places = require("vfioinit.boot.places")
local genuki = require("vfioinit.boot.genuki")
local machine = require("vfioinit.machine")

local M = {}

-- A UKI's sections, or nil: any error reading one UKI is that UKI's, not the run's (then
-- its file name decides). The reader is looked up per call: spec/33 stands in its own.
local function uki_info(ctx, path)
  local ok, info = pcall(require("vfioinit.boot.uki").read, ctx.root, path)
  if ok and type(info) == "table" then return info end
  return nil
end

local State = {}
State.__index = State

local function trim(s)
  if type(s) ~= "string" then return nil end
  return (s:gsub("%z+$", ""):gsub("^%s+", ""):gsub("%s+$", ""))
end

-- What is known of root once per run: kernel-install's view, systemd-boot's loader.conf
-- default, each plugin's `read` (its files parsed once), the UKIs read (each once).
-- `loaders`: a registry (lua/vfioinit/boot/init.lua; default: the built-in plugins).
function M.state(ctx, gens, loaders)
  -- the plugins look in the same boot places: each place is looked up once per state
  ctx = setmetatable({ places_memo = {} }, { __index = ctx })
  local st = setmetatable({ ctx = ctx, gens = gens or {}, ukis = {}, bases = {}, of = {} }, State)
  local ki, err = places.kernel_install(ctx)
  if not ki then return nil, err end
  st.ki, st.sdboot = ki, places.loader_default(ctx)
  st.loaders = {}
  for _, p in ipairs((loaders or require("vfioinit.boot").new()):all()) do
    if p.chains then
      st.loaders[#st.loaders + 1] = p
      if p.read then
        local s, rerr = p.read(ctx, st)
        if s == nil then return nil, rerr or (p.name .. ": read returned nothing") end
        st.of[p.name] = s
      end
    end
  end
  return st
end

-- A UKI's sections, read once per run (nil: unreadable).
function State:uki_info(path)
  if self.ukis[path] == nil then self.ukis[path] = uki_info(self.ctx, path) or false end
  return self.ukis[path] or nil
end

--- st:uki(kver, path, entry, loader, extra) -> the chain of a UKI (its .cmdline read).
function State:uki(kver, path, entry, loader, extra)
  local exists = self.ctx.stat(path) ~= nil
  local info = exists and self:uki_info(path) or nil
  local c = { kernel = kver, kind = "uki", path = path, initramfs = path, initrds = { path },
    cmdline = info and trim(info.cmdline), cmdline_source = path, entry = entry, loader = loader,
    exists = exists }
  for k, v in pairs(extra or {}) do if c[k] == nil then c[k] = v end end
  return c
end

--- st:uki_boots(path, kver) -> does this UKI boot kver? Its `.uname`, else its file name.
function State:uki_boots(path, kver)
  local info = self:uki_info(path)
  if info and trim(info.uname) then return trim(info.uname) == kver end
  local stem = path:match("([^/]*)$"):gsub("%.efi$", "")
  return ("-" .. stem .. "-"):find("-" .. kver .. "-", 1, true) ~= nil
end

--- st:pkgbase(kver): Arch names a kernel by its package (machine.pkgbase), read once per kernel.
function State:pkgbase(kver)
  if self.bases[kver] == nil then self.bases[kver] = machine.pkgbase(self.ctx.read, kver) or false end
  return self.bases[kver] or nil
end

--- st:names_kernel(path, kver) -> does a loader's path name kver's kernel (places.names_kernel)?
function State:names_kernel(path, kver)
  return places.names_kernel(path, kver, self:pkgbase(kver))
end

--- st:sdboot_default(name) -> systemd-boot's loader.conf `default` glob selects this entry
-- file: {"systemd-boot (<loader.conf>)"} | nil.
function State:sdboot_default(name)
  if self.sdboot and self.sdboot.match(name) then return { "systemd-boot (" .. self.sdboot.path .. ")" } end
  return nil
end

-- 1 and 2: the UKIs that are built for kver, existing or not yet.
local function planned(st, kver, add)
  for _, g in ipairs(st.gens) do
    local list, err = genuki.for_generator(st.ctx, g, kver)
    if not list then return nil, err end
    for _, u in ipairs(list) do
      add(st:uki(kver, u.path, u.entry, "uefi", { generator = u.generator, generated_from = u.generated_from }))
    end
  end
  local ki = st.ki
  if ki.layout == "uki" and ki.token then
    local p = ("%s/EFI/Linux/%s-%s.efi"):format(ki.boot_root, ki.token, kver)
    local cl = st.ctx.stat("/etc/kernel/cmdline") and "/etc/kernel/cmdline" or nil
    add(st:uki(kver, p, "kernel-install: layout=uki in " .. (ki.conf or "install.conf"), "uefi",
      { generated_from = cl }))
  end
  return true
end

-- Last: what the generators build when no loader configuration names the kernel.
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

--- for_kernel(state, kver) -> list of chains | nil, err: the planned UKIs, then each
-- plugin's chains in its `order`, else the generators' default images.
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
  for _, p in ipairs(st.loaders) do
    local got, perr = p.chains(st, kver)
    if not got then return nil, perr end
    for _, c in ipairs(got) do add(c) end
  end
  if #list == 0 then generator_default(st, kver, add) end
  return list
end

--- chains(run_or_ctx, kvers [, gens [, loaders]]) -> {[kver] = list of chains} | nil, err.
-- A run brings its ctx, generators and loaders; a bare ctx uses `gens` (none: no generator
-- rules) and `loaders` (none: the built-in plugins).
function M.chains(src, kvers, gens, loaders)
  local ctx = src.ctx or src
  if not gens and type(src.generators) == "function" then gens = src:generators() end
  loaders = loaders or src.loaders
  local st, err = M.state(ctx, gens, loaders)
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
  local core = require("vfioinit.core")
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
