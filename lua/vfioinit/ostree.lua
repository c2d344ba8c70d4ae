--[[ vfioinit.ostree: image-based roots (ostree deployments, rpm-ostree, bootc).

On these systems /usr is read-only, the initramfs belongs to the deployment and the kernel
command line lives in the deployment's BLS entry: the system's own tools change them, by
making or editing deployments (docs/INTERNALS.md "Image-based systems").

  local info = ostree.detect(root)   -- nil: not an ostree root

Two kinds of root:
  deployed  a sysroot with deployments: `/ostree/deploy` (the sysroot itself, not booted:
            vfioinit acts on its default deployment) or `/sysroot/ostree/deploy` (the root is
            a deployment, e.g. the running system). Deployments come from the BLS entries in
            /boot/loader/entries, each naming its deployment with `ostree=/ostree/boot.N/OS/
            BOOTCSUM/SERIAL` (a symlink chain ending at /ostree/deploy/OS/deploy/CSUM.SERIAL).
  image     an image build root (a bootc or ostree container's filesystem): the kernel and its
            initramfs at /usr/lib/modules/KVER/{vmlinuz,initramfs.img}, no deployments.
Who manages it: bootc when its command or /usr/lib/bootc is there, else rpm-ostree when its
command is, else plain ostree.
]]
local core = require("vfioinit.core")
local machine = require("vfioinit.machine")
local context = require("vfioinit.context")
local util = require("vfioinit.util")
-- what reading a deployment needs (every run asks locate, most roots are no sysroot)
local bootcfg = util.lazy "vfioinit.boot.cfg"
local cmdline = util.lazy "vfioinit.edit.cmdline"

local M = {}

M.ENTRIES = "/boot/loader/entries"
M.BOOTED_FLAG = "/run/ostree-booted"

local function stat(root, p) return core.fs.stat(root, p) end
local function is_dir(root, p) local st = stat(root, p); return st and st.type == "dir" end
local function is_file(root, p) local st = stat(root, p); return st and st.type == "file" end

-- A host path for a path inside root.
function M.host(root, p)
  if p == "" or p == "/" then return root end
  return (root == "/" and "" or root:gsub("/+$", "")) .. p
end

-- Which tool manages the tree at `prefix` (inside root): "bootc", "rpm-ostree" or "ostree".
-- `look`: context.finder(root, prefix), when the caller asks it more.
function M.manager(root, prefix, look)
  look = look or context.finder(root, prefix)
  if machine.command(look, "bootc") or is_dir(root, prefix .. "/usr/lib/bootc") then return "bootc" end
  if machine.command(look, "rpm-ostree") then return "rpm-ostree" end
  return "ostree"
end

-- The kernels of an image tree: /usr/lib/modules/KVER holding vmlinuz.
local function image_kernels(root, prefix)
  local out = {}
  for _, k in ipairs(core.fs.dir(root, prefix .. "/usr/lib/modules") or {}) do
    if is_file(root, prefix .. "/usr/lib/modules/" .. k .. "/vmlinuz") then out[#out + 1] = k end
  end
  table.sort(out, machine.version_less)
  return out
end

-- The initramfs a deployment's tree carries for kver (what ostree copies to /boot when it
-- deploys), or nil: /usr/lib/modules/KVER/initramfs.img, else /usr/lib/ostree-boot's.
function M.base_image(root, prefix, kver)
  for _, p in ipairs({ "/usr/lib/modules/" .. kver .. "/initramfs.img", "/usr/lib/ostree-boot/initramfs-" .. kver .. ".img",
    "/boot/initramfs-" .. kver .. ".img" }) do
    if is_file(root, prefix .. p) then return prefix .. p end
  end
end

-- A BLS path (relative to the partition holding loader/entries, /boot) as a path in root.
local function on_boot(p)
  if p:match("^/boot/") then return p end
  return "/boot" .. (p:sub(1, 1) == "/" and p or "/" .. p)
end

-- The deployments the BLS entries name, default first (highest `version`), or nil, err.
local function deployments(root)
  local list = {}
  for _, n in ipairs(core.fs.dir(root, M.ENTRIES) or {}) do
    local p = M.ENTRIES .. "/" .. n
    local text = n:match("%.conf$") and core.fs.read(root, p, 65536)
    if text then
      local e, msg, line = bootcfg.bls(text)
      if not e then return nil, ("%s:%d: %s"):format(p, line, msg) end
      local w = e.options and cmdline.find(e.options, "ostree")
      if w and w.value then
        local path = core.fs.resolve(root, w.value)
        local osname, csum, serial = (path or ""):match("/ostree/deploy/([^/]+)/deploy/(%x+)%.(%d+)$")
        local initrds = {}
        for i, r in ipairs(e.initrd or {}) do initrds[i] = on_boot(r) end
        list[#list + 1] = {
          entry = p, file = n, title = e.title, version = tonumber(e.version) or 0, options = e.options,
          options_line = e.lines.options, ostree = w.value, path = osname and path or nil,
          osname = osname, csum = csum, serial = tonumber(serial),
          linux = e.linux and on_boot(e.linux), initrds = initrds,
          kver = e.linux and e.linux:match("vmlinuz%-([^/]+)$"),
          error = not osname and ("%s:%d: ostree=%s names no deployment in %s"):format(p, e.lines.options, w.value, root) or nil,
        }
      end
    end
  end
  table.sort(list, function(a, b)
    if a.version ~= b.version then return a.version > b.version end
    return a.file < b.file
  end)
  for i, d in ipairs(list) do d.index = i - 1 end
  return list
end

-- Is `d` the running deployment? Only a root that says it runs (/run/ostree-booted) has one:
-- the deployment whose directory root's "/" is (a bind mount of it); for root "/" also the
-- one /proc/cmdline's ostree= names (this machine's own command line: a composefs root is no
-- bind mount).
local function booted_test(root)
  if not stat(root, M.BOOTED_FLAG) then return function() return false end end
  local top = stat(root, "/")
  local by_cmdline
  if root == "/" then
    local line = core.fs.read("/", "/proc/cmdline", 65536)
    local w = line and cmdline.find(line, "ostree")
    by_cmdline = w and w.value and core.fs.resolve("/", w.value)
  end
  return function(d)
    local st = d.path and stat(root, d.path)
    return (st and top and st.dev == top.dev and st.ino == top.ino) or (by_cmdline ~= nil and d.path == by_cmdline)
  end
end

-- detect(root[, look]) -> info | nil (not ostree) | nil, err (`look`: context.finder(root),
-- the caller's, which a run shares with its detection and context)
-- info = {kind = "deployed"|"image", manager=, evidence={...}, sysroot= (deployed: where
-- ostree/ is, "/" or "/sysroot"), deployments={...} (default first), default=, booted=,
-- pending=, target= (the deployment vfioinit edits: the booted one, else the default),
-- prefix= (the target's path inside root; "" when root is the target), kernels= (image)}
function M.detect(root, look)
  look = look or context.finder(root)
  local sysroot
  if is_dir(root, "/sysroot/ostree/deploy") then sysroot = "/sysroot"
  elseif is_dir(root, "/ostree/deploy") then sysroot = "/" end
  if not sysroot then
    local ev = {}
    local lnk = core.fs.stat(root, "/ostree", true)
    if lnk and lnk.type == "link" then ev[#ev + 1] = "/ostree (link)" end
    for _, p in ipairs({ "/usr/lib/bootc", "/usr/lib/ostree-boot" }) do
      if is_dir(root, p) then ev[#ev + 1] = p end
    end
    local mgr = M.manager(root, "", look)
    if mgr ~= "ostree" then ev[#ev + 1] = mgr .. " (command)" end
    if #ev == 0 then return nil end  -- nothing of ostree: its kernels are not looked for
    local kernels = image_kernels(root, "")
    -- Fedora puts vmlinuz there on every system: the image's own initramfs beside it (or the
    -- /ostree link) tells an image tree from a system with rpm-ostree or bootc installed
    local images = {}
    for _, k in ipairs(kernels) do images[#images + 1] = M.base_image(root, "", k) end
    if #ev == 0 or #kernels == 0 or (#images == 0 and not (lnk and lnk.type == "link")) then return nil end
    -- a committed tree (ostree keeps /etc's defaults in /usr/etc): one deployment's files, whose
    -- /usr is hardlinked to the repository and whose boot entries are the sysroot's
    if is_dir(root, "/usr/etc") then
      return nil, ("%s: an ostree deployment's tree (/usr/etc): give vfioinit its sysroot (the directory holding "
        .. "ostree/ and boot/), or run it on the booted system"):format(root)
    end
    for _, img in ipairs(images) do ev[#ev + 1] = img end
    return { kind = "image", manager = mgr, evidence = ev, prefix = "", kernels = kernels, deployments = {} }
  end
  local list, err = deployments(root)
  if not list then return nil, err end
  local info = { kind = "deployed", sysroot = sysroot, deployments = list,
    evidence = { (sysroot == "/" and "" or sysroot) .. "/ostree/deploy" } }
  if #list == 0 then
    return nil, ("%s: %s/ostree/deploy is there but no BLS entry names a deployment (ostree=)"):format(M.ENTRIES,
      sysroot == "/" and "" or sysroot)
  end
  for _, d in ipairs(list) do
    if d.error then return nil, d.error end
  end
  info.evidence[#info.evidence + 1] = list[1].entry .. " (ostree=)"
  info.default = list[1]
  local is_booted = booted_test(root)
  for _, d in ipairs(list) do
    d.default = d == list[1] or nil
    if sysroot ~= "/" and not info.booted and is_booted(d) then d.booted = true; info.booted = d end
  end
  -- the next boot starts the default; it is pending while another one runs
  if info.booted and info.booted ~= info.default then info.pending = info.default; info.default.pending = true end
  info.target = info.booted or info.default
  -- a root that is a deployment (/sysroot) shows its own files; a bare sysroot shows them
  -- under the deployment's path
  info.prefix = sysroot == "/" and info.target.path or ""
  if info.prefix ~= "" then look = context.finder(root, info.prefix) end
  info.manager = M.manager(root, info.prefix, look)
  -- what changes a deployment here: rpm-ostree's daemon when it is there, else ostree itself
  info.tool = machine.command(look, "rpm-ostree") and "rpm-ostree" or "ostree"
  for _, d in ipairs(list) do
    d.base = d.kver and M.base_image(root, d.path, d.kver)
    d.origin = core.fs.read(root, d.path .. ".origin", 65536)
  end
  return info
end

-- The boot chain of a deployment, in boot/chains.lua's shape (CONTRACT "Boot chains"):
-- its BLS entry, every initrd it names (the base image and each overlay), its options.
function M.chain(d)
  return { kernel = d.kver, kind = "image", loader = "bls", entry = "bls: " .. d.file, path = d.linux,
    initramfs = d.initrds[1], initrds = d.initrds, cmdline = d.options, cmdline_source = ("%s:%d"):format(d.entry,
      d.options_line or 1), default = d.default, default_by = d.default and { "ostree" } or nil,
    deployment = d.path, booted = d.booted, pending = d.pending }
end

-- locate(root, op[, look]) -> info | nil (not ostree) | nil, err: detect, plus `uroot` (the root
-- given) and `root` (the host directory the run acts on: root itself, or for a bare sysroot
-- the target deployment's; `revert` takes the first deployment, default first, holding
-- vfioinit's manifest: the one an apply wrote, now the rollback of the deployment it made).
function M.locate(root, op, look)
  local info, err = M.detect(root, look)
  if not info then return nil, err end
  info.uroot, info.root = root, root
  if info.prefix ~= "" then
    if op == "revert" then
      local state = require("vfioinit.state.manifest")
      for _, d in ipairs(info.deployments) do
        if stat(root, d.path .. state.MANIFEST) then info.target, info.prefix = d, d.path; break end
      end
    end
    info.root = M.host(root, info.prefix)
  end
  return info
end

-- The boot chains of kver, read again (a deployment made in this run counts), each with
-- `root` = the host root its paths are in; the default first.
function M.chains(info, kver)
  local fresh, err = M.detect(info.uroot)
  if not fresh then return nil, err or (info.uroot .. ": no ostree deployment any more") end
  local out = {}
  for _, d in ipairs(fresh.deployments or {}) do
    if d.kver == kver then
      local c = M.chain(d)
      c.root = info.uroot
      c.exists = c.initramfs ~= nil and core.fs.stat(info.uroot, c.initramfs) ~= nil
      out[#out + 1] = c
    end
  end
  return out
end

-- For `status`: what manages root and what each deployment boots.
function M.status(info, gen)
  local out = { kind = info.kind, manager = info.manager, sysroot = info.sysroot, evidence = info.evidence,
    deployments = {}, kernels = info.kernels, mode = gen and gen.mode }
  for _, d in ipairs(info.deployments) do
    local c = M.chain(d)
    c.osname, c.checksum, c.serial, c.index, c.base = d.osname, d.csum, d.serial, d.index, d.base
    out.deployments[#out.deployments + 1] = c
    if d.booted then out.booted = c end
    if d.pending then out.pending = c end
    if d.default then out.default = c end
  end
  return out
end

return M
