-- dracut: a drop-in /etc/dracut.conf.d/NN-vfioinit.conf that force-loads the
-- VFIO modules before any GPU driver.
--
-- What upstream dracut (059, /usr/bin/dracut = dracut.sh) does:
-- * sources /etc/dracut.conf, then every `*.conf` of /etc/dracut.conf.d and
--   /usr/lib/dracut/dracut.conf.d merged by file name and sorted with `sort -V`
--   (dropindirs_sort; for the same name the /etc one wins).
-- * `force_drivers` words are installed and written, in order, one
--   `rd.driver.pre=MOD` line each, to etc/cmdline.d/20-force_drivers.conf in
--   the image; they load (modprobe) before udev starts. `add_drivers` are only
--   installed, loaded later by udev: they do not fix any order.
-- * check_conf_file warns unless `+=` values have spaces inside the quotes:
--   `force_drivers+=" a b "`.
-- * `install_items` files are copied into the image.
-- So our file must sort before any file whose force_drivers holds a GPU driver,
-- and must not add what an earlier file already force-loads. When no file name
-- can do that (a GPU driver force-loaded in /etc/dracut.conf, or a reset
-- `force_drivers=` later), the effective force_drivers assignments are edited
-- in place like mkinitcpio's MODULES (same engine).
-- An edit with `after = nil` means: remove that file (our own drop-in, renamed).
local core = require("vfioinit.core")
local machine = require("vfioinit.machine")
local places = require("vfioinit.boot.places")
local engine = require("vfioinit.edit.shellvar")
local util = require("vfioinit.util")
local bind = require("vfioinit.bind")

local norm, set_of = engine.norm, engine.set_of

local M = require("vfioinit.generators").identity("dracut", {
  image_want = {
    "etc/cmdline.d/20-force_drivers.conf", "etc/cmdline.d/01-default.conf",
    "./etc/cmdline.d/20-force_drivers.conf", "./etc/cmdline.d/01-default.conf",
  },
  -- how its UKI (uefi=yes) comes out signed (vfioinit.signing's advice)
  sign_hint = "uefi_secureboot_cert= and uefi_secureboot_key= in a file of /etc/dracut.conf.d/ (dracut signs with sbsign)",
})

local CONF = "/etc/dracut.conf"
local DIRS = { "/etc/dracut.conf.d", "/usr/lib/dracut/dracut.conf.d" }
local OWN_DIR = "/etc/dracut.conf.d"
-- Names tried for our drop-in, best first (10 leaves room for the user's own files).
M.CANDIDATES = { "10-vfioinit.conf", "05-vfioinit.conf", "01-vfioinit.conf", "00-vfioinit.conf",
  "50-vfioinit.conf", "90-vfioinit.conf", "99-vfioinit.conf" }

local FORCE = { { name = "force_drivers", hint = 'force_drivers+=" ... "' } }

local function is_own(name) return name:match("^%d*%-?vfioinit%.conf$") ~= nil end

-- The words of `var` after sourcing `scans` in order (a rough bash: `=`, `+=`,
-- and `$var`/`${var}` self-references).
local function simulate(scans, var)
  local w = {}
  for _, sc in ipairs(scans) do
    for _, a in ipairs(sc) do
      if a.name == var then
        local new = a.append and { util.unpack(w) } or {}
        for _, it in ipairs(a.items) do
          if it.value == "$" .. var or it.value == "${" .. var .. "}" then
            for _, x in ipairs(w) do new[#new + 1] = x end
          else
            new[#new + 1] = norm(it.value)
          end
        end
        w = new
      end
    end
  end
  return w
end

M.simulate = simulate

-- Every want exactly once, all before the first GPU driver.
local function good(words, want, gpu)
  local count, gpu_seen = {}, false
  local wantset = set_of(want)
  for _, n in ipairs(words) do
    if gpu[n] then gpu_seen = true end
    if wantset[n] then
      if gpu_seen then return false end
      count[n] = (count[n] or 0) + 1
      if count[n] > 1 then return false end
    end
  end
  for n in pairs(wantset) do if not count[n] then return false end end
  return true
end

local function drop_in_text(mods, items)
  local t = { "# vfioinit: load the VFIO modules before any GPU driver (rd.driver.pre).\n" }
  if #mods > 0 then t[#t + 1] = 'force_drivers+=" ' .. table.concat(mods, " ") .. ' "\n' end
  if #items > 0 then t[#t + 1] = 'install_items+=" ' .. table.concat(items, " ") .. ' "\n' end
  return table.concat(t)
end
M.drop_in_text = drop_in_text

-- Fix the effective force_drivers assignments of `files` in place (the engine's
-- steps); `create` is called when there is none. true | nil, err, line, msg.
local function edit_in_place(files, want, gpu, create)
  return engine.run(files, "force_drivers", want, gpu, { pad = " ", create = create })
end

-- Pure: make one dracut config text force-load `want` before any GPU driver,
-- as if it were the only config. Returns new text | nil, msg, line.
function M.edit_text(text, want, opts)
  opts = opts or {}
  local gpu = opts.gpu or set_of(machine.GPU)
  local files = { { text = text } }
  local scans, serr, sline, smsg = engine.scan_all(files)
  if not scans then return nil, smsg or serr, sline end
  local uerr, uline, umsg = engine.unsafe(files, scans, FORCE)
  if uerr then return nil, umsg, uline end
  local ok, err, line, msg = edit_in_place(files, want, gpu, function(names)
    return engine.append_line(files, 'force_drivers+=" ' .. table.concat(names, " ") .. ' "')
  end)
  if not ok then return nil, msg or err, line end
  if opts.install_items then
    local have = set_of(simulate({ (core.scan.shell(files[1].text)) }, "install_items"))
    local add = {}
    for _, p in ipairs(opts.install_items) do if not have[p] then add[#add + 1] = p end end
    if #add > 0 then
      local e = engine.append_line(files, 'install_items+=" ' .. table.concat(add, " ") .. ' "')
      files[1].text = engine.apply(files[1].text, e)
    end
  end
  return files[1].text
end

-- The config files in dracut's order, our own drop-ins left out:
-- list of {path=, name=}, plus the list of our own drop-in names.
local function conf_order(ctx)
  local by_name, names, own = {}, {}, {}
  for _, d in ipairs(DIRS) do
    for _, n in ipairs(ctx.dir(d) or {}) do
      if n:match("%.conf$") and not by_name[n] then
        if d == OWN_DIR and is_own(n) then
          own[#own + 1] = n
        else
          by_name[n] = d .. "/" .. n
          names[#names + 1] = n
        end
      end
    end
  end
  table.sort(names, machine.version_less)
  local list = { { path = CONF, name = nil } }
  for _, n in ipairs(names) do list[#list + 1] = { path = by_name[n], name = n } end
  return list, own
end
M.conf_order = conf_order

---------------------------------------------------------------------------
-- edits(ctx), step by step: read the configs (read_configs), refuse what cannot be
-- read safely (check_configs), pick the drop-in name that orders our modules first
-- (choose_name, editing force_drivers in place when none does), then write the
-- drop-in and any in-place edits (changes).

-- The configs in dracut's order as {path=, name=, text=, before=}, and our own drop-in
-- (its path and text) when one exists. nil, err when a file cannot be read.
local function read_configs(ctx)
  local list, own = conf_order(ctx)
  local files = {}
  for _, f in ipairs(list) do
    local t, err = ctx.read(f.path)
    if err then return nil, err end
    if t then files[#files + 1] = { path = f.path, name = f.name, text = t, before = t } end
  end
  local st = { files = files, own = own, own_path = own[1] and (OWN_DIR .. "/" .. own[1]) }
  if st.own_path then
    local t, err = ctx.read(st.own_path)
    if err then return nil, err end
    st.own_before = t
  end
  return st
end

-- Scan every config. A force_drivers set inside an if, a function, by declare or a
-- sourced file is invisible to simulate(): refuse rather than guess the order.
local function check_configs(st)
  local scans, err = engine.scan_all(st.files)
  if not scans then return nil, err end
  local uerr = engine.unsafe(st.files, scans, FORCE)
  if uerr then return nil, uerr end
  if st.own_before then
    local _, msg, line = core.scan.shell(st.own_before)
    if msg then return nil, ("%s:%d: %s"):format(st.own_path, line, msg) end
  end
  return scans
end

-- What the others force-load already; ours adds the rest.
local function missing_mods(scans, want)
  local have = set_of(simulate(scans, "force_drivers"))
  local mods = {}
  for _, m in ipairs(want) do
    if not have[m] then have[m] = true; mods[#mods + 1] = m end
  end
  return mods
end

-- Would a drop-in `name` force-loading `mods`, at its sorted place, order every want first?
local function works(files, scans, name, mods, want, gpu)
  local seq, placed = {}, false
  for i, f in ipairs(files) do
    if not placed and f.name and machine.version_less(name, f.name) then
      seq[#seq + 1] = core.scan.shell(drop_in_text(mods, {})); placed = true
    end
    seq[#seq + 1] = scans[i]
  end
  if not placed then seq[#seq + 1] = core.scan.shell(drop_in_text(mods, {})) end
  return good(simulate(seq, "force_drivers"), want, gpu)
end

-- Our drop-in's name (the existing one first, then M.CANDIDATES) and the modules it
-- adds; when no name works, force_drivers is edited in place and a note says so.
-- -> name, mods, scans, notes | nil, err
local function choose_name(st, scans, want, gpu)
  local mods = missing_mods(scans, want)
  local names = { st.own[1] }
  for _, n in ipairs(M.CANDIDATES) do names[#names + 1] = n end
  for _, n in ipairs(names) do
    if works(st.files, scans, n, mods, want, gpu) then return n, mods, scans, {} end
  end
  local ok, rerr = edit_in_place(st.files, want, gpu, function()
    error("unreachable: force_drivers has no assignment")
  end)
  if not ok then return nil, rerr end
  local err
  scans, err = engine.scan_all(st.files)
  if not scans then return nil, err end
  mods = missing_mods(scans, want)
  local chosen = st.own[1] or M.CANDIDATES[1]
  if not works(st.files, scans, chosen, mods, want, gpu) then
    return nil, "cannot order force_drivers: the VFIO modules would not load before the GPU drivers"
  end
  return chosen, mods, scans, {
    "no drop-in name orders the VFIO modules before the force-loaded GPU drivers: edited force_drivers in place" }
end

-- The list of changes: in-place edits, then our drop-in (renamed: the old one removed).
local function changes(st, chosen, mods, items)
  local out = {}
  for _, f in ipairs(st.files) do
    if f.text ~= f.before then out[#out + 1] = { path = f.path, before = f.before, after = f.text } end
  end
  local path, own_before = OWN_DIR .. "/" .. chosen, st.own_before
  local after = (#mods > 0 or #items > 0) and drop_in_text(mods, items) or nil
  if st.own_path and st.own_path ~= path then
    out[#out + 1] = { path = st.own_path, before = own_before, after = nil }
    own_before = nil
  end
  if after and after ~= own_before then
    out[#out + 1] = { path = path, before = own_before, after = after }
  elseif not after and own_before and st.own_path == path then
    -- nothing left for our file to do; keep it (harmless) but drop what it force-loads
    local left = simulate({ core.scan.shell(own_before) or {} }, "force_drivers")
    if #left > 0 then
      out[#out + 1] = { path = path, before = own_before, after = drop_in_text({}, {}) }
    end
  end
  return out
end

function M.edits(ctx)
  local want = {}
  for _, m in ipairs(ctx.modules or {}) do want[#want + 1] = norm(m) end
  local st, err = read_configs(ctx)
  if not st then return nil, err end
  local scans, cerr = check_configs(st)
  if not scans then return nil, cerr end
  local chosen, mods, notes
  chosen, mods, scans, notes = choose_name(st, scans, want, ctx.gpu or set_of(machine.GPU))
  if not chosen then return nil, mods end
  local items = {}
  if ctx.modprobe_file and not set_of(simulate(scans, "install_items"))[ctx.modprobe_file] then
    items[1] = ctx.modprobe_file
  end
  local out = changes(st, chosen, mods, items)
  if #notes > 0 then out.notes = notes end
  if ctx.warn then for _, n in ipairs(notes) do ctx.warn(n) end end
  return out
end

---------------------------------------------------------------------------
-- Images.

-- The last word of a dracut setting (`uefi`, `machine_id`, `kernel_cmdline`) after
-- sourcing every config, and the config that set it: value|false, path | nil, err.
local function setting(ctx, var)
  if not (ctx.dir and ctx.read) then return false end  -- a context without root access: no configs
  local st, err = read_configs(ctx)
  if not st then return nil, err end
  local scans, serr = engine.scan_all(st.files)
  if not scans then return nil, serr end
  local w, from = simulate(scans, var), nil
  for i, sc in ipairs(scans) do
    for _, a in ipairs(sc) do if a.name == var then from = st.files[i].path end end
  end
  return w[#w] or false, from
end
-- setting(ctx, var) -> the value | false (unset), the file that set it | nil, err:
-- vfioinit.signature reads uefi_secureboot_cert through it.
M.setting = setting

-- The UKI's file name, as dracut 059 (dracut.sh, no output file given) builds it:
-- `linux-<kver>${MACHINE_ID:+-$MACHINE_ID}${BUILD_ID:+-$BUILD_ID}.efi`.
-- MACHINE_ID: none with `machine_id=no`; "Default" when /efi, /boot or /boot/efi has a
-- Default directory; else /etc/machine-id's first line as `read -r` gives it (blanks
-- trimmed; an empty file gives none); "Default" when that file is missing.
local function machine_id_part(ctx, machine_id)
  if machine_id == "no" then return nil end
  for _, d in ipairs(places.BOOT_DIRS) do
    if places.is_dir(ctx, d .. "/Default") then return "Default" end
  end
  local st = ctx.stat("/etc/machine-id")
  if not (st and st.type == "file") then return "Default" end
  local id = ((ctx.read("/etc/machine-id") or ""):match("^[^\n]*"):gsub("^[ \t]+", ""):gsub("[ \t]+$", ""))
  return id ~= "" and id or nil
end

-- BUILD_ID: dracut reads /etc/os-release then /usr/lib/os-release (one `cat`), evals the
-- first line holding "BUILD_ID" anywhere and takes $BUILD_ID (empty when that line sets
-- another name); a line the shell cannot eval is passed over.
local function build_id(ctx)
  local text = (ctx.read("/etc/os-release") or "") .. (ctx.read("/usr/lib/os-release") or "")
  for line in text:gmatch("[^\n]+") do
    local sc = line:find("BUILD_ID", 1, true) and core.scan.shell(line)
    if sc then
      local v = ""
      for _, a in ipairs(sc) do
        if a.name == "BUILD_ID" and not a.array then v = a.append and v .. a.value or a.value end
      end
      return v ~= "" and v or nil
    end
  end
end

-- efidir: /efi/EFI when /efi is the mounted ESP (here: /efi/EFI exists), else
-- /boot/efi/EFI when that exists, else /boot/EFI.
local function efidir(ctx)
  for _, d in ipairs({ "/efi/EFI", "/boot/efi/EFI" }) do
    if places.is_dir(ctx, d) then return d end
  end
  return "/boot/EFI"
end

--- ukis(ctx, kver) -> the unified kernel images dracut builds for kver: {} unless its
-- configs say `uefi=yes`, else one {path=, entry=, generator=, generated_from=} (the config
-- whose `kernel_cmdline` is the UKI's .cmdline) | nil, err when a config cannot be read.
-- The one rule for dracut's UKI name: boot chains, rebuild and verify all use it.
function M.ukis(ctx, kver)
  local uefi, from = setting(ctx, "uefi")
  if uefi == nil then return nil, from end
  if uefi ~= "yes" then return {} end
  local mid, merr = setting(ctx, "machine_id")
  if mid == nil then return nil, merr end
  local _, cmdline_from = setting(ctx, "kernel_cmdline")
  local id, bid = machine_id_part(ctx, mid), build_id(ctx)
  local name = ("linux-%s%s%s.efi"):format(kver, id and "-" .. id or "", bid and "-" .. bid or "")
  return { { path = efidir(ctx) .. "/Linux/" .. name, entry = "dracut: uefi=yes in " .. from, generator = "dracut",
    generated_from = cmdline_from } }
end

--- uki_path(ctx, kver) -> the UKI of M.ukis, or nil (nil, err when a config cannot be read).
function M.uki_path(ctx, kver)
  local list, err = M.ukis(ctx, kver)
  if not list then return nil, err end
  return list[1] and list[1].path or nil
end

-- What boots kver: the UKI with uefi=yes, else the distribution's initrd name.
function M.image_path(ctx, kver)
  local uki, err = M.uki_path(ctx, kver)
  if err then return nil, err end
  return uki or machine.initrd(ctx.distro, kver)
end

function M.rebuild_argv(ctx, kvers)
  local out = {}
  for _, k in ipairs(kvers) do
    -- the output named explicitly: with uefi=yes, the UKI dracut would pick by itself
    local path, err = M.image_path(ctx, k)
    if not path then return nil, err end
    out[#out + 1] = { argv = { "dracut", "--force", path, k }, kernels = { k } }
  end
  return out
end

-- rd.driver.pre= (and the old rdloaddriver=) in the image's etc/cmdline.d/*.conf.
function M.early_modules(contents)
  local set = {}
  for name, data in pairs(contents) do
    if name:match("^%.?/?etc/cmdline%.d/[^/]+%.conf$") then
      for _, key in ipairs({ "rd%.driver%.pre=", "rdloaddriver=" }) do
        for v in data:gmatch("%f[%w.]" .. key .. "(%S+)") do
          for m in v:gsub('"', ""):gmatch("[^,]+") do set[norm(m)] = true end
        end
      end
    end
  end
  return set
end

---------------------------------------------------------------------------
-- Binding by address (lua/vfioinit/bind/init.lua): a dracut module whose pre-udev hook
-- runs the script. dracut reads modules only from /usr/lib/dracut/modules.d
-- (dracutbasedir); a module whose check() returns 0 is included, and
-- add_dracutmodules keeps it in when a config names its own `dracutmodules` list.
-- inst_hook puts the hook at /lib/dracut/hooks/pre-udev/00-<name> (dracut 059;
-- later ones under /var/lib/dracut/hooks): init sources the pre-udev hooks before it
-- starts udev, and rd.driver.pre (force_drivers) loads vfio-pci even earlier, in the
-- cmdline hooks, which is why the script probes the devices again.
local BIND_DIR = "/usr/lib/dracut/modules.d/90" .. bind.NAME
local BIND_HOOK = "00-" .. bind.NAME .. ".sh"
local BIND_MEMBERS = { "lib/dracut/hooks/pre-udev/" .. BIND_HOOK, "var/lib/dracut/hooks/pre-udev/" .. BIND_HOOK,
  "usr/lib/dracut/hooks/pre-udev/" .. BIND_HOOK }

M.bind = {
  script = BIND_DIR .. "/" .. bind.NAME .. ".sh",
  want = BIND_MEMBERS,
  files = function(ctx)
    local setup = ([[
#!/bin/bash
# Written by vfioinit (--device): runs %s.sh before udev. `vfioinit revert` removes it.
check() { return 0; }
depends() { return 0; }
installkernel() { hostonly='' instmods vfio_pci; }
install() { inst_hook pre-udev 00 "$moddir/%s.sh"; }
]]):format(bind.NAME, bind.NAME)
    return {
      { path = BIND_DIR .. "/module-setup.sh", after = setup, mode = 493 },
      { path = M.bind.script, after = "#!/bin/sh\n" .. ctx.bind.body, mode = 493 },
      { path = OWN_DIR .. "/90-" .. bind.NAME .. ".conf",
        after = ('# Written by vfioinit (--device)\nadd_dracutmodules+=" %s "\n'):format(bind.NAME) },
    }
  end,
  -- the hook is in the image as written (being in pre-udev/ is what wires it)
  check = function(contents, text)
    for _, m in ipairs(BIND_MEMBERS) do
      if util.member(contents, m) == text then return {} end
    end
    return { M.bind.script .. " (no pre-udev hook " .. BIND_HOOK .. " in the image)" }
  end,
}

return M
