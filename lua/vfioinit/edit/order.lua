--- vfioinit.edit.order: "every wanted module before the first GPU driver" over a plain list.
-- Used by the generators whose config is a flat list in load order (initramfs-tools'
-- lines, booster's comma list); mkinitcpio and dracut edit shell variables in place
-- (vfioinit.edit.shellvar) by the same rule.
local util = require("vfioinit.util")

local M = {}

-- Index of the first item naming a GPU driver, or nil.
local function first_gpu(items, key, gpu)
  for i, it in ipairs(items) do
    local k = key(it)
    if k and gpu[k] then return i end
  end
end

--- before_gpu(items, want, gpu [, opts]) -> list, changed
-- `items`: the list in load order, any values; opts.name(item) -> the module name it
-- holds or nil (default: the item itself); opts.norm(name) -> the name compared
-- (default util.norm, `-` = `_`); `gpu`: set of normalized GPU driver names.
-- Missing wanted modules (as the `want` string) and wanted ones sitting after a GPU
-- driver (the item itself, moved) go right before the first GPU driver, or to the end;
-- later repeats of a wanted module are dropped (the first one is what loads).
-- Returns `items` itself and false when nothing changes.
function M.before_gpu(items, want, gpu, opts)
  opts = opts or {}
  local name, norm = opts.name or function(it) return it end, opts.norm or util.norm
  local function key(it)
    local n = name(it)
    return n and norm(n)
  end
  local g = first_gpu(items, key, gpu)
  local drop, block = {}, {}
  for _, w in ipairs(want) do
    local nw, found = norm(w), nil
    for i, it in ipairs(items) do
      if key(it) == nw then
        if found then drop[i] = true else found = i end
      end
    end
    if not found then
      block[#block + 1] = w
    elseif g and found > g then
      drop[found] = true
      block[#block + 1] = items[found]
    end
  end
  if #block == 0 and next(drop) == nil then return items, false end
  local out = {}
  for i, it in ipairs(items) do
    if i == g then
      for _, b in ipairs(block) do out[#out + 1] = b end
    end
    if not drop[i] then out[#out + 1] = it end
  end
  if not g then
    for _, b in ipairs(block) do out[#out + 1] = b end
  end
  return out, true
end

return M
