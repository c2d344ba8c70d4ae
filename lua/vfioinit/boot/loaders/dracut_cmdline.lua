-- dracut's UKIs: dracut (059 and dracut-ng 106, dracut.sh) writes `kernel_cmdline` from its
-- configuration into a UKI's .cmdline; it never reads /etc/kernel/cmdline (nor does 106's
-- 50-dracut.install, which only looks for root=PARTUUID there). That is the command line of
-- dracut's own `uefi=yes` UKIs and of the UKIs kernel-install builds with
-- `uki_generator=dracut` (layout=uki). vfioinit's words go into a drop-in,
-- /etc/dracut.conf.d/99-vfioinit-cmdline.conf: `kernel_cmdline+=" intel_iommu=on ... "`,
-- sourced after the file that sets kernel_cmdline (checked: a later `kernel_cmdline=` would
-- drop them, and is named). With no kernel_cmdline anywhere dracut makes the line from the
-- host-only cmdline.d it works out at build time (root= and the rest); adding to it would
-- replace that line, so vfioinit refuses and says what to set. A parameter the dracut line
-- has with another value (vfio-pci.ids=...) is refused too: vfioinit does not rewrite the
-- user's dracut setting. `revert` removes the drop-in; `vfioinit rebuild` then rebuilds the
-- UKIs without the words (they are in the image, like the modules).
local core = require("vfioinit.core")
local machine = require("vfioinit.machine")
local words = require("vfioinit.boot.cmdline.words")
local places = require("vfioinit.boot.places")

local M = { name = "dracut_cmdline", order = 40, stale_images = true, reads = { "bls", "uefi" },
  title = "dracut uefi=yes",
  -- dracut's UKIs never read /etc/kernel/cmdline: not created for them alone
  covers = { kernel_cmdline = function(ctx) return not ctx.exists("/etc/kernel/cmdline") end } }

M.DIR = "/etc/dracut.conf.d"
M.FILE = M.DIR .. "/99-vfioinit-cmdline.conf"

local function own_name() return M.FILE:match("[^/]+$") end

-- dracut's configs in its order, ours left out: list of {path=, name=, text=} | nil, err.
local function configs(ctx)
  local list = require("vfioinit.generators.dracut").conf_order(ctx)
  local out = {}
  for _, f in ipairs(list) do
    if f.name ~= own_name() then
      local t, err = ctx.read(f.path)
      if err then return nil, err end
      if t then out[#out + 1] = { path = f.path, name = f.name, text = t } end
    end
  end
  return out
end

-- The last plain assignment of each of `names` in one shell file: {name = {value=, line=, append=}}.
local function assigns(path, text, names)
  local sc, msg, line = core.scan.shell(text)
  if not sc then return nil, ("%s:%d: %s"):format(path, line, msg) end
  local out = {}
  for _, a in ipairs(sc) do
    if names[a.name] then
      out[#out + 1] = { name = a.name, value = a.array and "" or a.value, line = a.line, append = a.append, path = path }
    end
  end
  return out
end

-- kernel_cmdline and uefi after sourcing `files` in order: {kernel_cmdline=, uefi=, last=
-- (the assignment that set kernel_cmdline last without +=)} | nil, err.
local function effective(files)
  local v = {}
  for _, f in ipairs(files) do
    local list, err = assigns(f.path, f.text, { kernel_cmdline = true, uefi = true })
    if not list then return nil, err end
    for _, a in ipairs(list) do
      if a.name == "uefi" then v.uefi = a.value
      elseif a.value:find("$", 1, true) then
        return nil, ("%s:%d: kernel_cmdline refers to a variable; vfioinit cannot tell the command line"):format(a.path, a.line)
      elseif a.append then v.kernel_cmdline = (v.kernel_cmdline or "") .. a.value
      else v.kernel_cmdline, v.last = a.value, a end
    end
  end
  return v
end

-- kernel-install's install.conf (the first that exists) asks dracut for the UKI?
local function kinstall_uki(ctx)
  local conf = places.install_conf(ctx)
  return conf ~= nil and conf.layout == "uki" and conf.uki_generator == "dracut"
end

function M.detect(ctx)
  if not machine.command(ctx, "dracut") then return false end
  if kinstall_uki(ctx) then return true end
  local files = configs(ctx)
  local v = files and effective(files)
  return v ~= nil and v.uefi == "yes"
end

local function text_of(add)
  return "# vfioinit (--cmdline): the kernel command line of the UKIs dracut builds\n"
    .. 'kernel_cmdline+=" ' .. table.concat(add, " ") .. ' "\n'
end

-- The configs with our drop-in (`text`, nil: none) at its sorted place.
local function with_own(files, text)
  if not text then return files end
  local out, placed = {}, false
  for _, f in ipairs(files) do
    if not placed and f.name and machine.version_less(own_name(), f.name) then
      out[#out + 1] = { path = M.FILE, name = own_name(), text = text }; placed = true
    end
    out[#out + 1] = f
  end
  if not placed then out[#out + 1] = { path = M.FILE, name = own_name(), text = text } end
  return out
end

function M.edits(ctx, wants)
  local files, err = configs(ctx)
  if not files then return nil, err end
  local v, verr = effective(files)
  if not v then return nil, verr end
  if not v.kernel_cmdline or not v.kernel_cmdline:match("%S") then
    return nil, ("%s: dracut builds the UKI's command line from kernel_cmdline, which no dracut configuration "
      .. "sets (dracut then uses the host-only command line it works out at build time, root= included); "
      .. "vfioinit would replace that line: set kernel_cmdline=\"root=... ...\" in a file of %s first")
      :format(M.FILE, M.DIR)
  end
  local merge, why = words.to_merge(v.kernel_cmdline, wants)
  if not merge then return nil, ("%s:%d: %s"):format(v.last.path, v.last.line, why) end
  if #merge > 0 then
    return nil, ("%s:%d: kernel_cmdline has %s with another value; vfioinit does not rewrite dracut's setting: "
      .. "add the value there by hand"):format(v.last.path, v.last.line, merge[1].name)
  end
  local add = words.missing(v.kernel_cmdline, wants) or {}
  local after = #add > 0 and text_of(add) or nil
  if after then
    local nv = assert(effective(with_own(files, after)))
    if #(words.missing(nv.kernel_cmdline or "", wants) or {}) > 0 then
      return nil, ("%s:%d: sets kernel_cmdline after %s, which would drop vfioinit's parameters")
        :format(nv.last.path, nv.last.line, M.FILE)
    end
  end
  local before, rerr = ctx.read(M.FILE)
  if rerr then return nil, rerr end
  if before == after then return {} end
  return { { path = M.FILE, before = before, after = after } }
end

function M.regenerate() return nil end

function M.files() return { M.FILE } end

return M
