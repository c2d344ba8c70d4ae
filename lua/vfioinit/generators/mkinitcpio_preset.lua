-- mkinitcpio's preset files, /etc/mkinitcpio.d/*.preset, read in one place for the three
-- modules that need them: generators/mkinitcpio.lua (which configs build, what `-p`
-- rebuilds, the image and UKI of a kernel), genuki.lua (boot chains) and
-- lua/vfioinit/boot/loaders/cmdline_d.lua (is there a UKI preset; does one set its own command line).
-- Each keeps its own rules for what a preset means; only the reading is here.
--
-- What mkinitcpio v41 does with a preset (function process_preset): it sources the file,
-- then for each name in PRESETS uses `<p>_config` (else ALL_config), `<p>_image`,
-- `<p>_uki` (else the deprecated `<p>_efi_image`), `<p>_kver` (else ALL_kver) and
-- `<p>_cmdline` (else ALL_cmdline). A path mkinitcpio would resolve against its working
-- directory is no place in root: a relative path, or one whose `..` climb above `/`,
-- is refused with the file and line.
local core = require("vfioinit.core")
local context = require("vfioinit.context")

local M = {}

M.DIR = "/etc/mkinitcpio.d"

-- The last plain assignment of each name (sourcing: the last one wins; `+=` is left
-- out, its value is not the whole value): {value=, items= (array), line=, array=}.
local function variables(sc)
  local vars = {}
  for _, a in ipairs(sc) do
    if not a.append then
      local items
      if a.array then
        items = {}
        for _, it in ipairs(a.items) do items[#items + 1] = it.value end
      end
      vars[a.name] = { value = not a.array and a.value or nil, items = items, line = a.line, array = a.array }
    end
  end
  return vars
end

-- A scalar's value and line (nil for an array or an unset name).
local function scalar(vars, name)
  local v = vars[name]
  if v and not v.array then return v.value, v.line end
end
M.scalar = scalar

-- nil when the path setting `name` is fine, else "PATH:LINE: reason".
local function bad_path(file, vars, name)
  local v, line = scalar(vars, name)
  if v == nil or v == "" then return nil end
  if v:sub(1, 1) ~= "/" then
    return ("%s:%d: %s must be an absolute path (got %q)"):format(file, line, name, v)
  end
  local depth = 0
  for part in v:gmatch("[^/]+") do
    if part == ".." then depth = depth - 1 elseif part ~= "." then depth = depth + 1 end
    if depth < 0 then
      return ("%s:%d: %s=%q leaves the root (too many ..)"):format(file, line, name, v)
    end
  end
end

-- One entry of PRESETS with what mkinitcpio would use for it.
local function entry(vars, pn)
  local uki_key = pn .. "_uki"
  if scalar(vars, uki_key) == nil then uki_key = pn .. "_efi_image" end
  local uki, uki_line = scalar(vars, uki_key)
  local own_kver = scalar(vars, pn .. "_kver")
  return {
    name = pn,
    config = scalar(vars, pn .. "_config") or scalar(vars, "ALL_config"),
    image = scalar(vars, pn .. "_image"),
    uki = uki ~= "" and uki or nil, uki_key = uki_key, uki_line = uki_line,
    own_kver = own_kver,                           -- `<p>_kver` alone
    kver = own_kver or scalar(vars, "ALL_kver"),   -- what mkinitcpio uses
    cmdline = scalar(vars, pn .. "_cmdline") or scalar(vars, "ALL_cmdline"),
  }
end

-- The preset files, read and parsed (see M.read).
local function read(ctx)
  local out = {}
  for _, n in ipairs(ctx.dir(M.DIR) or {}) do
    local name = n:match("^(.+)%.preset$")
    if name then
      local path = M.DIR .. "/" .. n
      local text, err = ctx.read(path)
      if err then return nil, err end
      if text then
        local sc, msg, line = core.scan.shell(text)
        if not sc then return nil, ("%s:%d: %s"):format(path, line, msg) end
        local vars = variables(sc)
        local file = { name = name, path = path, vars = vars, presets = {} }
        local list = vars.PRESETS and vars.PRESETS.items or {}
        for _, pn in ipairs(list) do
          for _, key in ipairs({ "ALL_config", pn .. "_config", pn .. "_image", pn .. "_uki", pn .. "_efi_image" }) do
            local bad = bad_path(path, vars, key)
            if bad then return nil, bad end
          end
          file.presets[#file.presets + 1] = entry(vars, pn)
        end
        out[#out + 1] = file
      end
    end
  end
  return out
end

--- read(ctx) -> list of preset files in directory order, each {name= (file name without
-- `.preset`), path=, vars= (see `variables`), presets= {entry...} (PRESETS in order)},
-- or nil, "PATH:LINE: reason" (a file that cannot be read or scanned, a bad path). Read
-- once per run (ctx.once): no stage writes a preset. The tables are shared: read only.
function M.read(ctx)
  return context.once(ctx, "mkinitcpio.presets", function() return read(ctx) end)
end

return M
