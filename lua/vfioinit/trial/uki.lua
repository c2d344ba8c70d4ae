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
]]
local bls = require "vfioinit.trial.bls"

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

--- find(ctx, base) -> the trial UKI's path now (any counter) and its state, as bls.find.
function M.find(ctx, base) return bls.find(ctx, base, M.EXT) end

return M
