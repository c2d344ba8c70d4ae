-- Reading a command line back from what the firmware's loader boots, per boot entry:
-- Boot Loader Specification entries (`options`) and unified kernel images (`.cmdline`,
-- through vfioinit.uki). Where they live: bootplaces.boot_dirs.
local bootcfg = require "vfioinit.bootcfg"
local cmdline = require "vfioinit.cmdline"
local machine = require "vfioinit.machine"
local places = require "vfioinit.bootplaces"
local uki = require "vfioinit.uki"

local M = {}

local function result(entry, source, line, wants)
  local ok, miss = cmdline.has(line or "", wants)
  return { entry = entry, source = source, cmdline = line, ok = ok, missing = miss }
end

local function bls_entries(ctx, wants, kver, out)
  local base = machine.pkgbase(ctx.read, kver)
  for _, d in ipairs(places.boot_dirs(ctx, "loader/entries")) do
    for _, n in ipairs(ctx.dir(d.path) or {}) do
      local p = d.path .. "/" .. n
      local t = n:match("%.conf$") and ctx.read(p)
      local e = t and bootcfg.bls(t)
      if e and (e.version == kver or places.names_kernel(e.linux, kver, base)) then
        out[#out + 1] = result("bls: " .. n, p, e.options, wants)
      end
    end
  end
end

-- UKIs of kver: from the run's boot chains when the run knows them, else the ESP's
-- EFI/Linux directories.
local function ukis(ctx, wants, kver, run, out)
  local paths = {}
  if run and run.boot_chains then
    for _, c in ipairs(run:boot_chains(kver) or {}) do
      if c.kind == "uki" then paths[#paths + 1] = c.path end
    end
  else
    for _, d in ipairs(places.boot_dirs(ctx, "EFI/Linux")) do
      for _, n in ipairs(ctx.dir(d.path) or {}) do
        if n:match("%.efi$") then paths[#paths + 1] = d.path .. "/" .. n end
      end
    end
  end
  for _, p in ipairs(paths) do
    local u = uki.read(ctx.root, p)
    if u and (u.uname == nil or u.uname:match("^%s*(.-)%s*%z*$") == kver) then
      out[#out + 1] = result("uki: " .. p, p, u.cmdline and u.cmdline:gsub("%z.*$", ""):gsub("%s+$", ""), wants)
    end
  end
end

-- readback(ctx, wants, kver, run) -> list of {entry=, source=, cmdline=, ok=, missing=}
function M.readback(ctx, wants, kver, run)
  local out = {}
  bls_entries(ctx, wants, kver, out)
  ukis(ctx, wants, kver, run, out)
  return out
end

return M
