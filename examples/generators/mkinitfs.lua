--- Alpine Linux's mkinitfs as a vfioinit generator, written as a user would:
-- it lives outside lua/vfioinit/generators/ and is added at run time with
--
--   local vfioinit = require "vfioinit"
--   vfioinit.register_generator(dofile("examples/generators/mkinitfs.lua"))
--
-- It implements the generator interface of docs/INTERNALS.md ("Generator interface")
-- and uses nothing but that interface, the ctx it is handed and the documented C core
-- scanner `vfioinit.core.scan.shell`.
-- @module mkinitfs

-- Upstream facts this relies on (alpinelinux/mkinitfs mkinitfs.in, aports
-- main/mkinitfs/mkinitfs.trigger):
-- * mkinitfs sources /etc/mkinitfs/mkinitfs.conf as shell; `features="..."` names the
--   features to build in (stock: "ata base ide scsi usb virtio ext4").
-- * For each feature F, /etc/mkinitfs/features.d/F.modules lists kernel modules, one
--   shell glob a line, relative to /lib/modules/<kver> (leading `/` stripped; blank
--   lines and lines starting with `#` skipped; a directory means every file below it).
--   Dependencies come from modules.dep. So VFIO needs a `vfio.modules` feature file
--   and `vfio` in `features=`.
-- * features.d/base.files copies /etc/modprobe.d/*.conf into the image, so
--   /etc/modprobe.d/vfioinit.conf (written with device IDs) is inside every image
--   built with the `base` feature.
-- * The apk trigger runs `mkinitfs -o /boot/initramfs-<flavor> <kver>` for each
--   /usr/share/kernel/<flavor>/kernel.release; without -o the image is
--   /boot/initramfs-<flavor> with <flavor> = the kernel version after its last `-`
--   ("vanilla" when there is none).
-- * initramfs-init loads the modules named by `modules=` on the kernel command line
--   and whatever udev/mdev coldplug asks for; there is no early-load list inside the
--   image, so verify checks the .ko files are there (early_modules is not defined)
--   and the plan carries a note saying how vfio-pci gets loaded early.
local core = require "vfioinit.core"

local M = {
  name = "mkinitfs",
  command = "mkinitfs",
  config = "/etc/mkinitfs/mkinitfs.conf",
  feature = "vfio",
  feature_file = "/etc/mkinitfs/features.d/vfio.modules",
  -- the apk trigger is not a file of its own; Alpine is recognised by os-release
  active_evidence = {},
  distro_default = { "alpine" },
  image_want = {},
}

-- Where the VFIO modules live in every kernel since 3.6, for roots without a
-- modules.dep (provisioning ahead of the kernel).
M.KNOWN = {
  vfio = "kernel/drivers/vfio/vfio.ko",
  vfio_iommu_type1 = "kernel/drivers/vfio/vfio_iommu_type1.ko",
  vfio_pci = "kernel/drivers/vfio/pci/vfio-pci.ko",
  vfio_virqfd = "kernel/drivers/vfio/vfio_virqfd.ko",
}

local function norm(name) return (name:gsub("-", "_")) end

local function lines_of(text)
  local t = {}
  for l in text:gmatch("([^\n]*)\n") do t[#t + 1] = l end
  local rest = text:match("([^\n]+)$")
  if rest then t[#t + 1] = rest end
  return t
end

-- The module a features.d line names ("kernel/drivers/vfio/pci/vfio-pci.ko*" ->
-- "vfio_pci"), or nil for comments, blanks and directory globs.
local function module_of(line)
  if line:match("^%s*$") or line:match("^%s*#") then return nil end
  local base = line:match("([^/%s]+)%s*$")
  if not base then return nil end
  local name = base:match("^(.-)%.ko[%w%.%*]*$")
  return name and norm(name) or nil
end

-- modules.dep of one kernel -> { [name] = "kernel/.../name.ko" } (suffix dropped).
local function dep_paths(ctx, kver)
  local text = ctx.read("/lib/modules/" .. kver .. "/modules.dep")
  if not text then text = ctx.read("/usr/lib/modules/" .. kver .. "/modules.dep") end
  if not text then return nil end
  local paths = {}
  for path in text:gmatch("([^\n:]+):[^\n]*") do
    local p = path:gsub("^/lib/modules/[^/]+/", ""):gsub("^/usr/lib/modules/[^/]+/", "")
    local dir_base, name = p:match("^(.-([^/]+)%.ko)[%.%w]*$")
    if dir_base then paths[norm(name)] = paths[norm(name)] or dir_base end
  end
  return paths
end

--- edit_text(text, want, opts) -> new text of features.d/vfio.modules | nil, msg, line
-- `want` = module names; `opts.paths` = { [name] = "kernel/.../name.ko" }. Lines already
-- naming a wanted module are kept (with their glob); missing ones are appended as
-- "<path>*" (the `*` matches .ko.gz/.ko.xz/.ko.zst as well).
function M.edit_text(text, want, opts)
  opts = opts or {}
  text = text or ""
  local nul = text:find("\0", 1, true)
  if nul then
    return nil, "binary file (NUL byte), not a module list", select(2, text:sub(1, nul):gsub("\n", "")) + 1
  end
  local have = {}
  for _, l in ipairs(lines_of(text)) do
    local m = module_of(l)
    if m then have[m] = true end
  end
  local add = {}
  for _, w in ipairs(want or {}) do
    local n = norm(w)
    if not have[n] then
      local path = (opts.paths or {})[n] or M.KNOWN[n]
      if not path then return nil, ("module %s: no path known (not in any kernel's modules.dep)"):format(w), 0 end
      add[#add + 1] = path .. "*"
      have[n] = true
    end
  end
  if #add == 0 then return text end
  local out = text
  if out == "" then
    out = "# VFIO modules for the initramfs (feature \"vfio\" of /etc/mkinitfs/mkinitfs.conf),\n"
      .. "# written by vfioinit; `vfioinit revert` removes this file.\n"
  elseif out:sub(-1) ~= "\n" then
    out = out .. "\n"
  end
  return out .. table.concat(add, "\n") .. "\n"
end

--- edit_conf(text, feature) -> new mkinitfs.conf text | nil, msg, line
-- Adds `feature` to the last `features=` assignment (the one mkinitfs sees), changing
-- only the bytes inside its value.
function M.edit_conf(text, feature)
  feature = feature or M.feature
  local list, msg, line = core.scan.shell(text)
  if not list then return nil, msg, line end
  local a
  for _, s in ipairs(list) do
    if s.name == "features" and not s.array then a = s end
  end
  if not a then return nil, "no features= assignment (mkinitfs would build no feature in)", 1 end
  for _, it in ipairs(a.items or {}) do
    if it.value == feature then return text end
  end
  local stmt = text:sub(a.first, a.last)
  if a.quote == '"' or a.quote == "'" then
    -- the statement ends with its closing quote: insert before it
    local sep = (a.value == "" or a.value:match("%s$")) and "" or " "
    return text:sub(1, a.last - 1) .. sep .. feature .. text:sub(a.last)
  end
  local raw = stmt:sub(#"features=" + 1)
  if raw:find("[\"'\\`]") then
    return nil, "features= value mixes quoting; write it as features=\"...\"", a.line
  end
  local value = raw == "" and feature or (raw .. " " .. feature)
  return text:sub(1, a.first - 1) .. 'features="' .. value .. '"' .. text:sub(a.last + 1)
end

function M.edits(ctx)
  local conf, err = ctx.read(M.config)
  if err then return nil, err end
  if conf == nil then
    return nil, M.config .. ":1: missing; mkinitfs cannot build an image without it (apk add mkinitfs)"
  end
  local conf_after, msg, line = M.edit_conf(conf, M.feature)
  if not conf_after then return nil, ("%s:%d: %s"):format(M.config, line or 0, msg) end

  -- module paths from every selected kernel's modules.dep
  local paths = {}
  for _, k in ipairs(ctx.kernels or {}) do
    for name, p in pairs(dep_paths(ctx, k) or {}) do paths[name] = paths[name] or p end
  end
  local before, ferr = ctx.read(M.feature_file)
  if ferr then return nil, ferr end
  local after, fmsg, fline = M.edit_text(before, ctx.modules, { paths = paths })
  if not after then return nil, ("%s:%d: %s"):format(M.feature_file, fline or 0, fmsg) end

  local notes = {
    "mkinitfs has no early-load list: vfio-pci claims a device early through "
      .. "/etc/modprobe.d softdeps (vfioinit --ids) or `modules=vfio,vfio_iommu_type1,vfio_pci` "
      .. "on the kernel command line",
  }
  if ctx.modprobe_file then
    local has_base = false
    for w in (conf_after:match('features="([^"]*)"') or ""):gmatch("%S+") do
      if w == "base" then has_base = true end
    end
    if not has_base then
      notes[#notes + 1] = "feature \"base\" is off, so " .. ctx.modprobe_file .. " is not copied into the image"
    end
  end
  local list = {}
  if after ~= (before or "") then
    list[#list + 1] = { path = M.feature_file, before = before, after = after }
  end
  local changing = #list > 0 or conf_after ~= conf
  list[#list + 1] = { path = M.config, before = conf, after = conf_after, notes = changing and notes or nil }
  return list
end

-- /usr/share/kernel/<flavor>/kernel.release names the kernel each flavor installs.
local function flavor_of(ctx, kver)
  for _, f in ipairs(ctx.dir and ctx.dir("/usr/share/kernel") or {}) do
    local rel = ctx.read("/usr/share/kernel/" .. f .. "/kernel.release")
    if rel and rel:gsub("%s+$", "") == kver then return f end
  end
  local f = kver:match("%-([^-]+)$")
  return f or "vanilla"
end

function M.image_path(ctx, kver)
  return "/boot/initramfs-" .. flavor_of(ctx, kver)
end

function M.rebuild_argv(ctx, kvers)
  local cmds = {}
  for _, k in ipairs(kvers) do
    cmds[#cmds + 1] = { argv = { "mkinitfs", "-o", M.image_path(ctx, k), k }, kernels = { k } }
  end
  return cmds
end

return M
