-- image: policy helpers over core.image.list (the native initramfs reader).
local core = require("vfioinit.core")

local M = {}

-- Compression suffixes a module file may carry (kmod's and the kernel's).
local SUFFIX = { [""] = true, [".xz"] = true, [".zst"] = true, [".gz"] = true }

local function norm(name) return (name:gsub("-", "_")) end

-- list(root, path [, want]) -> entries, contents, segments, uki | nil, msg
-- `path` is inside root; errors name it as seen in root, not the host path.
-- A unified kernel image (a PE file: "MZ", never the start of an initramfs) is
-- listed through its .initrd section; `uki` is then uki.read's table (cmdline, ...).
function M.list(root, path, want)
  -- opened inside root (symlinks resolve there), only when it is a regular file
  if core.image.sections(root, path) then return require("vfioinit.boot.uki").list(root, path, want) end
  return core.image.list(root, path, want)
end

-- list_all(root, paths, want) -> entries, contents | nil, msg: several images as the kernel
-- unpacks them one after the other (a boot entry's initrds): a member of a later one
-- replaces the earlier one of that name.
function M.list_all(root, paths, want)
  local entries, contents, at = {}, {}, {}
  for _, p in ipairs(paths) do
    local es, cs = M.list(root, p, want)
    if not es then return nil, cs end
    for _, e in ipairs(es) do
      local n = e.name:gsub("^%./", ""):gsub("^/+", "")
      if at[n] then entries[at[n]] = e else entries[#entries + 1] = e; at[n] = #entries end
    end
    for k, v in pairs(cs or {}) do contents[k] = v end
  end
  return entries, contents
end

-- The set of module names (normalized with `_`) that `entries` carry for `kver`:
-- files below lib/modules/<kver>/ or usr/lib/modules/<kver>/ named NAME.ko[.xz|.zst|.gz].
function M.modules(entries, kver)
  local found = {}
  local p1, p2 = "lib/modules/" .. kver .. "/", "usr/lib/modules/" .. kver .. "/"
  for _, e in ipairs(entries) do
    if e.type ~= "dir" then
      local name = e.name:gsub("^%./", ""):gsub("^/+", "")
      local rest
      if name:sub(1, #p1) == p1 then rest = name:sub(#p1 + 1)
      elseif name:sub(1, #p2) == p2 then rest = name:sub(#p2 + 1) end
      if rest then
        local base, suffix = rest:match("([^/]+)%.ko(.*)$")
        if base and SUFFIX[suffix] then found[norm(base)] = true end
      end
    end
  end
  return found
end

-- has_modules(entries, kver, modules) -> list of the `modules` (as given, each
-- once; `-`/`_` the same) that no entry provides. Empty when all are there.
function M.has_modules(entries, kver, modules)
  local found = M.modules(entries, kver)
  local missing, seen = {}, {}
  for _, m in ipairs(modules) do
    local n = norm(m)
    if not found[n] and not seen[n] then missing[#missing + 1] = m end
    seen[n] = true
  end
  return missing
end

return M
