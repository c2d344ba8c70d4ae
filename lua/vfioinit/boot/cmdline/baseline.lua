-- The command line a file vfioinit creates starts from (/etc/kernel/cmdline for
-- kernel-install, /etc/cmdline.d/vfioinit.conf for mkinitcpio's UKIs), where the tool reading
-- it would otherwise take the running system's /proc/cmdline, and vfioinit's record of it.
--
-- On the running system (root `/`) it is /proc/cmdline, as the tool would do. Any other root
-- is another machine: nothing outside it is read (docs/CONTRACT.md). Its words come from what
-- it boots (lua/vfioinit/boot/chains.lua: BLS entries, grub.cfg's normal entries, UKIs'
-- `.cmdline`) when every one of those that names a command line gives the same words; else
-- vfioinit refuses, naming the file to create.
--
-- The record /etc/vfioinit/<target>.base keeps that line, written with the file and removed
-- by revert with it: which vfio-pci.ids vfioinit added to the file it created is counted
-- from it (lua/vfioinit/boot/cmdline/ownids.lua), never from /proc/cmdline, which holds them
-- once the machine booted with the file.
local bootchain = require("vfioinit.boot.chains")
local words = require("vfioinit.boot.cmdline.words")
local wordfiles = require("vfioinit.boot.cmdline.wordfiles")
local cmdtool = require("vfioinit.boot.cmdline.cmdtool")

local M = {}

function M.record_path(target) return cmdtool.DIR .. "/" .. target .. ".base" end

-- A chain's line as a new file's start, the loader's own words dropped; nil when it is
-- unknown or not the one a normal boot gets (its loader's `recovery` entry, a variable the
-- loader expands).
local function usable(loaders, c)
  local line = c.cmdline
  if not line or line:find("$", 1, true) then return nil end
  local l = loaders:get(c.loader)
  if l and l.recovery and l.recovery(c) then return nil end
  return words.running(line)
end

-- base(ctx, file) -> the line a created `file` starts from | nil, "FILE: why"
function M.base(ctx, file)
  if ctx.root == "/" then return words.running() end
  local kvers = require("vfioinit.detect").kernels(ctx.root)
  local loaders = require("vfioinit.boot").new()
  local chains, err = bootchain.chains(ctx, kvers, nil, loaders)
  if not chains then return nil, err end
  local first, other
  for _, k in ipairs(kvers) do
    for _, c in ipairs(chains[k] or {}) do
      local line = usable(loaders, c)
      if line and not first then first = { line = line, source = c.cmdline_source }
      elseif line and line ~= first.line and not other then other = { line = line, source = c.cmdline_source } end
    end
  end
  local create = ("create %s with the kernel command line %s should boot with (root= and the rest) and run again")
    :format(file, ctx.root)
  if other then
    return nil, ("%s: absent, and what %s boots gives two command lines (%s: %q; %s: %q); %s"):format(file,
      ctx.root, first.source, first.line, other.source, other.line, create)
  end
  if not first then
    return nil, ("%s: absent, and no boot entry of %s gives its command line; vfioinit reads nothing outside "
      .. "the root (not this machine's /proc/cmdline): %s"):format(file, ctx.root, create)
  end
  return first.line
end

-- The recorded start of a file vfioinit created, or false when there is no record (an
-- older vfioinit created it, or the record is gone: which ids are the user's is unknown).
function M.recorded(ctx, target)
  local text = ctx.read(M.record_path(target))
  return text and wordfiles.line(text) or false
end

-- The plan change that records `base` for `file` (nil when the record already says so).
function M.record(ctx, target, file, base)
  local path = M.record_path(target)
  local was = ctx.read(path)
  local text = ("# vfioinit --cmdline: the command line %s was created from, the words that were there "
    .. "before vfioinit's (`vfioinit revert` removes both files)\n%s\n"):format(file, base)
  if was == text then return nil end
  return { path = path, before = was, after = text }
end

return M
