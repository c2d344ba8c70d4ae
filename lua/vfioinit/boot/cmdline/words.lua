-- Shared by the command-line targets (lua/vfioinit/boot/loaders/*.lua): the parameters
-- vfioinit adds, and the two edits every target is made of: "merge a parameter where the
-- command line already has it" and "the words a drop-in must add". Pure text, no I/O
-- except `running` (the running system's /proc/cmdline, read like kernel-install does).
local core = require("vfioinit.core")
local cmdline = require("vfioinit.edit.cmdline")

local M = {}

-- The parameters for a run: intel_iommu=on (AMD's IOMMU is on by default, amd_iommu needs
-- nothing), iommu=pt (passthrough for the host's own devices), and with ids vfio-pci.ids=.
-- intel_iommu takes a comma list (on,sm_on): `on` merges in; `off` is the user's choice.
function M.wants(ids)
  local w = {
    { name = "intel_iommu", value = "on", list = true, refuse = { "off" } },
    { name = "iommu", value = "pt" },
  }
  if ids and #ids > 0 then
    w[#w + 1] = { name = "vfio-pci.ids", value = table.concat(ids, ","), list = true }
  end
  return w
end

-- The words `wants` adds to a line that lacks them (nil: nothing to add), or nil, reason.
-- `s` is the effective line; parameters it already carries in some other form are the
-- caller's to merge in place (see `merge`).
function M.missing(s, wants)
  local need = {}
  for _, want in ipairs(wants) do
    if not cmdline.find(s, want.name) then need[#need + 1] = want end
  end
  local _, added = cmdline.add("", need)
  return added
end

-- Parameters s already names but with a value to merge or refuse: returns the list of
-- wants whose word is in s and is not yet as wanted, or nil, reason (refused value).
function M.to_merge(s, wants)
  local out = {}
  for _, want in ipairs(wants) do
    if cmdline.find(s, want.name) then
      local ok, why = cmdline.add(s, { want })
      if not ok then return nil, why end
      if ok ~= s then out[#out + 1] = want end
    end
  end
  return out
end

-- The running system's command line as kernel-install and mkinitcpio would reuse it when
-- no file names one: /proc/cmdline without the words the loader adds itself
-- (BOOT_IMAGE=, initrd=; 90-loaderentry.install drops them too).
-- `text` (tests) stands for /proc/cmdline.
function M.running(text)
  text = text or core.fs.read("/", "/proc/cmdline", 65536) or ""
  local keep = {}
  local list, init = cmdline.split(text)
  for _, w in ipairs(list) do
    if w.key ~= "BOOT_IMAGE" and w.key ~= "initrd" then keep[#keep + 1] = w.text end
  end
  -- `--` and what follows are init's arguments: kept as they are
  if init then keep[#keep + 1] = (text:sub(init.first):gsub("%s+$", "")) end
  return table.concat(keep, " ")
end

-- For the loaders whose files vfioinit edits in place (refind.lua, limine.lua):
-- splice(text, reps) applies byte replacements {at=, last=, text=} (last = at - 1: an insert);
-- kernels(ctx) the kernels an edit is for (the run's, else every kernel of root).
function M.splice(text, reps)
  table.sort(reps, function(a, b) return a.at > b.at end)
  for _, r in ipairs(reps) do text = text:sub(1, r.at - 1) .. r.text .. text:sub(r.last + 1) end
  return text
end

function M.kernels(ctx)
  if ctx.kernels and #ctx.kernels > 0 then return ctx.kernels end
  return require("vfioinit.detect").kernels(ctx.root)
end

return M
