--[[ vfioinit.boot.uki: what a unified kernel image carries, read through core.image's
PE/COFF reader (src/pe.c): the initramfs in its `.initrd` section and the kernel
command line in `.cmdline` (as systemd-stub hands it to the kernel).

  uki.read(root, path) -> {cmdline=, uname=, osrel=, initrd={offset=, size=}, sections=}
                          | nil, "PATH: reason"
  uki.list(root, path [, want]) -> entries, contents, segments   (like core.image.list,
                          over the `.initrd` section only) | nil, "PATH: reason"
]]
local core = require("vfioinit.core")

local M = {}

M.MAX_TEXT = 64 * 1024  -- .cmdline/.uname/.osrel larger than this are not text we read

local function find(secs, name)
  for _, s in ipairs(secs) do
    if s.name == name then return s end
  end
end

-- Section text as the stub uses it: up to the first NUL; mkinitcpio writes
-- "<line>\n\0" and ukify "<line>", the trailing blanks are not part of the line.
local function text(root, path, secs, name)
  if not find(secs, name) then return nil end
  local s, err = core.image.section(root, path, name, M.MAX_TEXT)
  if not s then return nil, err end
  s = s:match("^[^%z]*")
  return (s:gsub("%s+$", ""))
end

function M.read(root, path)
  local secs, err = core.image.sections(root, path)
  if not secs then return nil, err end
  local initrd = find(secs, ".initrd")
  if not find(secs, ".linux") then
    return nil, path .. ": a PE image without a .linux section (not a unified kernel image)"
  end
  local r = { sections = secs, initrd = initrd and { offset = initrd.offset, size = initrd.size } }
  for _, name in ipairs({ "cmdline", "uname", "osrel" }) do
    local v, terr = text(root, path, secs, "." .. name)
    if terr then return nil, terr end
    r[name] = v
  end
  return r
end

function M.list(root, path, want)
  local info, err = M.read(root, path)
  if not info then return nil, err end
  if not info.initrd or info.initrd.size == 0 then
    return nil, path .. ": the unified kernel image has no .initrd section"
  end
  local entries, contents, segments = core.image.list(root, path, want, info.initrd)
  if not entries then return nil, contents end
  return entries, contents, segments, info
end

return M
