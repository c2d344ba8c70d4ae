-- verify: read each kernel's image ourselves and check the VFIO modules are
-- inside, named by the generator's early-load list, and (when configured) that
-- the image carries vfioinit's modprobe.d file unchanged.
local core = require("vfioinit.core")
local util = require("vfioinit.util")
local image = require("vfioinit.image")
local uki = require("vfioinit.boot.uki")
local modprobe = require("vfioinit.modprobe")
local fingerprint = require("vfioinit.fingerprint")
local context = require("vfioinit.context")

local M = {}

-- The modules an image of `kver` must carry: the VFIO modules that kernel has as
-- loadable modules (built-in ones need nothing), plus extra requested ones. `facts` (a
-- run, lua/vfioinit/run.lua) answers from what the run knows.
function M.required(facts, kver, extra)
  local mods, err = facts:modules(kver)
  if not mods then return nil, err end
  local req = {}
  for _, m in ipairs(mods) do
    if m.state == "module" then req[#req + 1] = m.name end
  end
  local seen = util.set(req)
  for _, m in ipairs(extra or {}) do
    m = util.norm(m)
    -- an extra module built into this kernel (or only in another selected kernel) has no .ko here
    local st = facts:module_state(kver, m)
    if st ~= "builtin" and st ~= false and not seen[m] then req[#req + 1] = m; seen[m] = true end
  end
  return req
end

-- The generator's config as it is now: its main config and every file of `<config>.d`
-- (mkinitcpio.conf.d, dracut.conf.d), each as path=sha256 (or absent/unreadable).
local function config_state(root, gen)
  if not gen.config then return {} end
  local files, out = { gen.config }, {}
  for _, name in ipairs(core.fs.dir(root, gen.config .. ".d") or {}) do
    files[#files + 1] = gen.config .. ".d/" .. name
  end
  for _, f in ipairs(files) do
    local text, err = core.fs.read(root, f, context.MAX_CONFIG)
    out[#out + 1] = f .. "=" .. (text and core.hash.sha256(text) or ("unreadable " .. tostring(err)))
  end
  return out
end

local function sorted(list)
  local c = {}
  for i, v in ipairs(list) do c[i] = v end
  table.sort(c)
  return c
end

-- What an image is checked against: `req` (modules), `want` (members read), `mp` (the
-- expected modprobe.d content or nil), `bind` (the expected bind script or nil).

-- key_of(root, gen, kver, resolved, need) -> sha256 of everything besides the image's own
-- bytes that a verify result depends on: `need` and the generator's config state.
function M.key_of(root, gen, kver, resolved, need)
  local keys = {}
  for k in pairs(need.want) do keys[#keys + 1] = k end
  local parts = { fingerprint.HEADER, core._VERSION, gen.name, kver, resolved,
    "modules=" .. table.concat(sorted(need.req), ","), "members=" .. table.concat(sorted(keys), ","),
    "modprobe=" .. (need.mp and core.hash.sha256(need.mp) or "-"),
    "bind=" .. (need.bind and core.hash.sha256(need.bind) or "-") }
  for _, c in ipairs(config_state(root, gen)) do parts[#parts + 1] = c end
  return core.hash.sha256(table.concat(parts, "\0"))
end

-- Read the image and fill r: missing modules, early-load list, modprobe.d file.
local function read_image(r, root, gen, kver, resolved, need)
  local req, expect_mp, bind_script = need.req, need.mp, need.bind
  -- a unified kernel image is verified by its .initrd; its .cmdline is read back
  local entries, contents, _, info
  if need.all then entries, contents = image.list_all(root, need.all, need.want)
  else entries, contents, _, info = image.list(root, resolved, need.want) end
  r.kind = info and "uki" or "image"
  if not entries then r.error = contents; r.missing = req; return end
  r.cmdline = info and info.cmdline
  local absent = image.has_modules(entries, kver, req)
  local early = gen.early_modules and gen.early_modules(contents or {}, need.chain) or nil
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
    local mp = modprobe.FILE:sub(2)
    local got = contents and (contents[mp] or contents["./" .. mp])
    if got ~= expect_mp then r.missing[#r.missing + 1] = modprobe.FILE end
    -- another modprobe.d file in the image that defeats ours (a later `options vfio-pci
    -- ids=` wins): what apply refuses in root as a conflict fails the image
    local why = modprobe.image_conflicts(entries, contents or {}, modprobe.ids_of(expect_mp))
    if why then r.missing[#r.missing + 1] = ("%s in force (the image's %s)"):format(modprobe.FILE, why) end
  end
  if bind_script then
    for _, m in ipairs(gen.bind.check(contents or {}, bind_script)) do r.missing[#r.missing + 1] = m end
  end
end

-- check(ctx, gen, kver, opts) -> {kernel=, generator=, image=, kind="image"|"uki", ok=,
-- missing={}, error=, cmdline= (a UKI's .cmdline), fingerprint=true when answered from the
-- fingerprint store without reading}
-- opts: facts (a run, or what answers its modules(kver) and module_state(kver, name)),
-- modules (extra), modprobe_content (expected in the image),
-- bind_script (the generator's bind script in root: the image must run it before udev),
-- chain (a boot chain whose initramfs is what boots instead of the generator's image:
-- that file is checked; r.chain names its entry, r.generator_image the one not checked),
-- fingerprints (a fingerprint.load store: look up unless `full`), record (remember an ok
-- read in that store: only a run that holds root's lock, lua/vfioinit/run.lua)
function M.check(ctx, gen, kver, opts)
  opts = opts or {}
  local root = ctx.root
  local path, perr = gen.image_path(ctx, kver)
  local r = { kernel = kver, generator = gen.name, image = path, ok = false, missing = {} }
  if not path then r.error = perr or (gen.name .. ": no image path for kernel " .. kver); return r end
  local iroot, all = root, nil  -- where the image is, and every initrd the chain loads
  if opts.chain then
    r.generator_image, r.chain = path, opts.chain.entry
    path, r.image = opts.chain.initramfs, opts.chain.initramfs
    -- a chain read from another tree (an ostree sysroot's /boot) names its root; the
    -- kernel unpacks every initrd of an entry in turn, later files replacing earlier ones
    iroot = opts.chain.root or root
    if opts.chain.initrds and #opts.chain.initrds > 1 then all = opts.chain.initrds; r.images = all end
  end
  local req, rerr = M.required(opts.facts, kver, opts.modules)
  if not req then r.error = rerr; return r end
  local resolved = core.fs.resolve(iroot, path)
  local now = os.time()  -- before the stat: the image must have settled by then
  local st = resolved and core.fs.stat(iroot, resolved)
  if not st then
    r.error = path .. ": no image"
    r.missing = req
    return r
  end
  local want = {}
  for _, n in ipairs(gen.image_want or {}) do want[n] = true end
  local expect_mp = opts.modprobe_content
  if expect_mp then
    want[modprobe.FILE:sub(2)] = true
    for _, d in ipairs(modprobe.IMAGE_WANT) do want[d] = true end
  end
  -- the bind script as it is in root, wired to run before udev (the generator says how)
  local bind_script = gen.bind and opts.bind_script
  if bind_script then for _, n in ipairs(gen.bind.want) do want[n] = true end end
  local need = { req = req, want = want, mp = expect_mp, bind = bind_script, all = all, chain = opts.chain }
  -- a fingerprint is one file of root
  local store, key = (iroot == root and not all) and opts.fingerprints or nil, nil
  if store then
    key = M.key_of(root, gen, kver, resolved, need)
    if not opts.full and fingerprint.lookup(store, gen.name, kver, resolved, st, key) then
      r.size, r.ok, r.fingerprint = st.size, true, true
      -- what a UKI says is cheap to read (its section table and .cmdline), the image is not
      local info = core.image.sections(root, resolved) and uki.read(root, resolved)
      r.kind, r.cmdline = info and "uki" or "image", info and info.cmdline
      return r
    end
  end
  -- the modules are known (req): the run may let go of what it holds for them (run.lua)
  if opts.facts.reading then opts.facts:reading(kver) end
  read_image(r, iroot, gen, kver, resolved, need)
  if r.error then return r end
  r.size = st.size
  r.ok = #r.missing == 0
  if r.ok and store and opts.record then
    fingerprint.record(root, store, gen.name, kver, resolved, st, core.fs.stat(root, resolved), key, now)
  end
  return r
end

return M
