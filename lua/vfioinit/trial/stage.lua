--[[ vfioinit.trial.stage: the trial image is built from a staged copy of the generator's
configuration, never from the configuration the default entry's image is built from.

  stage.plan(ctx, gen, changes, kver, out [, uki, wants]) -> {files = {{path=, after=, mode=}...},
                                                      argv = {...}} | nil, err
  stage.cmdline_words(gen, changes) -> what the trial's command line carries instead (booster)

`uki` ({cmdline=, osrel=}) asks for a unified kernel image at `out` instead of an initramfs:
its command line and os-release (lua/vfioinit/trial/uki.lua) are staged too.

`changes` are the plan's (lua/vfioinit/plan.lua). Those of the generator's configuration
go into the staged copy under STAGE; vfioinit's modprobe.d file is put into the image
from its staged copy; the command-line changes are the trial entry's business
(lua/vfioinit/trial.lua). Anything else cannot be staged and is refused, naming the file.
Per generator (its own option for another configuration and another output):
  initramfs-tools  mkinitramfs -d STAGE/initramfs-tools -o OUT KVER (a copy of
                   /etc/initramfs-tools; a hook of the copy puts the staged modprobe.d file
                   in, after mkinitramfs copied /etc/modprobe.d)
  dracut           dracut --conf STAGE/dracut.conf --confdir STAGE/dracut.conf.d
                   [--include STAGED /etc/modprobe.d/vfioinit.conf] --force OUT KVER;
                   a UKI: --uefi, the command line as the copy's last kernel_cmdline=
                   (STAGE/dracut.conf.d/zz-vfioinit-trial.conf), and `osrel` in the result:
                   dracut embeds root's own os-release, trial/uki.lua replaces it after the build
  mkinitcpio       mkinitcpio -c STAGE/mkinitcpio.conf -k KVER -g OUT
                   [--include STAGED:/etc/modprobe.d/vfioinit.conf] (mkinitcpio 39 and later);
                   a UKI: -U OUT --cmdline STAGE/cmdline --osrelease STAGE/os-release
  booster          booster build --force --config STAGE/booster.yaml --kernel-version KVER OUT;
                   booster reads modprobe.d only from /lib, /etc and /run (generator/kmod.go
                   readModprobeOptions; no config key, no option), and its init takes
                   `module.param=value` from the kernel command line (init/cmdline.go): the
                   staged file's `options` go on the trial's command line (cmdline_words), and
                   the copy's extra_files does not list /etc's file a trial does not write
A generator of one's own may bring `trial_stage(ctx, changes, kver, out, stage)` with the
same result.
]]
local core = require("vfioinit.core")
local modprobe = require("vfioinit.modprobe")
local record = require("vfioinit.trial.record")

local M = {}

M.STAGE = record.DIR .. "/stage"
M.MODPROBE = M.STAGE .. "/modprobe.d/vfioinit.conf"

local function under(path, dir) return path == dir or path:sub(1, #dir + 1) == dir .. "/" end

-- Every regular file below dir in root (recursively), {path=, mode=}; symlinks and
-- other kinds are not configuration the copy needs.
local function files_below(ctx, dir, out)
  out = out or {}
  for _, n in ipairs(ctx.dir(dir) or {}) do
    local p = dir .. "/" .. n
    local st = ctx.stat(p, true)
    if st and st.type == "dir" then files_below(ctx, p, out)
    elseif st and st.type == "file" then out[#out + 1] = { path = p, mode = st.mode } end
  end
  return out
end

-- Copy `srcs` (the files of a configuration in root) to `dst` (their place in the stage),
-- with the plan's changes under `src` applied. Returns the files or nil, err.
local function copy_tree(ctx, src, dst, changes, files)
  local by = {}
  for _, c in ipairs(changes) do if under(c.path, src) then by[c.path] = c end end
  local seen = {}
  for _, f in ipairs(files_below(ctx, src)) do
    seen[f.path] = true
    local c = by[f.path]
    local text, err
    if c then text = c.after else text, err = core.fs.read(ctx.root, f.path) end
    if err then return nil, err end
    if text then files[#files + 1] = { path = dst .. f.path:sub(#src + 1), after = text, mode = c and c.mode or f.mode } end
  end
  for p, c in pairs(by) do
    if not seen[p] and c.after then files[#files + 1] = { path = dst .. p:sub(#src + 1), after = c.after, mode = c.mode } end
  end
  table.sort(files, function(a, b) return a.path < b.path end)
  return files
end

-- The staged copy of one file (a main config): the plan's content, else root's, else "".
local function copy_file(ctx, src, dst, changes, files)
  local text
  for _, c in ipairs(changes) do if c.path == src then text = c.after or "" end end
  if not text then
    local t, err = ctx.read(src)
    if err then return nil, err end
    text = t or ""
  end
  files[#files + 1] = { path = dst, after = text }
  return files
end

local HOOK = [[#!/bin/sh
# vfioinit trial: the image gets the staged modprobe.d file, not /etc's
case "$1" in prereqs) exit 0 ;; esac
mkdir -p "${DESTDIR}/etc/modprobe.d"
cp ]] .. M.MODPROBE .. [[ "${DESTDIR}/etc/modprobe.d/vfioinit.conf"
]]

local BUILTIN = {}

BUILTIN["initramfs-tools"] = function(ctx, changes, kver, out, mp)
  local conf = M.STAGE .. "/initramfs-tools"
  local files, err = copy_tree(ctx, "/etc/initramfs-tools", conf, changes, {})
  if not files then return nil, err end
  if mp then files[#files + 1] = { path = conf .. "/hooks/zz-vfioinit-trial", after = HOOK, mode = 493 } end
  return { files = files, argv = { "mkinitramfs", "-d", conf, "-o", out, kver }, owns = { "/etc/initramfs-tools" } }
end

-- A UKI's staged command line and os-release (lua/vfioinit/trial/uki.lua's).
local function uki_files(files, uki)
  files[#files + 1] = { path = M.STAGE .. "/cmdline", after = uki.cmdline .. "\n" }
  files[#files + 1] = { path = M.STAGE .. "/os-release", after = uki.osrel }
  return files
end

local function shell_quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

-- dracut sources its configs in file-name order: the copy's last word on the command line.
M.DRACUT_UKI_CONF = M.STAGE .. "/dracut.conf.d/zz-vfioinit-trial.conf"

-- dracut signs a UKI while building it (uefi_secureboot_key/cert); the trial's .osrel is
-- replaced after the build, which would break that signature.
local function dracut_signs(ctx)
  local key, from = require("vfioinit.generators.dracut").setting(ctx, "uefi_secureboot_key")
  if key == nil then return from end
  if key then
    return ("%s: uefi_secureboot_key: dracut signs the UKI it builds, and a trial UKI's os-release is put in "
      .. "after the build (dracut takes none of its own), which would break that signature: apply without --trial")
      :format(from)
  end
end

BUILTIN.dracut = function(ctx, changes, kver, out, mp, _, uki)
  local files, err = copy_file(ctx, "/etc/dracut.conf", M.STAGE .. "/dracut.conf", changes, {})
  if files then files, err = copy_tree(ctx, "/etc/dracut.conf.d", M.STAGE .. "/dracut.conf.d", changes, files) end
  if not files then return nil, err end
  local argv = { "dracut", "--conf", M.STAGE .. "/dracut.conf", "--confdir", M.STAGE .. "/dracut.conf.d" }
  if uki then
    local why = dracut_signs(ctx)
    if why then return nil, why end
    uki_files(files, uki)
    files[#files + 1] = { path = M.DRACUT_UKI_CONF,
      after = "# vfioinit trial: the trial UKI's command line\nkernel_cmdline=" .. shell_quote(uki.cmdline) .. "\n" }
    argv[#argv + 1] = "--uefi"
  end
  if mp then for _, a in ipairs({ "--include", M.MODPROBE, modprobe.FILE }) do argv[#argv + 1] = a end end
  for _, a in ipairs({ "--force", out, kver }) do argv[#argv + 1] = a end
  return { files = files, argv = argv, owns = { "/etc/dracut.conf", "/etc/dracut.conf.d" },
    osrel = uki and M.STAGE .. "/os-release" or nil }
end

-- mkinitcpio 39 and later take `--include SRC:DEST` (added after the hooks, so over what
-- modconf copied from /etc/modprobe.d); an older one has no way to rename a file.
local function mkinitcpio_includes(ctx)
  for _, p in ipairs({ "/usr/bin/mkinitcpio", "/bin/mkinitcpio" }) do
    local text = ctx.read(p)
    if text then return text:find("'include:'", 1, true) ~= nil end
  end
  return false
end

BUILTIN.mkinitcpio = function(ctx, changes, kver, out, mp, _, uki)
  local conf = M.STAGE .. "/mkinitcpio.conf"
  if mp and not mkinitcpio_includes(ctx) then
    return nil, ("%s: this mkinitcpio has no --include to put a staged %s in a trial image (--ids, --softdeps): "
      .. "apply without --trial"):format("/usr/bin/mkinitcpio", modprobe.FILE)
  end
  local files, err = copy_file(ctx, "/etc/mkinitcpio.conf", conf, changes, {})
  if not files then return nil, err end
  local argv = { "mkinitcpio", "-c", conf, "-k", kver, "-g", out }
  if uki then
    argv = { "mkinitcpio", "-c", conf, "-k", kver, "-U", out, "--cmdline", M.STAGE .. "/cmdline",
      "--osrelease", M.STAGE .. "/os-release" }
    uki_files(files, uki)
  end
  if mp then for _, a in ipairs({ "--include", M.MODPROBE .. ":" .. modprobe.FILE }) do argv[#argv + 1] = a end end
  return { files = files, argv = argv, owns = { "/etc/mkinitcpio.conf" } }
end

BUILTIN.booster = function(ctx, changes, kver, out, mp, _, _, wants)
  local conf = M.STAGE .. "/booster.yaml"
  if mp then
    -- the plan's booster.yaml lists /etc/modprobe.d/vfioinit.conf in extra_files; the
    -- trial's copy is the same edit without it (the options are on the command line)
    local gen = require("vfioinit.generators.booster")
    local edits, err = gen.edits(require("vfioinit.context").wanting(ctx, { modules = wants and wants.modules }))
    if not edits then return nil, err end
    changes = edits
  end
  local files, err = copy_file(ctx, "/etc/booster.yaml", conf, changes, {})
  if not files then return nil, err end
  return { files = files, argv = { "booster", "build", "--force", "--config", conf, "--kernel-version", kver, out },
    owns = { "/etc/booster.yaml" } }
end

-- Generators whose staged build has a way to carry the staged modprobe.d file: in the
-- image, or (booster) its `options` on the trial's command line.
local CARRIES_MODPROBE = { ["initramfs-tools"] = true, dracut = true, mkinitcpio = true, booster = true }
local OPTIONS_ON_CMDLINE = { booster = true }

--- cmdline_words(gen, changes) -> {words} the trial's command line carries for the staged
-- modprobe.d file (booster: `module.param=value` for each `options` argument), or {}
-- | nil, "FILE:LINE: reason"
function M.cmdline_words(gen, changes)
  if gen.trial_stage or not OPTIONS_ON_CMDLINE[gen.name] then return {} end
  local words = {}
  for _, c in ipairs(changes) do
    if c.path == modprobe.FILE and c.after then
      local list, err = modprobe.parse(c.after)
      if not list then return nil, modprobe.FILE .. ":" .. err end
      for _, d in ipairs(list) do
        for _, a in ipairs(d.cmd == "options" and d.args or {}) do
          if not a:find("=", 1, true) then
            return nil, ("%s:%d: `%s` has no value, which %s's init does not take from the command line: "
              .. "apply without --trial"):format(modprobe.FILE, d.line, a, gen.name)
          end
          words[#words + 1] = d.module .. "." .. a
        end
      end
    end
  end
  return words
end

--- image_carries_modprobe(gen) -> does the trial image hold the staged modprobe.d file?
function M.image_carries_modprobe(gen) return gen.trial_stage ~= nil or not OPTIONS_ON_CMDLINE[gen.name] end
-- Generators whose staged build makes a trial UKI (with an os-release of its own: the sort key).
local BUILDS_UKI = { mkinitcpio = true, dracut = true }

--- plan(ctx, gen, changes, kver, out [, uki [, wants]]) -> {files=, argv=} | nil, err
-- (`wants`: the plan's, lua/vfioinit/plan.lua)
function M.plan(ctx, gen, changes, kver, out, uki, wants)
  local build = gen.trial_stage or BUILTIN[gen.name]
  if not build then return nil, gen.name .. ": no staged build for a trial image (a generator's trial_stage)" end
  if uki and not gen.trial_stage and not BUILDS_UKI[gen.name] then
    return nil, ("%s: a trial UKI needs an os-release of its own (systemd-boot's sort key), which %s does "
      .. "not take: apply without --trial"):format((out:gsub("%.part$", "")), gen.name)
  end
  local mine, mp = {}, nil
  for _, c in ipairs(changes) do
    if c.generator == gen.name then mine[#mine + 1] = c
    elseif c.path == modprobe.FILE then mp = c
    end
  end
  if mp and not gen.trial_stage and not CARRIES_MODPROBE[gen.name] then
    return nil, ("%s: a %s trial image cannot carry a staged %s (--ids, --softdeps): apply without --trial"):format(
      modprobe.FILE, gen.name, modprobe.FILE)
  end
  local s, err = build(ctx, mine, kver, out, mp, M.STAGE, uki, wants)
  if not s then return nil, err end
  for _, c in ipairs(mine) do
    local staged = false
    for _, d in ipairs(s.owns or {}) do staged = staged or under(c.path, d) end
    if not staged then
      return nil, ("%s: %s keeps this file outside its configuration, where a staged trial build cannot "
        .. "read it: apply without --trial"):format(c.path, gen.name)
    end
  end
  if mp and mp.after and M.image_carries_modprobe(gen) then s.files[#s.files + 1] = { path = M.MODPROBE, after = mp.after } end
  return s
end

return M
