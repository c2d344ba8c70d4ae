-- verify: read each kernel's image ourselves and check the VFIO modules are
-- inside, named by the generator's early-load list, and (when configured) that
-- the image carries vfioinit's modprobe.d file unchanged.
local core = require "vfioinit.core"
local util = require "vfioinit.util"
local kernel = require "vfioinit.kernel"
local image = require "vfioinit.image"
local modprobe = require "vfioinit.modprobe"

local M = {}

-- The modules an image of `kver` must carry: the VFIO modules that kernel has as
-- loadable modules (built-in ones need nothing), plus extra requested ones.
-- `facts` (a run, lua/vfioinit/run.lua) answers from what the run already knows.
function M.required(root, kver, extra, facts)
  local mods, err
  if facts then mods, err = facts:modules(kver)
  else mods, err = kernel.modules({ root = root, kernel = kver }) end
  if not mods then return nil, err end
  local req = {}
  for _, m in ipairs(mods) do
    if m.state == "module" then req[#req + 1] = m.name end
  end
  local seen = util.set(req)
  for _, m in ipairs(extra or {}) do
    m = util.norm(m)
    -- an extra module built into this kernel (or only in another selected kernel) has no .ko here
    local st
    if facts then st = facts:module_state(kver, m)
    else st = kernel.module_state({ root = root, kernel = kver, name = m }) end
    if st ~= "builtin" and st ~= false and not seen[m] then req[#req + 1] = m; seen[m] = true end
  end
  return req
end

-- check(ctx, gen, kver, opts) -> {kernel=, generator=, image=, kind="image"|"uki", ok=,
--   missing={}, error=, cmdline= (a UKI's .cmdline)}
-- opts: modules (extra), modprobe_content (expected in the image), facts (a run)
function M.check(ctx, gen, kver, opts)
  opts = opts or {}
  local root = ctx.root
  local path, perr = gen.image_path(ctx, kver)
  local r = { kernel = kver, generator = gen.name, image = path, ok = false, missing = {} }
  if not path then r.error = perr or (gen.name .. ": no image path for kernel " .. kver); return r end
  local req, rerr = M.required(root, kver, opts.modules, opts.facts)
  if not req then r.error = rerr; return r end
  local resolved = core.fs.resolve(root, path)
  local st = resolved and core.fs.stat(root, resolved)
  if not st then
    r.error = path .. ": no image"
    r.missing = req
    return r
  end
  local want = {}
  for _, n in ipairs(gen.image_want or {}) do want[n] = true end
  local mp = modprobe.FILE:sub(2)
  local expect_mp = opts.modprobe_content
  if expect_mp then want[mp] = true end
  -- a unified kernel image is verified by its .initrd; its .cmdline is read back
  local entries, contents, _, info = image.list(root, resolved, want)
  r.kind = info and "uki" or "image"
  if not entries then r.error = contents; r.missing = req; return r end
  r.cmdline = info and info.cmdline
  local absent = image.has_modules(entries, kver, req)
  local early = gen.early_modules and gen.early_modules(contents or {}) or nil
  local seen = {}
  for _, m in ipairs(absent) do r.missing[#r.missing + 1] = m; seen[m] = true end
  if early then
    local norm = {}
    for name in pairs(early) do norm[util.norm(name)] = true end
    for _, m in ipairs(req) do
      if not seen[m] and not norm[m] then
        r.missing[#r.missing + 1] = m .. " (not in the early-load list)"
      end
    end
  end
  if expect_mp then
    local got = contents and (contents[mp] or contents["./" .. mp])
    if got ~= expect_mp then r.missing[#r.missing + 1] = modprobe.FILE end
  end
  r.size = st.size
  r.ok = #r.missing == 0
  return r
end

return M
