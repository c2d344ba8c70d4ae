--[[ vfioinit.genuki: the unified kernel images a generator builds for a kernel.

A generator that builds UKIs says where through its own hook, `gen.uki_path(ctx, kver)`
(docs/INTERNALS.md "Generator interface"). For a generator without the hook, this file
reads the two upstream rules itself, so boot chains know the UKI before it exists:
* mkinitcpio v41 (`mkinitcpio -P`, function `process_preset`): a preset file
  /etc/mkinitcpio.d/<name>.preset lists PRESETS; `<p>_uki=` (or the deprecated
  `<p>_efi_image=`) makes `-p <name>` build that UKI. The preset of a kernel is the one
  named after its pkgbase or its version, or whose `<p>_kver`/`ALL_kver` is the version or
  the path of its kernel image.
* dracut 059 (dracut.sh): `uefi=yes` in dracut.conf or a drop-in (the last one sourced
  wins) and no output file given: `<efidir>/Linux/linux-<kver>[-<machine-id>][-<BUILD_ID>].efi`,
  efidir = /efi/EFI when /efi is mounted (here: has EFI/), else /boot/efi/EFI when it
  exists, else /boot/EFI.
Each result: {path=, entry=, generator=, generated_from=}.
]]
local core = require "vfioinit.core"
local machine = require "vfioinit.machine"
local places = require "vfioinit.bootplaces"
local preset_files = require "vfioinit.generators.mkinitcpio_preset"

local M = {}

-- The last plain value of each assignment in a scanned shell file.
local function values(sc)
  local v = { lines = {} }
  for _, a in ipairs(sc) do
    if not a.append then v[a.name], v.lines[a.name] = a.array and a.items or a.value, a.line end
  end
  return v
end

local function scan(ctx, path)
  local text, err = ctx.read(path)
  if not text then return nil, err end
  local sc, msg, line = core.scan.shell(text)
  if not sc then return nil, ("%s:%d: %s"):format(path, line, msg) end
  return values(sc)
end

-- Is this preset file the one of kver?
local function preset_of(file, kver, base)
  if file.name == kver or (base and file.name == base) then return true end
  local k = preset_files.scalar(file.vars, "ALL_kver")
  return k ~= nil and (k == kver or places.names_kernel(k, kver))
end

-- mkinitcpio v41 reads the command line of a UKI from /etc/kernel/cmdline (else
-- /usr/lib/kernel/cmdline) and /etc/cmdline.d/*.conf.
local function mkinitcpio_cmdline_source(ctx)
  for _, p in ipairs({ "/etc/kernel/cmdline", "/usr/lib/kernel/cmdline", "/etc/cmdline.d" }) do
    if ctx.stat(p) then return p end
  end
end

function M.mkinitcpio(ctx, kver)
  local files, err = preset_files.read(ctx)
  if not files then return nil, err end
  local out, base = {}, machine.pkgbase(ctx.read, kver)
  for _, file in ipairs(files) do
    local file_ok = preset_of(file, kver, base)
    for _, p in ipairs(file.presets) do
      local kv = p.own_kver
      local mine = kv ~= nil and (kv == kver or places.names_kernel(kv, kver)) or (kv == nil and file_ok)
      if p.uki and mine then
        out[#out + 1] = { path = p.uki, entry = ("preset: %s %s_uki"):format(file.path, p.name), generator = "mkinitcpio",
          generated_from = mkinitcpio_cmdline_source(ctx) }
      end
    end
  end
  return out
end

-- dracut's configuration files in the order dracut sources them.
local function dracut_confs(ctx)
  local files, names = { "/etc/dracut.conf" }, {}
  local by = {}
  for _, d in ipairs({ "/usr/lib/dracut/dracut.conf.d", "/etc/dracut.conf.d" }) do
    for _, n in ipairs(ctx.dir(d) or {}) do
      if n:match("%.conf$") then
        if not by[n] then names[#names + 1] = n end
        by[n] = d .. "/" .. n       -- /etc's file of the same name wins
      end
    end
  end
  table.sort(names)
  for _, n in ipairs(names) do files[#files + 1] = by[n] end
  return files
end

function M.dracut(ctx, kver)
  local uefi
  for _, p in ipairs(dracut_confs(ctx)) do
    local v, err = scan(ctx, p)
    if err then return nil, err end
    if v and type(v.uefi) == "string" then uefi = { value = v.uefi, file = p } end
  end
  if not uefi or uefi.value ~= "yes" then return {} end
  local efidir = "/boot/EFI"
  if places.is_dir(ctx, "/efi/EFI") then efidir = "/efi/EFI"
  elseif places.is_dir(ctx, "/boot/efi/EFI") then efidir = "/boot/efi/EFI" end
  local mid = (ctx.read("/etc/machine-id") or ""):match("^%s*(%x+)")
  local os = ctx.read("/etc/os-release") or ctx.read("/usr/lib/os-release") or ""
  local build = os:match("\nBUILD_ID=\"?([^\"\n]*)") or os:match("^BUILD_ID=\"?([^\"\n]*)")
  local name = "linux-" .. kver .. (mid and ("-" .. mid) or "") .. (build and build ~= "" and ("-" .. build) or "")
  return { { path = efidir .. "/Linux/" .. name .. ".efi", entry = "dracut: uefi=yes in " .. uefi.file,
    generator = "dracut", generated_from = ctx.stat("/etc/kernel/cmdline") and "/etc/kernel/cmdline" or nil } }
end

-- for_generator(ctx, gen, kver) -> list | nil, err: the rules above for mkinitcpio and
-- dracut (every preset's UKI, with the line that asks for it), else the generator's own
-- `uki_path` hook (one UKI per kernel), else none. The built-in generators have the hook
-- too (rebuild and verify use it); spec/32 and spec/33 check the two agree.
function M.for_generator(ctx, gen, kver)
  if M[gen.name] and gen.name ~= "for_generator" then return M[gen.name](ctx, kver) end
  if type(gen.uki_path) == "function" then
    local p, err = gen.uki_path(ctx, kver)
    if not p then
      if err then return nil, err end
      return {}
    end
    if type(p) ~= "string" or p:sub(1, 1) ~= "/" then
      return nil, ("%s: uki_path gave %s for %s, not an absolute path"):format(gen.name, tostring(p), kver)
    end
    return { { path = p, entry = gen.name .. ": uki", generator = gen.name } }
  end
  return {}
end

return M
