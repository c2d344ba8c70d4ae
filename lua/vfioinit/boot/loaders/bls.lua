-- Boot Loader Specification type #1 entries (`<dir>/loader/entries/*.conf` of each boot
-- directory, lua/vfioinit/boot/places.lua), read by systemd-boot and by GRUB's `blscfg`: an
-- entry whose `version` is the kernel, or whose `linux`/`efi` path names it, is a chain
-- (`efi`: the UKI it starts; `linux`: the kernel, its `initrd`s and `options`). Its default:
-- systemd-boot's loader.conf glob, or the grub.cfg that runs `blscfg` (the grub plugin's
-- state) naming it by id or title.
local bootcfg = require("vfioinit.boot.cfg")
local places = require("vfioinit.boot.places")
local trial = require("vfioinit.trial.record")

local M = { name = "bls", order = 26 }

-- read(ctx) -> every BLS entry {path=, dir= (the partition it is relative to), name=, e=bootcfg.bls}
-- | nil, "PATH:LINE: reason".
function M.read(ctx)
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

local function chain_of(st, kver, b, extra)
  local e, ctx = b.e, st.ctx
  if e.efi then
    return st:uki(kver, places.on_partition(ctx, b.dir, e.efi), "bls: " .. b.name, "bls", extra)
  end
  local initrds = {}
  for i, p in ipairs(e.initrd) do initrds[i] = places.on_partition(ctx, b.dir, p) end
  local ird = initrds[#initrds]
  local c = { kernel = kver, kind = "image", path = places.on_partition(ctx, b.dir, e.linux), initramfs = ird,
    initrds = initrds, cmdline = e.options, cmdline_source = b.path, cmdline_line = e.lines.options,
    entry = "bls: " .. b.name, loader = "bls", exists = ird ~= nil and ctx.stat(ird) ~= nil,
    generated_from = ctx.stat("/etc/kernel/cmdline") and "/etc/kernel/cmdline" or nil }
  for k, v in pairs(extra) do c[k] = v end
  return c
end

function M.chains(st, kver)
  local via, grub
  for _, g in ipairs(st.of.grub or {}) do
    if g.cfg.blscfg then via, grub = "grub blscfg (" .. g.path .. ")", g end
  end
  local out = {}
  for _, b in ipairs(st.of.bls or {}) do
    local e = b.e
    local mine = e.version == kver or st:names_kernel(e.linux, kver) or st:names_kernel(e.efi, kver)
    mine = mine and not trial.owns_entry(b.name)  -- a trial's entry is not what boots for good
    if mine and (e.efi or e.linux) then
      -- GRUB (blscfg) and systemd-boot may both read the entries: either one's default counts
      local by = {}
      if grub and blscfg_default(grub, b) then by[#by + 1] = "GRUB (" .. grub.path .. ")" end
      for _, l in ipairs(st:sdboot_default(b.name) or {}) do by[#by + 1] = l end
      out[#out + 1] = chain_of(st, kver, b, { via = via, default = by[1] and true or nil, default_by = by[1] and by or nil })
    end
  end
  return out
end

return M
