--[[ vfioinit.boot.places: where a machine keeps what its firmware or bootloader loads.

Facts about root's layout that lua/vfioinit/boot/chains.lua combines into boot chains:
kernel-install's configuration (install.conf `layout=`, $BOOT_ROOT, the entry token),
the directories that may be an ESP or XBOOTLDR partition, the generated grub.cfg, the
kernel image of a version, and the UKI each generator builds when its own hook does not
say (`gen.uki_path`, added by the generators that build UKIs). Everything is read through
ctx (root-confined); nothing is written.

What upstream does, as followed here:
* kernel-install (systemd 252, src/kernel-install/kernel-install.in): sources
  /etc/kernel/install.conf, else /usr/lib/kernel/install.conf (one of them, not both);
  `layout=`, `BOOT_ROOT=`, `MACHINE_ID=`. The entry token is /etc/kernel/entry-token, else
  the first of machine-id, os-release ID, "Default" that names a directory under a boot
  root. $BOOT_ROOT is the first of /efi, /boot, /boot/efi holding `<token>/` or
  `loader/entries/`, else /efi or /boot/efi when mounted (here: when it has an `EFI/`
  directory: a mount cannot be seen in a root), else /boot. layout=uki installs
  `$BOOT_ROOT/EFI/Linux/<token>-<kver>.efi` (90-uki-copy.install).
* GRUB writes /boot/grub/grub.cfg (Debian, Ubuntu, Arch) or /boot/grub2/grub.cfg (Fedora,
  openSUSE); its paths are relative to the partition holding them: `/boot/vmlinuz-X` when
  /boot is part of /, `/vmlinuz-X` when /boot is its own partition.
* BLS entries (`<dir>/loader/entries/*.conf`) name files relative to `<dir>`.
]]
local core = require("vfioinit.core")
local machine = require("vfioinit.machine")

local M = {}

-- kernel-install's $BOOT_ROOT candidates, in its search order: also where loader/entries
-- and EFI/Linux (systemd-boot's type #2 entries) live.
M.BOOT_DIRS = { "/efi", "/boot", "/boot/efi" }
M.GRUB_CFGS = { "/boot/grub/grub.cfg", "/boot/grub2/grub.cfg" }
M.INSTALL_CONF = { "/etc/kernel/install.conf", "/usr/lib/kernel/install.conf" }

local function is_dir(ctx, path)
  local st = ctx.stat(path)
  return st ~= nil and st.type == "dir"
end
M.is_dir = is_dir

local function exists(ctx, path) return ctx.stat(path) ~= nil end

local function first_word(ctx, path)
  local text = ctx.read(path)
  return text and text:match("^%s*([^%s#]+)") or nil
end

-- The last plain assignment of each name in `names` in a shell file, as kernel-install's
-- `. install.conf` sees it: {name=value}, lines={name=line} | nil, "PATH:LINE: reason".
local function shell_values(ctx, path, names)
  local text, err = ctx.read(path)
  if err then return nil, err end
  if not text then return nil end
  local sc, msg, line = core.scan.shell(text)
  if not sc then return nil, ("%s:%d: %s"):format(path, line, msg) end
  local out = { lines = {} }
  for _, a in ipairs(sc) do
    if names[a.name] and not a.array and not a.append then out[a.name], out.lines[a.name] = a.value, a.line end
  end
  return out
end

-- install.conf: {path=, layout=, uki_generator=, BOOT_ROOT=, MACHINE_ID=, lines=} ({} when
-- neither file exists) | nil, err.
function M.install_conf(ctx)
  local names = { layout = true, uki_generator = true, BOOT_ROOT = true, MACHINE_ID = true }
  for _, p in ipairs(M.INSTALL_CONF) do
    local v, err = shell_values(ctx, p, names)
    if err then return nil, err end
    if v then v.path = p; return v end
  end
  return { lines = {} }
end

local function machine_id(ctx, conf)
  if conf.MACHINE_ID and conf.MACHINE_ID ~= "" then return conf.MACHINE_ID end
  local info = shell_values(ctx, "/etc/machine-info", { KERNEL_INSTALL_MACHINE_ID = true })
  if info and info.KERNEL_INSTALL_MACHINE_ID then return info.KERNEL_INSTALL_MACHINE_ID end
  return first_word(ctx, "/etc/machine-id")
end

-- $BOOT_ROOT and the entry token, by kernel-install's search (see the header).
local function boot_root_and_token(ctx, conf, mid)
  local token = first_word(ctx, "/etc/kernel/entry-token")
  local cands = { token }
  if not token then
    for _, c in ipairs({ mid or false, ctx.distro and ctx.distro.id or false, "Default" }) do
      if c then cands[#cands + 1] = c end
    end
  end
  local root = conf.BOOT_ROOT ~= "" and conf.BOOT_ROOT or nil
  for _, pref in ipairs(root and { root } or M.BOOT_DIRS) do
    for _, suff in ipairs(cands) do
      if is_dir(ctx, pref .. "/" .. suff) then return root or pref, token or suff end
    end
    if is_dir(ctx, pref .. "/loader/entries") then root = root or pref; break end
  end
  if not root then
    for _, pref in ipairs({ "/efi", "/boot/efi" }) do
      if is_dir(ctx, pref .. "/EFI") then root = pref; break end
    end
  end
  return root or "/boot", token or mid
end

-- kernel-install's view: {layout=, boot_root=, token=, conf=path|nil, layout_line=} | nil, err.
-- layout, when install.conf does not set it: loader/entries.srel "type1" or an existing
-- `<boot_root>/<token>/` mean "bls", anything else "other" (kernel-install's own guess).
function M.kernel_install(ctx)
  local conf, err = M.install_conf(ctx)
  if not conf then return nil, err end
  local mid = machine_id(ctx, conf)
  local root, token = boot_root_and_token(ctx, conf, mid)
  local layout = conf.layout ~= "" and conf.layout or nil
  if not layout then
    local srel = first_word(ctx, root .. "/loader/entries.srel")
    if srel then layout = srel == "type1" and "bls" or "other"
    elseif token and is_dir(ctx, root .. "/" .. token) then layout = "bls"
    else layout = "other" end
  end
  return { layout = layout, boot_root = root, token = token, conf = conf.path,
    layout_line = conf.lines.layout }
end

-- The directories that may hold EFI/Linux (type #2 entries) or loader/entries, each
-- once (a symlinked /boot/efi -> ../efi is one place).
function M.boot_dirs(ctx, sub)
  local memo = ctx.places_memo  -- a boot state's context (chains.state): asked once per state
  if memo and memo[sub] then return memo[sub] end
  local out, seen = {}, {}
  for _, d in ipairs(M.BOOT_DIRS) do
    local p = d .. "/" .. sub
    local real = is_dir(ctx, p) and core.fs.resolve(ctx.root, p)  -- most are not there: one stat
    if real and not seen[real] then seen[real] = true; out[#out + 1] = { dir = d, path = p } end
  end
  if memo then memo[sub] = out end
  return out
end

-- A path as a loader on the partition mounted at `prefix` names it, as a path in root:
-- `<prefix><p>` when that exists, else `p` itself when that exists (the partition is /),
-- else `<prefix><p>`.
function M.on_partition(ctx, prefix, p)
  if not p or p:sub(1, 1) ~= "/" then p = "/" .. (p or "") end
  if prefix == "/" or prefix == "" then return p end
  if p:sub(1, #prefix + 1) == prefix .. "/" and exists(ctx, p) then return p end
  if exists(ctx, prefix .. p) then return prefix .. p end
  if exists(ctx, p) then return p end
  return prefix .. p
end

-- GRUB's paths: grub.cfg under /boot/grub* is on /boot's partition, which is / when
-- the path already starts with /boot.
function M.grub_path(ctx, p)
  p = p and p:gsub("^%b()", "")     -- `(hd0,gpt2)/vmlinuz`: a device, then a path on it
  if p and p:match("^/boot/") then return p end
  return M.on_partition(ctx, "/boot", p)
end

-- Every grub.cfg that may hold menu entries: /boot/grub*, then the ESP's EFI/<vendor>/
-- (Fedora before 34 kept the full UEFI config there; Debian, Ubuntu and later Fedora keep a
-- stub that only `configfile`s /boot's, which has no entries of its own).
function M.grub_cfgs(ctx)
  local out = {}
  for _, p in ipairs(M.GRUB_CFGS) do out[#out + 1] = p end
  for _, d in ipairs(M.boot_dirs(ctx, "EFI")) do
    for _, vendor in ipairs(ctx.dir(d.path) or {}) do
      local p = d.path .. "/" .. vendor .. "/grub.cfg"
      local st = ctx.stat(p)
      if st and st.type == "file" then out[#out + 1] = p end
    end
  end
  return out
end

-- A glob of systemd-boot's loader.conf (fnmatch: `*`, `?`, `[...]`, `[!...]`) as a Lua pattern.
local function glob_pattern(glob)
  local out, i = { "^" }, 1
  while i <= #glob do
    local c = glob:sub(i, i)
    if c == "*" then out[#out + 1] = ".*"
    elseif c == "?" then out[#out + 1] = "."
    elseif c == "[" and glob:find("]", i + 2, true) then
      local j = glob:find("]", i + 2, true)
      local set = glob:sub(i + 1, j - 1):gsub("^!", "^"):gsub("%%", "%%%%")
      out[#out + 1], i = "[" .. set .. "]", j
    else out[#out + 1] = c:gsub("%W", "%%%0") end
    i = i + 1
  end
  return table.concat(out) .. "$"
end

-- systemd-boot's `default` of loader/loader.conf (the first of /efi, /boot, /boot/efi that
-- has one): {path=, glob=, match=function(entry file name)} | nil. `@saved` and the other
-- `@` values name an EFI variable, which a root does not have: nil.
function M.loader_default(ctx)
  for _, d in ipairs(M.boot_dirs(ctx, "loader")) do
    local p = d.path .. "/loader.conf"
    local text = ctx.read(p)
    if text then
      local glob
      for line in (text .. "\n"):gmatch("([^\n]*)\n") do
        glob = line:match("^%s*default%s+(%S+)") or glob
      end
      if not glob or glob:sub(1, 1) == "@" then return nil end
      local pat = glob_pattern(glob)
      return { path = p, glob = glob, match = function(name)
        -- an entry's id is its file name; a pattern without the suffix matches too
        return name:match(pat) ~= nil or name:gsub("%.[^.]*$", ""):match(pat) ~= nil
      end }
    end
  end
end

-- The kernel image of kver: the distributions' names, then the module tree's copy.
function M.kernel_image(ctx, kver)
  local base = machine.pkgbase(ctx.read, kver)
  local cands = { "/boot/vmlinuz-" .. kver, "/boot/vmlinux-" .. kver }
  if base then cands[#cands + 1] = "/boot/vmlinuz-" .. base end
  for _, d in ipairs(machine.MODULE_DIRS) do cands[#cands + 1] = d .. "/" .. kver .. "/vmlinuz" end
  for _, p in ipairs(cands) do if exists(ctx, p) then return p end end
  return nil
end

-- Does a boot-loader path name kver's kernel? The distributions' names: `vmlinuz-<kver>`
-- and `vmlinux-<kver>` (Debian, Fedora, openSUSE), `vmlinuz-<pkgbase>` (Arch names the
-- kernel by its package: `base`, from <moddir>/<kver>/pkgbase), or a `<kver>/` directory
-- (kernel-install's `/<token>/<kver>/linux`).
function M.names_kernel(p, kver, base)
  if not p then return false end
  local name = p:match("([^/]*)$")
  if name == "vmlinuz-" .. kver or name == "vmlinux-" .. kver then return true end
  if base and (name == "vmlinuz-" .. base or name == "vmlinux-" .. base) then return true end
  return ("/" .. p .. "/"):find("/" .. kver .. "/", 1, true) ~= nil
end

-- The grubenv beside a grub.cfg (its $prefix, where `load_env` reads it): bootcfg.grubenv's
-- table, {} when there is none | nil, err.
function M.grubenv(ctx, cfg_path)
  local p = cfg_path:gsub("[^/]*$", "") .. "grubenv"
  local text, err = ctx.read(p)
  if err then return nil, err end
  return require("vfioinit.boot.cfg").grubenv(text)
end

return M
