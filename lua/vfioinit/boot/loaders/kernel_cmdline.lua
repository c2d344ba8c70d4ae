-- /etc/kernel/cmdline: the command line kernel-install writes into BLS entries and UKIs
-- (systemd-boot, `layout=uki`/`bls`), and mkinitcpio's first UKI source. One word file,
-- edited in place. When it is absent, kernel-install falls back to /usr/lib/kernel/cmdline
-- and then to the running system's /proc/cmdline: vfioinit creates /etc/kernel/cmdline
-- from /usr/lib/kernel/cmdline, else from what baseline.lua gives (/proc/cmdline on the
-- running system, BOOT_IMAGE= and initrd= dropped as 90-loaderentry does; for another root
-- its own boot entries), plus the parameters, and records that start.
-- No regeneration command after apply: what reads the file is the image rebuild (UKIs), and
-- where kernel-install builds what boots the rebuild is `kernel-install add`, which also
-- rewrites the BLS entries' `options` (lua/vfioinit/boot/kinstall.lua); the changed file marks the
-- images stale. After `revert` restored the file, `kernel-install add` runs for each kernel
-- whose BLS entry kernel-install wrote, so the entries lose the words too (a UKI's are in
-- the image: `vfioinit rebuild`, as for every image after revert).
local util = require("vfioinit.util")  -- what only edits need is loaded when they run
local wordfiles = util.lazy "vfioinit.boot.cmdline.wordfiles"
local ownids = require("vfioinit.boot.cmdline.ownids")
local baseline = util.lazy "vfioinit.boot.cmdline.baseline"

local M = { name = "kernel_cmdline", order = 50, stale_images = true, reads = { "bls", "uefi" },
  title = "/etc/kernel/cmdline, kernel-install layout=uki|bls",
  covers = { cmdline_d = true } }  -- mkinitcpio's UKIs read /etc/kernel/cmdline first

M.FILE = "/etc/kernel/cmdline"
M.VENDOR = "/usr/lib/kernel/cmdline"
M.INSTALL_CONF = { "/etc/kernel/install.conf", "/usr/lib/kernel/install.conf" }

-- kernel-install's layout (first install.conf that sets it), or nil.
function M.layout(ctx)
  for _, p in ipairs(M.INSTALL_CONF) do
    local t = ctx.read(p)
    local v = t and (("\n" .. t):match("\n%s*layout%s*=%s*[\"']?([%w-]+)"))
    if v then return v end
  end
end

function M.detect(ctx)
  local layout = M.layout(ctx)
  return ctx.exists(M.FILE) or layout == "uki" or layout == "bls"
end

function M.edits(ctx, wants)
  local text, err = ctx.read(M.FILE)
  if err then return nil, err end
  -- what a created file starts from: the line kernel-install would use without it
  local vendor, verr = ctx.read(M.VENDOR)
  if verr then return nil, verr end
  local files, drops, base = {}, {}, nil
  if text then
    files[1] = { path = M.FILE, text = text }
    drops[M.FILE] = ownids.drop(ctx, M.FILE, text, wordfiles.line, baseline.recorded(ctx, M.name), wants)
  elseif vendor then base = wordfiles.line(vendor)
  else
    local berr
    base, berr = baseline.base(ctx, M.FILE)
    if not base then return nil, berr end
  end
  local changes, why = wordfiles.plan(files, M.FILE, wants, base, drops)
  if not changes then return nil, ("%s: %s"):format(M.FILE, why) end
  if not text then changes[#changes + 1] = baseline.record(ctx, M.name, M.FILE, base) end
  return changes
end

function M.regenerate() return nil end

function M.files() return { M.FILE } end

-- after revert: `kernel-install add KVER <kernel image>` for each kernel whose BLS entry
-- kernel-install wrote.
function M.revert_argvs(ctx)
  local kernels = require("vfioinit.detect").kernels(ctx.root)
  return require("vfioinit.boot.kinstall").argvs(ctx, kernels)
end

return M
