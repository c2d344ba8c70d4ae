--[[ vfioinit.trial.uki: a trial for a kernel booted as a unified kernel image is a UKI of its
own beside the default one, a systemd-boot type #2 entry with boot counting:
`<dir>/<stem>-vfioinit-trial+1.efi` for the default `<dir>/<stem>.efi` in EFI/Linux/.

systemd-boot 252 (src/boot/efi/boot.c) takes a type #2 entry's sort key from its `.osrel`
(IMAGE_ID=, else ID=) and, between equal keys and versions, orders by file name, where
`<stem>-…` sorts after `<stem>.efi`: with the root's os-release the default would come
first. The trial UKI's os-release therefore says IMAGE_ID=0vfioinit-trial (the BLS trial's
sort key), so the next boot starts it; `+1` makes systemd-boot rename it `+0-1` before
starting it, a failed boot leaves it "bad" (sorted last) and the boot after it starts the
default. systemd-bless-boot drops the counter after a good boot (`<stem>-vfioinit-trial.efi`).

dracut (059 and upstream) has no option for the os-release it embeds: the staged build's
`.osrel` is the root's, and set_osrel replaces it with objcopy (binutils, which dracut's
--uefi needs anyway) at the same address, before the UKI is checked and renamed.
]]
local core = require("vfioinit.core")
local bls = require("vfioinit.trial.bls")

local M = {}

M.EXT = ".efi"
M.PART = ".part"   -- the UKI while it is built and checked: not *.efi, systemd-boot skips it

--- base(path) -> the trial UKI's path without counter and `.efi`, for the default UKI `path`
-- | nil, err when `path` is not a type #2 entry (a .efi file in EFI/Linux/).
function M.base(path)
  local dir, stem = path:match("^(.*/[Ee][Ff][Ii]/[Ll][Ii][Nn][Uu][Xx])/([^/]+)%.[Ee][Ff][Ii]$")
  if not dir then
    return nil, ("%s: a trial UKI is a systemd-boot type #2 entry (EFI/Linux/*.efi, boot counting); "
      .. "this UKI is not one: apply without --trial"):format(path)
  end
  return dir .. "/" .. stem .. "-vfioinit-trial"
end

-- os-release's keys a trial UKI sets: the sort key, and a title that names the trial.
local function quote(s) return '"' .. s:gsub('[\\"$`]', "\\%0") .. '"' end

--- osrel(text, id) -> the trial UKI's os-release: the root's, with IMAGE_ID= the trial's
-- sort key and PRETTY_NAME marked "(vfioinit trial <id>)".
function M.osrel(text, id)
  local out, pretty = {}, nil
  for line in ((text or "") .. "\n"):gmatch("([^\n]*)\n") do
    local k, v = line:match("^%s*([A-Z_]+)=(.*)$")
    if k == "PRETTY_NAME" then pretty = v:match('^"(.*)"$') or v:match("^'(.*)'$") or v
    elseif k ~= "IMAGE_ID" and line ~= "" then out[#out + 1] = line end
  end
  out[#out + 1] = "PRETTY_NAME=" .. quote((pretty or "Linux") .. " (vfioinit trial " .. id .. ")")
  out[#out + 1] = "IMAGE_ID=" .. bls.SORT_KEY
  return table.concat(out, "\n") .. "\n"
end

--- set_osrel(root, path, staged, text, run_command, opts) -> the command's entry | nil, err:
-- the UKI `path`'s .osrel becomes `text` (the file `staged`, both inside root), at the
-- address the old one had; refused when it would reach into the next section.
function M.set_osrel(root, path, staged, text, run_command, opts)
  local secs, err = core.image.sections(root, path)
  if not secs then return nil, err end
  local at, room
  for _, s in ipairs(secs) do if s.name == ".osrel" then at = s.vma end end
  if not at then return nil, path .. ": dracut built it without a .osrel section (root has no os-release) to replace" end
  for _, s in ipairs(secs) do
    if s.vma > at and (not room or s.vma - at < room) then room = s.vma - at end
  end
  if room and #text > room then
    return nil, ("%s: the trial's os-release (%d bytes) does not fit before the section after .osrel (%d bytes): "
      .. "apply without --trial"):format(path, #text, room)
  end
  local r = run_command(root, { target = "objcopy", argv = { "objcopy", "--remove-section", ".osrel",
    "--add-section", ".osrel=" .. staged, "--change-section-vma", (".osrel=0x%x"):format(at), path } }, opts)
  if not r.ok then return nil, r.error end
  if core.image.section(root, path, ".osrel") ~= text then
    return nil, ("%s: %s left a .osrel other than %s"):format(path, r.command, staged)
  end
  return r
end

--- find(ctx, base) -> the trial UKI's path now (any counter) and its state, as bls.find.
function M.find(ctx, base) return bls.find(ctx, base, M.EXT) end

return M
