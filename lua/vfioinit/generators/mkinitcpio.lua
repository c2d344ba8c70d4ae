-- mkinitcpio: put the VFIO modules into the MODULES array of every config the
-- presets build with, before any GPU driver.
--
-- What upstream mkinitcpio v41 does (mkinitcpio, functions):
-- * `mkinitcpio` without -c reads /etc/mkinitcpio.conf, then every regular
--   `*.conf` in /etc/mkinitcpio.conf.d (the config path + ".d"), sorted with
--   `sort -V`, all concatenated and sourced as one file.
-- * `-c FILE` (what a preset's `ALL_config` / `<preset>_config` turns into)
--   reads FILE alone: the drop-ins are ignored (_optconfd=0).
-- * arrayize_config turns a string `MODULES="a b"` into words on spaces, and
--   parse_config strips a trailing `?` (optional module) and maps `-` to `_`.
-- * The image holds the build's config as `buildconfig` and the modules it will
--   load early as `MODULES="..."` in `config` (read by `init`, `modprobe -qab`);
--   the systemd hook also writes `etc/modules-load.d/MODULES.conf`.
-- The list editing itself is vfioinit.edit.shellvar (shared with dracut.lua); this file
-- holds mkinitcpio's policy: which files a build sources, MODULES and HOOKS, presets.
local machine = require("vfioinit.machine")
local places = require("vfioinit.boot.places")
local engine = require("vfioinit.edit.shellvar")
local util = require("vfioinit.util")
local bind = require("vfioinit.bind")
local preset_files = require("vfioinit.generators.mkinitcpio_preset")
local context = require("vfioinit.context")

local M = require("vfioinit.generators").identity("mkinitcpio", {
  image_want = { "config", "buildconfig", "etc/modules-load.d/MODULES.conf" },
  -- how its UKI comes out signed (vfioinit.signing's advice)
  sign_hint = "a post hook in /etc/initcpio/post/ that signs the UKI (sbctl installs /usr/lib/initcpio/post/sbctl)",
})

local CONF = "/etc/mkinitcpio.conf"
local CONF_D = "/etc/mkinitcpio.conf.d"

-- Module name as mkinitcpio compares it: `-` is `_`, a trailing `?` marks it optional.
local norm = engine.norm

local function default_gpu() return engine.set_of(machine.GPU) end

---------------------------------------------------------------------------
-- HOOKS: make sure `modconf` (which installs /etc/modprobe.d) is present.

local function hooks_edit(files, scans)
  local eff = engine.effective(scans, "HOOKS")
  local words = engine.words(eff)
  if #words == 0 then return nil, "no HOOKS" end
  local anchor_after, anchor_before
  for _, w in ipairs(words) do
    local v = w.it.value
    if v == "modconf" then return nil end
    if (v == "udev" or v == "systemd") and not anchor_after then anchor_after = w end
    if v == "block" and not anchor_before then anchor_before = w end
  end
  local e
  if anchor_after then
    e = engine.insert_after(files[anchor_after.fi].text, anchor_after.a, anchor_after.it, { "modconf" })
    e.fi = anchor_after.fi
  elseif anchor_before then
    e = engine.insert_before(files[anchor_before.fi].text, anchor_before.a, anchor_before.it, { "modconf" })
    e.fi = anchor_before.fi
  else
    local w = words[#words]
    e = engine.insert_after(files[w.fi].text, w.a, w.it, { "modconf" })
    e.fi = w.fi
  end
  return e
end

-- HOOKS: the bind hook (lua/vfioinit/bind/init.lua) right before `udev`, else after the
-- first hook (`base`, or `systemd` without it). Under busybox's init its run_earlyhook
-- runs before every hook's run_hook (udev's coldplug), in HOOKS order; under the
-- `systemd` hook systemd is init and runs no runtime hook: the unit the install hook
-- adds runs the same function (M.bind below).
local function bind_hook_edit(files, scans)
  local words = engine.words(engine.effective(scans, "HOOKS"))
  if #words == 0 then return nil, (files[1].path or "config") .. ": no HOOKS array: --device needs one with udev or systemd" end
  local anchor
  for _, w in ipairs(words) do
    local v = w.it.value
    if v == bind.NAME then return false end
    if v == "udev" and not anchor then anchor = w end
  end
  local e
  if anchor then
    e = engine.insert_before(files[anchor.fi].text, anchor.a, anchor.it, { bind.NAME })
  else
    anchor = words[1]
    e = engine.insert_after(files[anchor.fi].text, anchor.a, anchor.it, { bind.NAME })
  end
  e.fi = anchor.fi
  return e
end

-- Edit a build: the files mkinitcpio sources together, in order (files[1] gets
-- a new MODULES line when none exists). Returns true, notes or nil, err, line.
local function edit_build(files, want, gpu, opts)
  local notes = {}
  local scans0, serr0, sline0, smsg0 = engine.scan_all(files)
  if not scans0 then return nil, serr0, sline0, smsg0 end
  local vars = { { name = "MODULES", hint = "MODULES=(...)" } }
  if opts.modconf or opts.bind then vars[2] = { name = "HOOKS", hint = "HOOKS=(...)" } end
  local uerr, uline, umsg = engine.unsafe(files, scans0, vars)
  if uerr then return nil, uerr, uline, umsg end
  local ok, err, line, msg = engine.run(files, "MODULES", want, gpu, {
    create = function(names)
      return engine.append_line(files, "MODULES=(" .. table.concat(names, " ") .. ")")
    end,
  })
  if not ok then return nil, err, line, msg end
  if opts.modconf then
    local scans, serr, sline, smsg = engine.scan_all(files)
    if not scans then return nil, serr, sline, smsg end
    local e, why = hooks_edit(files, scans)
    if e then
      files[e.fi].text = engine.apply(files[e.fi].text, e)
      notes[#notes + 1] = ("%s: added the modconf hook to HOOKS so /etc/modprobe.d is in the image")
        :format(files[e.fi].path or "config")
    elseif why then
      notes[#notes + 1] = "no HOOKS array found: make sure the modconf hook runs"
    end
  end
  if opts.bind then
    local scans, serr, sline, smsg = engine.scan_all(files)
    if not scans then return nil, serr, sline, smsg end
    local e, why = bind_hook_edit(files, scans)
    if e == nil then return nil, why end
    if e then files[e.fi].text = engine.apply(files[e.fi].text, e) end
  end
  return true, notes
end

-- Pure: edit one config text. opts = {gpu=set, modconf=bool}.
-- Returns new text, notes | nil, msg, line.
function M.edit_text(text, want, opts)
  opts = opts or {}
  local files = { { text = text } }
  local ok, err, line, msg = edit_build(files, want, opts.gpu or default_gpu(), opts)
  if not ok then return nil, msg or err, line end
  return files[1].text, err
end

---------------------------------------------------------------------------
-- Presets.

-- List of {name=, path=, vars=, presets={ {name=, config=, image=, uki=, kver=...} } }
-- (lua/vfioinit/generators/mkinitcpio_preset.lua).
local read_presets = preset_files.read
M.read_presets = read_presets

local function dropins(ctx)
  local names = {}
  for _, n in ipairs(ctx.dir(CONF_D) or {}) do
    if n:match("%.conf$") then
      local st = ctx.stat and ctx.stat(CONF_D .. "/" .. n)
      if not st or st.type == "file" then names[#names + 1] = n end
    end
  end
  table.sort(names, machine.version_less)
  return names
end

-- The builds: lists of config paths sourced together.
local function builds(ctx)
  local presets, err = read_presets(ctx)
  if not presets then return nil, err end
  local list, seen, default = {}, {}, #presets == 0
  for _, pf in ipairs(presets) do
    if #pf.presets == 0 then default = true end
    for _, p in ipairs(pf.presets) do
      if p.config and p.config ~= "" then
        if not seen[p.config] then
          seen[p.config] = true
          list[#list + 1] = { p.config }
        end
      else
        default = true
      end
    end
  end
  if default then
    local b = { CONF }
    for _, n in ipairs(dropins(ctx)) do b[#b + 1] = CONF_D .. "/" .. n end
    table.insert(list, 1, b)
  end
  return list
end
M.builds = builds

function M.edits(ctx)
  local want = ctx.modules or {}
  local gpu = ctx.gpu or default_gpu()
  local bl, err = builds(ctx)
  if not bl then return nil, err end
  local texts, before, seen_order = {}, {}, {}
  for _, b in ipairs(bl) do
    for i, path in ipairs(b) do
      if texts[path] == nil then
        local t, rerr = ctx.read(path)
        if rerr then return nil, rerr end
        if t == nil then
          if i == 1 and path ~= CONF then
            return nil, ("%s: configuration file named by a preset does not exist"):format(path)
          end
          t = false
        end
        texts[path], before[path] = t, t
        seen_order[#seen_order + 1] = path
      end
    end
  end
  if texts[CONF] == false then
    return nil, CONF .. ": does not exist (install mkinitcpio or create it)"
  end
  local notes = {}
  -- builds share files: repeat until a full pass changes nothing
  for _ = 1, 10 do
    local changed = false
    for _, b in ipairs(bl) do
      local files = {}
      for _, path in ipairs(b) do
        if texts[path] then files[#files + 1] = { path = path, text = texts[path] } end
      end
      local ok, e = edit_build(files, want, gpu, { modconf = ctx.modprobe_file ~= nil, bind = ctx.bind and true })
      if not ok then return nil, e end
      for _, n in ipairs(e) do notes[#notes + 1] = n end
      for _, f in ipairs(files) do
        if texts[f.path] ~= f.text then texts[f.path] = f.text; changed = true end
      end
    end
    if not changed then break end
  end
  local out = {}
  for _, path in ipairs(seen_order) do
    if texts[path] and texts[path] ~= before[path] then
      out[#out + 1] = { path = path, before = before[path], after = texts[path] }
    end
  end
  if ctx.warn then for _, n in ipairs(notes) do ctx.warn(n) end end
  if #notes > 0 then out.notes = notes end
  return out
end

---------------------------------------------------------------------------
-- Images and rebuilds.

-- Arch's package name of kver (<moddir>/<kver>/pkgbase), read once per run.
local function pkgbase(ctx, kver)
  return context.once(ctx, "pkgbase\0" .. kver, function() return machine.pkgbase(ctx.read, kver) end)
end

-- Does a preset's `<p>_kver`/`ALL_kver` name kver? mkinitcpio takes a plain version as
-- is and reads a path's version out of the kernel image; vfioinit does not read the
-- image: places.names_kernel decides (`vmlinuz-<kver>`, Arch's `vmlinuz-<pkgbase>`,
-- a `<kver>/` directory such as /usr/lib/modules/<kver>/vmlinuz).
local function names_kver(value, kver, base)
  return value == kver or places.names_kernel(value, kver, base)
end

-- The preset (file and entry) that builds kver's main image, if any.
-- (nil, nil, err when a preset file is unreadable or names a bad path)
local function preset_for(ctx, kver)
  local presets, err = read_presets(ctx)
  if not presets then return nil, nil, err end
  local base = pkgbase(ctx, kver)
  for _, pf in ipairs(presets) do
    if base and pf.name == base then return pf, pf.presets[1] end
    for _, p in ipairs(pf.presets) do
      if names_kver(p.kver, kver, base) then return pf, p end
    end
  end
end

--- uki_path(ctx, kver) -> the unified kernel image the preset building kver writes
-- (`<preset>_uki=`), or nil (nil, err when a preset file is bad).
function M.uki_path(ctx, kver)
  local _, p, err = preset_for(ctx, kver)
  if err then return nil, err end
  return p and p.uki or nil
end

-- mkinitcpio v41 reads the command line of a UKI from /etc/kernel/cmdline (else
-- /usr/lib/kernel/cmdline) and /etc/cmdline.d/*.conf.
local function uki_cmdline_source(ctx)
  for _, p in ipairs({ "/etc/kernel/cmdline", "/usr/lib/kernel/cmdline", "/etc/cmdline.d" }) do
    if ctx.stat(p) then return p end
  end
end

-- Is this preset file the one of kver? Named after its pkgbase or its version, or its
-- `ALL_kver` names the kernel.
local function preset_file_of(file, kver, base)
  if file.name == kver or (base and file.name == base) then return true end
  return names_kver(preset_files.scalar(file.vars, "ALL_kver"), kver, base)
end

--- ukis(ctx, kver) -> every UKI a preset builds for kver (`mkinitcpio -P`, function
-- process_preset: `<p>_uki=`, or the deprecated `<p>_efi_image=`, of the preset of kver,
-- or of an entry whose own `<p>_kver` names kver), each {path=, entry=, generator=,
-- generated_from=} | nil, err.
function M.ukis(ctx, kver)
  local files, err = preset_files.read(ctx)
  if not files then return nil, err end
  local out, base = {}, pkgbase(ctx, kver)
  for _, file in ipairs(files) do
    local file_ok = preset_file_of(file, kver, base)
    for _, p in ipairs(file.presets) do
      local kv = p.own_kver
      local mine = kv ~= nil and names_kver(kv, kver, base) or (kv == nil and file_ok)
      if p.uki and mine then
        out[#out + 1] = { path = p.uki, entry = ("preset: %s %s_uki"):format(file.path, p.name), generator = "mkinitcpio",
          generated_from = uki_cmdline_source(ctx) }
      end
    end
  end
  return out
end

-- What boots kver: the preset's UKI when it builds one, else its image.
function M.image_path(ctx, kver)
  local _, p, err = preset_for(ctx, kver)
  if err then return nil, err end
  if p and p.uki then return p.uki end
  if p and p.image and p.image ~= "" then return p.image end
  -- the stock preset's default_image: /boot/initramfs-${pkgbase}.img
  return machine.INITRD:format(pkgbase(ctx, kver) or kver)
end

function M.rebuild_argv(ctx, kvers)
  local out, by = {}, {}
  for _, k in ipairs(kvers) do
    local pf, _, err = preset_for(ctx, k)
    if err then return nil, err end
    if pf then
      if not by[pf.name] then
        by[pf.name] = { argv = { "mkinitcpio", "-p", pf.name }, kernels = {} }
        out[#out + 1] = by[pf.name]
      end
      local ks = by[pf.name].kernels
      ks[#ks + 1] = k
    else
      out[#out + 1] = { argv = { "mkinitcpio", "-k", k, "-g", M.image_path(ctx, k) }, kernels = { k } }
    end
  end
  return out
end

-- Modules the image loads early: `MODULES="..."` in its `config` (what init
-- hands to modprobe), or the systemd hook's modules-load.d list.
function M.early_modules(contents)
  local set = {}
  for line in (util.member(contents, "config") or ""):gmatch("[^\n]+") do
    local v = line:match('^MODULES="(.*)"$') or line:match("^MODULES='(.*)'$") or line:match("^MODULES=(%S*)$")
    if v then for m in v:gmatch("%S+") do set[norm(m)] = true end end
  end
  for line in (util.member(contents, "etc/modules-load.d/MODULES.conf") or ""):gmatch("[^\n]+") do
    local m = line:match("^%s*([^#%s]+)")
    if m then set[norm(m)] = true end
  end
  return set
end

---------------------------------------------------------------------------
-- Binding by address (lua/vfioinit/bind/init.lua): an install hook that adds the
-- runtime hook (add_runscript finds it with `type -P` in /etc/initcpio/hooks, so it
-- must be executable), whose run_earlyhook runs the script; bind_hook_edit above
-- puts it in HOOKS. The image's `config` lists it in EARLYHOOKS, in HOOKS order.
--
-- With the `systemd` hook, /init is systemd, which reads no EARLYHOOKS: the install hook
-- also adds a unit (only in the image; inert where busybox's init runs) that sources the
-- same runtime hook and calls run_earlyhook, ordered before systemd-udevd, its coldplug
-- (systemd-udev-trigger) and systemd-modules-load (MODULES), pulled in by sysinit.target.
-- A modprobe.d `install` command for the native driver was the other way: it needs each
-- device's driver known when the image is built, never runs for a driver built into the
-- kernel, and /etc/modprobe.d is also the booted system's.
local BIND_HOOK = "/etc/initcpio/hooks/" .. bind.NAME
local UNIT = "usr/lib/systemd/system/" .. bind.NAME .. ".service"
local UNIT_WANTS = "usr/lib/systemd/system/sysinit.target.wants/" .. bind.NAME .. ".service"
M.BIND_UNIT = ([[
[Unit]
Description=Bind PCI devices to vfio-pci by address (vfioinit --device)
DefaultDependencies=no
Before=systemd-udevd.service systemd-udev-trigger.service systemd-modules-load.service sysinit.target

[Service]
Type=oneshot
ExecStart=/usr/bin/busybox sh -c '. /hooks/%s && run_earlyhook'
]]):format(bind.NAME)

-- Is the image's /init systemd (the `systemd` hook's link) rather than busybox's script?
local function systemd_init(contents)
  local init = util.member(contents, "init") or ""
  return not init:find("^#!") and init:find("systemd$") ~= nil
end

M.bind = {
  script = BIND_HOOK,
  want = { "hooks/" .. bind.NAME, "config", "init", UNIT, UNIT_WANTS },
  files = function(ctx)
    local install = ([==[
#!/bin/bash
# Written by vfioinit (--device): adds the runtime hook %s, and the unit that runs it
# where the systemd hook makes systemd init. `vfioinit revert` removes it.
build() {
    add_module vfio_pci
    add_runscript
    [[ -e "$BUILDROOT/usr/bin/busybox" ]] || add_binary /usr/lib/initcpio/busybox /usr/bin/busybox
    add_file - /%s 0644 <<'VFIOINIT_UNIT'
%sVFIOINIT_UNIT
    add_symlink /%s ../%s.service
}
help() { echo "binds the PCI devices vfioinit was given to vfio-pci before udev"; }
]==]):format(bind.NAME, UNIT, M.BIND_UNIT, UNIT_WANTS, bind.NAME)
    local body = ctx.bind.body:gsub("([^\n]+)", "\t%1")
    return {
      { path = "/etc/initcpio/install/" .. bind.NAME, after = install, mode = 493 },
      { path = BIND_HOOK, after = "#!/usr/bin/ash\n\nrun_earlyhook() {\n" .. body .. "}\n", mode = 493 },
    }
  end,
  check = function(contents, text)
    if util.member(contents, "hooks/" .. bind.NAME) ~= text then return { BIND_HOOK .. " (not in the image)" } end
    if systemd_init(contents) then
      if util.member(contents, UNIT) ~= M.BIND_UNIT then return { "/" .. UNIT .. " (not in the image)" } end
      if not util.member(contents, UNIT_WANTS) then return { "/" .. UNIT .. " (not wanted by sysinit.target)" } end
      return {}
    end
    local early = (util.member(contents, "config") or ""):match('\nEARLYHOOKS="([^"]*)"') or ""
    local pos, n = {}, 0
    for w in early:gmatch("%S+") do n = n + 1; pos[w] = pos[w] or n end
    if not pos[bind.NAME] then return { bind.NAME .. " (not in the image's EARLYHOOKS)" } end
    if pos.udev and pos.udev < pos[bind.NAME] then return { bind.NAME .. " (runs after udev in EARLYHOOKS)" } end
    return {}
  end,
}

return M
