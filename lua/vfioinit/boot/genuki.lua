--[[ vfioinit.boot.genuki: the unified kernel images a generator builds for a kernel.

Each generator owns the rule for its UKI names (docs/INTERNALS.md "Generator interface"),
so boot chains, rebuild and verify name the same file:
* `gen.ukis(ctx, kver)` -> list of {path=, entry=, generator=, generated_from=}: every UKI,
  with the configuration line that asks for it (mkinitcpio.lua: each preset's `<p>_uki`;
  dracut.lua: `uefi=yes`, dracut 059's own output name);
* else `gen.uki_path(ctx, kver)` -> one path or nil (an extension's generator);
* else none.
]]
local M = {}

-- for_generator(ctx, gen, kver) -> list | nil, err
function M.for_generator(ctx, gen, kver)
  if type(gen.ukis) == "function" then return gen.ukis(ctx, kver) end
  if type(gen.uki_path) == "function" then
    local p, err = gen.uki_path(ctx, kver)
    if not p then
      if err then return nil, err end
      return {}
    end
    if type(p) ~= "string" or p:sub(1, 1) ~= "/" then
      return nil, ("%s: uki_path gave %s for %s, not an absolute path"):format(gen.name, tostring(p), kver)
    end
    return { { path = p, entry = gen.name .. ": uki", generator = gen.name } }
  end
  return {}
end

return M
