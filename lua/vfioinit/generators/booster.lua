-- booster (anatol/booster): `/etc/booster.yaml`, key `modules_force_load`.
--
-- Upstream facts this relies on (anatol/booster):
-- * generator/config.go: `ModulesForceLoad string yaml:"modules_force_load"` is one
--   comma-separated string (older releases `strings.Split(v, ",")` without trimming,
--   newer ones trim each item), so the value is rewritten with bare commas and a
--   YAML list there is refused (go-yaml cannot decode a sequence into a string).
-- * docs/manpage.md: force-loaded modules are added to the image automatically;
--   `extra_files` items starting with `/` are absolute paths copied into the image.
-- * init/config.go + generator/generator.go: the image carries
--   `/etc/booster.init.yaml` (stored as `etc/booster.init.yaml`), a go-yaml dump of
--   InitConfig whose `modulesforceload:` list is what init force-loads.
-- * generator/kmod.go readModprobeOptions: `options` lines of /etc/modprobe.d are
--   copied into the init config at build time.
-- * packaging/arch: pacman hook 90-booster-install.hook runs booster-install, which
--   builds `/boot/booster-<pkgbase>.img` (pkgbase from /usr/lib/modules/<kver>/pkgbase)
--   with `booster build --force --kernel-version <kver> <image>`;
--   packaging/common/60-booster.install is the kernel-install plugin.
local core = require("vfioinit.core")
local machine = require("vfioinit.machine")
local order = require("vfioinit.edit.order")
local util = require("vfioinit.util")

local M = require("vfioinit.generators").identity("booster", {
  image_want = { "etc/booster.init.yaml" },
  -- booster's init is one Go program (github.com/anatol/booster init/): its image
  -- config (init/config.go InitConfig) has modules to force-load and modprobe options
  -- but no hook, script or driver_override setting, so no `bind` table.
  bind_unsupported = "its init is a single Go program with no hook to run a script before it loads drivers "
    .. "(booster.yaml has modules_force_load and modprobe options, nothing per address); use --ids, "
    .. "or initramfs-tools, dracut or mkinitcpio",
})

local KEY = "modules_force_load"
local NULLS = { ["~"] = true, null = true, Null = true, NULL = true }

-- booster's parseCommaList: split on ",", trim, drop empty items.
local function split_list(s)
  local t = {}
  for item in (s .. ","):gmatch("([^,]*),") do
    item = item:match("^%s*(.-)%s*$")
    if item ~= "" then t[#t + 1] = item end
  end
  return t
end

-- Reorder `items` (strings) so every `want` module comes before every GPU driver
-- (vfioinit.edit.order). Returns the new list and whether it differs.
function M.order(items, want, gpu, norm)
  return order.before_gpu(items, want, gpu, { norm = norm })
end

-- A string go-yaml reads back unchanged as a plain scalar.
local function plain_safe(s)
  return s:match("^[%w_/.*][%w_,./*+%-]*$") ~= nil
    or (s:match("^%-[%w_/.*][%w_,./*+%-]*$") ~= nil)
end

local function render(s, style)
  if style == "double" then
    return '"' .. s:gsub('[\\"]', "\\%0") .. '"'
  elseif style == "single" or not plain_safe(s) then
    return "'" .. s:gsub("'", "''") .. "'"
  end
  return s
end

-- Make the comma-list value of top-level `key` satisfy want/gpu; add the key at
-- the end when absent. Returns new text or nil, msg, line.
local function edit_list(text, key, want, gpu, norm)
  local entries, msg, line = core.scan.yaml(text)
  if not entries then return nil, msg, line end
  local e
  for _, x in ipairs(entries) do if x.key == key then e = x end end
  if not e then
    if #want == 0 then return text end
    local items = M.order({}, want, gpu, norm)
    local sep = (text ~= "" and text:sub(-1) ~= "\n") and "\n" or ""
    return text .. sep .. key .. ": " .. render(table.concat(items, ","), "plain") .. "\n"
  end
  if e.style == "flow" or e.style == "block" then
    return nil, ("%s: booster reads a comma-separated string here, not a list or block"):format(key), e.line
  end
  local value = e.value or ""
  if e.style == "plain" and NULLS[value] then value = "" end
  local items, changed = M.order(split_list(value), want, gpu, norm)
  if not changed then return text end
  local new = render(table.concat(items, ","), e.style)
  if e.value_first then
    return text:sub(1, e.value_first - 1) .. new .. text:sub(e.value_last + 1)
  end
  return text:sub(1, e.colon) .. " " .. new .. text:sub(e.colon + 1)
end

-- edit_text(text, want, opts) -> new text | nil, msg, line
-- opts.gpu: set of GPU driver names (default: the contract's list);
-- opts.extra_files: paths that must be listed in `extra_files` (copied into the image).
function M.edit_text(text, want, opts)
  opts = opts or {}
  text = text or ""
  local out, msg, line = edit_list(text, KEY, want or {}, opts.gpu or util.gpu_set())
  if not out then return nil, msg, line end
  if opts.extra_files and #opts.extra_files > 0 then
    out, msg, line = edit_list(out, "extra_files", opts.extra_files, {}, function(s) return s end)
    if not out then return nil, msg, line end
  end
  return out
end

function M.edits(ctx)
  return util.file_edit(ctx, M.config, function(text)
    return M.edit_text(text, ctx.modules, {
      gpu = ctx.gpu,
      -- booster copies only `options` from modprobe.d into its init config; listing
      -- the file in extra_files puts the file itself into the image as well.
      extra_files = ctx.modprobe_file and { ctx.modprobe_file } or nil,
    })
  end)
end

-- Arch's hook names images after the kernel package (pkgbase); elsewhere use kver.
function M.image_path(ctx, kver)
  return "/boot/booster-" .. (machine.pkgbase(ctx.read, kver) or kver) .. ".img"
end

function M.rebuild_argv(ctx, kvers)
  local cmds = {}
  for _, k in ipairs(kvers) do
    cmds[#cmds + 1] = {
      argv = { "booster", "build", "--force", "--kernel-version", k, M.image_path(ctx, k) },
      kernels = { k },
    }
  end
  return cmds
end

local function unquote(s)
  local q = s:sub(1, 1)
  if q == "'" and s:sub(-1) == "'" and #s >= 2 then return (s:sub(2, -2):gsub("''", "'")) end
  if q == '"' and s:sub(-1) == '"' and #s >= 2 then return (s:sub(2, -2):gsub("\\(.)", "%1")) end
  return s
end

-- The `modulesforceload:` list of the image's etc/booster.init.yaml (go-yaml output:
-- a block sequence `- name` under the key). Returns a set of module names.
function M.early_modules(contents)
  local set = {}
  local text = util.member(contents, "etc/booster.init.yaml")
  if not text then return set end
  local entries = core.scan.yaml(text)
  if entries then
    for _, e in ipairs(entries) do
      if e.key == "modulesforceload" then
        if e.items then
          for _, m in ipairs(e.items) do set[m] = true end
        elseif e.style == "block" then
          local body = text:sub(e.value_first, e.value_last) .. "\n"
          for item in body:gmatch("%-[ \t]+([^\n]-)[ \t\r]*\n") do set[unquote(item)] = true end
        elseif e.value then
          for _, m in ipairs(split_list(e.value)) do set[m] = true end
        end
      end
    end
    return set
  end
  -- not the subset yaml_scan reads: fall back to the block-sequence shape go-yaml writes
  local body = text:match("\nmodulesforceload:[ \t]*\n(.-)\n%S") or text:match("^modulesforceload:[ \t]*\n(.-)\n%S")
    or text:match("\nmodulesforceload:[ \t]*\n(.*)$") or text:match("^modulesforceload:[ \t]*\n(.*)$")
  if body then
    for item in (body .. "\n"):gmatch("%s*%-[ \t]+([^\n]-)[ \t\r]*\n") do set[unquote(item)] = true end
  end
  return set
end

return M
