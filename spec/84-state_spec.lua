-- vfioinit's state (/var/lib/vfioinit: manifest + backups) must never cost a person an
-- edit, never describe a write that did not happen, survive kill -9 anywhere in revert,
-- and refuse (changing nothing) when it is damaged. Attacks on synthetic roots holding all
-- four generators' configs (spec/fixtures/corpus) plus the modprobe.d file from ids:
--  1. revert after a hand edit (every generator, the dracut drop-in and the modprobe file)
--  2. a failed or killed apply, then a hand edit, then a good apply, then revert
--  3. kill -9 at every mutating core call of a revert, then revert (or apply + revert)
--  4. damaged manifests: empty, truncated, binary, bad checksum, format 1, paths that
--     leave the root, backups outside the backups dir, backups without a manifest.
-- Results are judged by bytes, bash (mkinitcpio arrays) and sha256sum (the manifest
-- trailer), never by what the code under test prints.
local h = require "helpers"
local vfioinit = require "vfioinit"
local core = require "vfioinit.core"

local q, sh = h.q, h.sh
local build = os.getenv("VFIOINIT_BUILD") or "build"
local BIN = (os.getenv("VFIOINIT_LUA_CMD") and h.lua .. " " or "") .. h.project .. "/bin/vfioinit"
local IDS = { "1af4:1000" }
local CONFIGS = { "/etc/mkinitcpio.conf", "/etc/dracut.conf", "/etc/initramfs-tools/modules", "/etc/booster.yaml" }
local DROPIN = "/etc/dracut.conf.d/10-vfioinit.conf"
local MODPROBE = "/etc/modprobe.d/vfioinit.conf"
local STATE = "/var/lib/vfioinit"
local MANIFEST = STATE .. "/manifest"

local all_root = h.all_root

local function snapshot(r)
  local s = {}
  for _, p in ipairs(CONFIGS) do s[p] = assert(h.readfile(r .. p), p) end
  return s
end

local function apply(r, extra)
  local opts = { root = r, ids = IDS }
  for k, v in pairs(extra or {}) do opts[k] = v end
  local plan = assert(vfioinit.plan(opts))
  assert(#plan.changes > 0, "nothing to apply")
  assert(plan:apply())
end

-- Every original back, vfioinit's files and state gone, no temp file anywhere.
local function assert_reverted(r, orig, except)
  for p, content in pairs(orig) do
    if p ~= except then assert.are.equal(content, h.readfile(r .. p), p) end
  end
  if except ~= DROPIN then assert.is_nil(h.readfile(r .. DROPIN)) end
  if except ~= MODPROBE then assert.is_nil(h.readfile(r .. MODPROBE)) end
  assert.are.equal("", sh("ls -A " .. q(r .. "/var/lib") .. " 2>/dev/null"))
  assert.are.equal("", sh("find " .. q(r) .. " -name '.*.vfioinit-*'"))
end

local function modules_of(file) return table.concat(h.bash_array({ file }, "MODULES"), " ") end

-- Hand edits a person might make after apply, one per file vfioinit writes.
local EDITS = {
  { path = "/etc/mkinitcpio.conf", what = "adds nvme to MODULES",
    edit = function(f) sh("sed -i 's/^MODULES=(/MODULES=(nvme /' " .. q(f)) end },
  { path = DROPIN, what = "adds a driver to vfioinit's own dracut drop-in",
    edit = function(f) h.writefile(f, h.readfile(f) .. 'force_drivers+=" nvme "\n') end },
  { path = "/etc/initramfs-tools/modules", what = "appends nvme",
    edit = function(f) h.writefile(f, h.readfile(f) .. "nvme\n") end },
  { path = "/etc/booster.yaml", what = "switches compression",
    edit = function(f) sh("sed -i 's/^compression: zstd$/compression: lz4/' " .. q(f)) end },
  { path = MODPROBE, what = "adds an options line to the modprobe file vfioinit created",
    edit = function(f) h.writefile(f, h.readfile(f) .. "options nvme poll_queues=4\n") end },
}

describe("revert after a hand edit (item 1: refuse unless untouched)", function()
  for _, ed in ipairs(EDITS) do
    it(("refuses when a person %s (%s), changes nothing, and --force keeps the edit"):format(ed.what, ed.path), function()
      local r = all_root()
      finally(function() h.rm(r) end)
      local orig = snapshot(r)
      apply(r)
      local written = h.readfile(r .. ed.path)
      ed.edit(r .. ed.path)
      local edited = h.readfile(r .. ed.path)
      assert.are_not.equal(written, edited)
      local tree = h.tree_hash(r)
      local ok, msg, refused = vfioinit.revert({ root = r })
      assert.is_nil(ok)
      assert.truthy(msg:find(ed.path .. ": changed since vfioinit wrote it; 'vfioinit revert --force' restores the original"
        .. " and keeps the current content as " .. ed.path .. ".vfioinit-edited", 1, true), msg)
      assert.are.equal(1, #refused)
      assert.are.equal(ed.path, refused[1].path)
      assert.are.equal(tree, h.tree_hash(r))  -- nothing touched, backups and state included
      -- the explicit way out: the original back, the edited content kept beside it
      local fok, list = vfioinit.revert({ root = r, force = true })
      assert.is_true(fok)
      assert.are.equal(edited, h.readfile(r .. ed.path .. ".vfioinit-edited"))
      local kept
      for _, e in ipairs(list) do if e.path == ed.path then kept = e.kept end end
      assert.are.equal(ed.path .. ".vfioinit-edited", kept)
      sh("rm " .. q(r .. ed.path .. ".vfioinit-edited"))
      assert_reverted(r, orig)
    end)
  end

  it("keeps nvme (bash oracle) in the kept copy of mkinitcpio.conf and restores MODULES without VFIO", function()
    local r = all_root()
    finally(function() h.rm(r) end)
    local orig = snapshot(r)
    apply(r)
    EDITS[1].edit(r .. "/etc/mkinitcpio.conf")
    assert.is_nil((vfioinit.revert({ root = r })))
    assert.truthy(modules_of(r .. "/etc/mkinitcpio.conf"):find("nvme", 1, true))
    assert.is_true((vfioinit.revert({ root = r, force = true })))
    local kept = modules_of(r .. "/etc/mkinitcpio.conf.vfioinit-edited")
    assert.truthy(kept:find("nvme", 1, true) and kept:find("vfio_pci", 1, true), kept)
    assert.are.equal(modules_of(h.corpus .. "/mkinitcpio/mkinitcpio.conf"), modules_of(r .. "/etc/mkinitcpio.conf"))
    assert.are.equal(orig["/etc/mkinitcpio.conf"], h.readfile(r .. "/etc/mkinitcpio.conf"))
  end)

  it("refuses a file a person edited between two applies, though it holds vfioinit's last write", function()
    local r = all_root()
    finally(function() h.rm(r) end)
    local orig = snapshot(r)
    apply(r)
    EDITS[1].edit(r .. "/etc/mkinitcpio.conf")
    apply(r, { modules = { "kvmgt" } })  -- rewrites mkinitcpio.conf on top of the edit
    local both = modules_of(r .. "/etc/mkinitcpio.conf")
    assert.truthy(both:find("nvme", 1, true) and both:find("kvmgt", 1, true), both)
    local tree = h.tree_hash(r)
    local ok, msg, refused = vfioinit.revert({ root = r })
    assert.is_nil(ok)
    assert.truthy(msg:find("/etc/mkinitcpio.conf: edited by hand between two vfioinit applies", 1, true), msg)
    assert.are.equal(1, #refused)
    assert.are.equal(tree, h.tree_hash(r))
    assert.is_true((vfioinit.revert({ root = r, force = true })))
    assert.are.equal(both, modules_of(r .. "/etc/mkinitcpio.conf.vfioinit-edited"))
    sh("rm " .. q(r .. "/etc/mkinitcpio.conf.vfioinit-edited"))
    assert_reverted(r, orig)
  end)

  it("reverts once the person undoes the edit, and counts a file already back to its original as unchanged", function()
    local r = all_root()
    finally(function() h.rm(r) end)
    local orig = snapshot(r)
    apply(r)
    local written = h.readfile(r .. "/etc/initramfs-tools/modules")
    EDITS[3].edit(r .. "/etc/initramfs-tools/modules")
    assert.is_nil((vfioinit.revert({ root = r })))
    h.writefile(r .. "/etc/initramfs-tools/modules", written)         -- edit undone
    h.writefile(r .. "/etc/booster.yaml", orig["/etc/booster.yaml"])  -- reverted by hand
    local ok, list = vfioinit.revert({ root = r })
    assert.is_true(ok)
    local action = {}
    for _, e in ipairs(list) do action[e.path] = e.action end
    assert.are.equal("unchanged", action["/etc/booster.yaml"])
    assert.are.equal("restored", action["/etc/initramfs-tools/modules"])
    assert.are.equal("removed", action[MODPROBE])
    assert_reverted(r, orig)
  end)

  it("never overwrites an existing PATH.vfioinit-edited: --force picks the next free name", function()
    local r = all_root()
    finally(function() h.rm(r) end)
    apply(r)
    h.writefile(r .. "/etc/booster.yaml.vfioinit-edited", "an older kept copy\n")
    EDITS[4].edit(r .. "/etc/booster.yaml")
    local edited = h.readfile(r .. "/etc/booster.yaml")
    local ok, list = vfioinit.revert({ root = r, force = true })
    assert.is_true(ok)
    assert.are.equal("an older kept copy\n", h.readfile(r .. "/etc/booster.yaml.vfioinit-edited"))
    assert.are.equal(edited, h.readfile(r .. "/etc/booster.yaml.vfioinit-edited.1"))
    local kept
    for _, e in ipairs(list) do if e.path == "/etc/booster.yaml" then kept = e.kept end end
    assert.are.equal("/etc/booster.yaml.vfioinit-edited.1", kept)
  end)

  it("CLI: revert exits 1 naming the file, --json lists the refusals, --force --json reports the kept copy", function()
    local r = all_root()
    finally(function() h.rm(r) end)
    local orig = snapshot(r)
    apply(r)
    EDITS[2].edit(r .. DROPIN)
    local tree = h.tree_hash(r)
    local out, _, code = sh(BIN .. " --root " .. q(r) .. " revert 2>&1")
    assert.are.equal(1, code)
    assert.truthy(out:find("vfioinit: " .. DROPIN .. ": changed since vfioinit wrote it", 1, true), out)
    local f = os.tmpname()
    finally(function() os.remove(f) end)
    local function py(args, expr)
      local _, _, c = sh(BIN .. " --json --root " .. q(r) .. " " .. args .. " > " .. q(f) .. " 2>/dev/null")
      local v = sh("python3 -c " .. q("import json,sys; d=json.load(open(sys.argv[1])); print(" .. expr .. ")") .. " " .. q(f))
      return c, (v:gsub("\n$", ""))
    end
    local c, v = py("revert", "d['ok'], [x['path'] for x in d['refused']]")
    assert.are.equal(1, c)
    assert.are.equal("False ['" .. DROPIN .. "']", v)
    assert.are.equal(tree, h.tree_hash(r))
    c, v = py("revert --force --dry-run", "d['ok'], d['dry_run'], '+++ /dev/null' in d['diff']")
    assert.are.equal(0, c)
    assert.are.equal("True True True", v)
    assert.are.equal(tree, h.tree_hash(r))
    c, v = py("revert --force", "[(x['action'], x.get('kept')) for x in d['reverted'] if x['path'] == '" .. DROPIN .. "']")
    assert.are.equal(0, c)
    assert.are.equal("[('removed', '" .. DROPIN .. ".vfioinit-edited')]", v)
    assert.truthy(h.readfile(r .. DROPIN .. ".vfioinit-edited"):find('force_drivers+=" nvme "', 1, true))
    sh("rm " .. q(r .. DROPIN .. ".vfioinit-edited"))
    assert_reverted(r, orig)
  end)

  it("CLI: revert --dry-run prints the diff a revert makes (patch -p0 of it gives the originals) and writes nothing", function()
    local r, copy = all_root(), nil
    finally(function() h.rm(r); if copy then h.rm(copy) end end)
    local orig = snapshot(r)
    apply(r)
    local tree = h.tree_hash(r)
    local d, _, code = sh(BIN .. " --root " .. q(r) .. " revert --dry-run 2>/dev/null")
    assert.are.equal(0, code)
    assert.are.equal(tree, h.tree_hash(r))
    copy = h.tmpdir()
    sh("cp -a " .. q(r .. "/.") .. " " .. q(copy))
    h.writefile(copy .. ".diff", d)
    local out, ok = sh("patch -s -p0 -d " .. q(copy) .. " < " .. q(copy .. ".diff") .. " 2>&1")
    os.remove(copy .. ".diff")
    assert(ok, out)
    assert.are.equal(0, select(3, sh(BIN .. " --root " .. q(r) .. " revert >/dev/null 2>&1")))
    for p, content in pairs(orig) do
      assert.are.equal(content, h.readfile(copy .. p), p)
      assert.are.equal(content, h.readfile(r .. p), p)
    end
  end)
end)

-- A child lua that dies by SIGKILL (its own kill -9) at a chosen core call.
local DRIVER = [[
local project, build, root, mode, arg = ...
package.path = project .. "/lua/?.lua;" .. project .. "/lua/?/init.lua;" .. package.path
package.cpath = project .. "/" .. build .. "/?.so;" .. package.cpath
local core = require "vfioinit.core"
local function die()
  local f = io.open("/proc/self/stat"); local pid = f:read("*a"):match("^(%d+)"); f:close()
  os.execute("kill -9 " .. pid); os.exit(99)
end
local n = 0
for _, name in ipairs({ "write_atomic", "remove", "mkdirs", "rename", "copy" }) do
  local real = core.fs[name]
  core.fs[name] = function(r, path, ...)
    n = n + 1
    if mode == "apply-kill" and name ~= "mkdirs" and path == arg then die() end
    if mode == "revert-kill" and n == tonumber(arg) then die() end
    return real(r, path, ...)
  end
end
local vfioinit = require "vfioinit"
if mode == "apply-kill" then
  local plan = assert(vfioinit.plan({ root = root, ids = { "1af4:1000" } }))
  local ok, err = plan:apply()
  io.stderr:write("apply returned ", tostring(ok), " ", tostring(err), "\n"); os.exit(3)
end
local ok, err = vfioinit.revert({ root = root })
if not ok then io.stderr:write(tostring(err), "\n"); os.exit(3) end
io.stdout:write(n, "\n")
]]

local driver_dir
local function driver()
  if not driver_dir then
    driver_dir = h.tmpdir()
    h.writefile(driver_dir .. "/driver.lua", DRIVER)
  end
  return driver_dir .. "/driver.lua"
end

-- Run the driver; returns its exit status and output.
local function child(r, mode, arg)
  local out = sh(("cd %s && %s %s %s %s %s %s %s 2>&1; echo rc=$?"):format(q(h.project), h.lua, q(driver()),
    q(h.project), q(build), q(r), q(mode), q(tostring(arg))))
  return tonumber(out:match("rc=(%d+)%s*$")), out
end

describe("a failed or killed apply records nothing (item 2)", function()
  teardown(function() if driver_dir then h.rm(driver_dir); driver_dir = nil end end)

  for _, ed in ipairs({ EDITS[1], EDITS[3], EDITS[4] }) do
    it("full disk at the write of " .. ed.path .. ", a hand edit, a good apply: revert gives back the edit", function()
      local r = all_root()
      finally(function() h.rm(r) end)
      local orig = snapshot(r)
      local real = core.fs.write_atomic
      core.fs.write_atomic = function(root, path, ...)
        if path == ed.path then return nil, path .. ": No space left on device", 28 end
        return real(root, path, ...)
      end
      local plan = assert(vfioinit.plan({ root = r, ids = IDS }))
      local ok, err = plan:apply()
      core.fs.write_atomic = real
      assert.is_nil(ok)
      assert.truthy(err:find("No space left", 1, true), err)
      for p, content in pairs(orig) do assert.are.equal(content, h.readfile(r .. p), p) end
      assert.is_nil(h.readfile(r .. MANIFEST))  -- no record of a write that never happened
      ed.edit(r .. ed.path)
      local edited = h.readfile(r .. ed.path)
      apply(r)
      assert.is_true((vfioinit.revert({ root = r })))
      assert.are.equal(edited, h.readfile(r .. ed.path))
      orig[ed.path] = edited
      assert_reverted(r, orig)
    end)
  end

  it("kill -9 before the first config rename, a hand edit, a good apply: revert gives back the edit", function()
    local r = all_root()
    finally(function() h.rm(r) end)
    local orig = snapshot(r)
    local rc, out = child(r, "apply-kill", "/etc/mkinitcpio.conf")
    assert.are.equal(137, rc, out)
    for p, content in pairs(orig) do assert.are.equal(content, h.readfile(r .. p), p) end
    EDITS[1].edit(r .. "/etc/mkinitcpio.conf")
    local edited = h.readfile(r .. "/etc/mkinitcpio.conf")
    apply(r)
    assert.is_true((vfioinit.revert({ root = r })))
    assert.are.equal(edited, h.readfile(r .. "/etc/mkinitcpio.conf"))
    assert.truthy(modules_of(r .. "/etc/mkinitcpio.conf"):find("nvme", 1, true))
    orig["/etc/mkinitcpio.conf"] = edited
    assert_reverted(r, orig)
  end)
end)

describe("a killed revert is finished by the next run (item 3)", function()
  local template, orig, calls
  setup(function()
    template = all_root()
    orig = snapshot(template)
    apply(template)
    -- the clean run: how many mutating core calls a revert makes
    local copy = template .. ".count"
    sh("cp -a " .. q(template) .. " " .. q(copy))
    local rc, out = child(copy, "revert-count", 0)
    assert(rc == 0, out)
    calls = tonumber(out:match("^(%d+)"))
    h.rm(copy)
  end)
  teardown(function()
    if template then h.rm(template) end
    if driver_dir then h.rm(driver_dir); driver_dir = nil end
  end)

  it("survives kill -9 at every mutating call: the next revert completes, or an apply then a revert does", function()
    assert.is_true(calls >= 8, tostring(calls))
    for k = 1, calls do
      for _, next_run in ipairs({ "revert", "apply+revert" }) do
        local r = template .. ".k"
        sh("rm -rf " .. q(r) .. " && cp -a " .. q(template) .. " " .. q(r))
        local rc, out = child(r, "revert-kill", k)
        local where = ("kill at mutating call %d of %d, then %s"):format(k, calls, next_run)
        assert.are.equal(137, rc, where .. ": " .. out)
        if next_run == "apply+revert" then
          local plan, perr = vfioinit.plan({ root = r, ids = IDS })
          assert(plan, where .. ": " .. tostring(perr))
          local ok, aerr = plan:apply()
          assert(ok, where .. ": " .. tostring(aerr))
        end
        local ok, err = vfioinit.revert({ root = r })
        assert(ok, where .. ": " .. tostring(err))
        for p, content in pairs(orig) do assert.are.equal(content, h.readfile(r .. p), where .. ": " .. p) end
        assert.is_nil(h.readfile(r .. DROPIN), where)
        assert.is_nil(h.readfile(r .. MODPROBE), where)
        assert.are.equal("", sh("ls -A " .. q(r .. "/var/lib") .. " 2>/dev/null"), where)
        h.rm(r)
      end
    end
  end)
end)

-- sha256 by the system's sha256sum (the oracle for the manifest's trailer).
local function sha256(text)
  local f = os.tmpname()
  h.writefile(f, text)
  local out = sh("sha256sum " .. q(f))
  os.remove(f)
  return out:match("^(%x+)")
end

-- A format-2 manifest built by hand from entry lines: header, entries, sealed trailer.
local function forge(lines)
  local body = "vfioinit-manifest 2\n" .. table.concat(lines, "\n") .. (#lines > 0 and "\n" or "")
  return body .. ("end %d %s\n"):format(#lines, sha256(body))
end

describe("a damaged manifest changes nothing (item 4)", function()
  local r, orig, tree
  before_each(function()
    r = all_root()
    orig = snapshot(r)
    h.writefile(r .. "/etc/passwd", "root:x:0:0::/root:/bin/sh\n")
    apply(r)
  end)
  after_each(function() h.rm(r) end)

  -- The backup of mkinitcpio.conf and a valid entry line for it, built by hand.
  local function mkinitcpio_entry(path, backup)
    local name
    for _, n in ipairs(core.fs.dir(r, STATE .. "/backups") or {}) do
      if h.readfile(r .. STATE .. "/backups/" .. n) == orig["/etc/mkinitcpio.conf"] then name = n end
    end
    assert(name, "no backup holds the original mkinitcpio.conf")
    return table.concat({ "saved", "mkinitcpio", path or "/etc/mkinitcpio.conf",
      backup or (STATE .. "/backups/" .. name), "644", sha256(h.readfile(r .. "/etc/mkinitcpio.conf")), "-", "-" }, "\t")
  end

  local function assert_refused(why)
    tree = h.tree_hash(r)
    for _, force in ipairs({ false, true }) do
      local ok, err = vfioinit.revert({ root = r, force = force })
      assert.is_nil(ok, why)
      assert.truthy(err:match("^/var/lib/vfioinit/manifest:%d+: damaged state %(.+%); nothing was changed%. Inspect it, or "
        .. "move /var/lib/vfioinit aside to start afresh %(the backups under it hold the originals%)$"), why .. ": " .. err)
      assert.are.equal(tree, h.tree_hash(r), why)
    end
    -- an apply that has something to write refuses too (it would lose the record)
    local plan = assert(vfioinit.plan({ root = r, ids = IDS, modules = { "kvmgt" } }))
    local ok, err = plan:apply()
    assert.is_nil(ok, why)
    assert.truthy(err:find("damaged state", 1, true), why .. ": " .. tostring(err))
    assert.are.equal(tree, h.tree_hash(r), why)
    -- the CLI: exit 1, one JSON object saying so
    local out, _, code = sh(BIN .. " --json --root " .. q(r) .. " revert 2>/dev/null")
    assert.are.equal(1, code, why)
    assert.truthy(out:match('^{.*"ok":false'), why .. ": " .. out)
    assert.are.equal(tree, h.tree_hash(r), why)
  end

  local DAMAGE = {
    { "empty", function() return "" end },
    { "truncated mid-line (no final newline)", function(m) return m:sub(1, #m - 10) end },
    { "truncated at a line end (no trailer)", function(m) return (m:gsub("end %d+ %x+\n$", "")) end },
    { "cut after the header", function() return "vfioinit-manifest 2\n" end },
    { "binary", function() return (sh("head -c 600 /dev/urandom")) end },
    { "one entry byte changed (bad checksum)", function(m) return (m:gsub("\t644\t", "\t600\t", 1)) end },
    { "unknown format version", function(m) return (m:gsub("^vfioinit%-manifest %d+", "vfioinit-manifest 4")) end },
  }
  for _, d in ipairs(DAMAGE) do
    it("refuses a " .. d[1] .. " manifest, keeping every backup and VFIO edit", function()
      local m = h.readfile(r .. MANIFEST)
      h.writefile(r .. MANIFEST, d[2](m))
      assert_refused(d[1])
    end)
  end

  it("refuses an old format-1 manifest (no header)", function()
    h.writefile(r .. MANIFEST, table.concat({ "saved", "mkinitcpio", "/etc/mkinitcpio.conf",
      STATE .. "/backups/1-_etc_mkinitcpio.conf", "644" }, "\t") .. "\n")
    assert_refused("format 1")
  end)

  it("accepts a well-formed hand-built manifest (control for the forged cases below)", function()
    h.writefile(r .. MANIFEST, forge({ mkinitcpio_entry() }))
    assert.is_true((vfioinit.revert({ root = r })))
    assert.are.equal(orig["/etc/mkinitcpio.conf"], h.readfile(r .. "/etc/mkinitcpio.conf"))
  end)

  local FORGED = {
    { "a relative path ../../etc/passwd", function() return mkinitcpio_entry("../../etc/passwd") end },
    { "a path /etc/../../etc/passwd", function() return mkinitcpio_entry("/etc/../../etc/passwd") end },
    { "a backup outside the backups dir", function() return mkinitcpio_entry(nil, "/etc/passwd") end },
    { "a backup that climbs out of it", function() return mkinitcpio_entry(nil, STATE .. "/backups/../../../../etc/passwd") end },
  }
  for _, d in ipairs(FORGED) do
    it("refuses a correctly sealed manifest with " .. d[1], function()
      h.writefile(r .. MANIFEST, forge({ d[2]() }))
      assert_refused(d[1])
    end)
  end

  it("refuses backups lying there without a manifest (never deletes them)", function()
    os.remove(r .. MANIFEST)
    assert_refused("no manifest")
    assert.truthy(sh("ls " .. q(r .. STATE .. "/backups")):find("mkinitcpio", 1, true))
  end)
end)

describe("state.parse_manifest()", function()
  local state = require "vfioinit.state"

  it("writes format 3 and still reads format 2 (3 without dir entries); refuses format 4 by name", function()
    local r = all_root()
    finally(function() h.rm(r) end)
    apply(r)
    local m = h.readfile(r .. MANIFEST)
    assert.are.equal("vfioinit-manifest 3\n", m:match("^[^\n]*\n"))
    local files = {}
    for l in m:gmatch("[^\n]+") do
      if not l:match("^dir\t") and not l:match("^vfioinit%-manifest") and not l:match("^end ") then files[#files + 1] = l end
    end
    local two = forge(files)
    local list, err = state.parse_manifest(two)
    assert.is_table(list, err)
    assert.are.equal(#files, #list)
    local body = "vfioinit-manifest 4\n"
    local l4, err4 = state.parse_manifest(body .. ("end 0 %s\n"):format(sha256(body)))
    assert.is_nil(l4)
    assert.truthy(err4:find(":1: damaged state (unknown format 4)", 1, true), err4)
  end)

  it("never raises and rejects every truncation and every changed byte of a valid manifest", function()
    local r = all_root()
    finally(function() h.rm(r) end)
    apply(r)
    local m = h.readfile(r .. MANIFEST)
    local list = state.parse_manifest(m)
    -- 5 files, and the 4 directories apply made: /etc/modprobe.d and /etc/dracut.conf.d for
    -- them, /var and /var/lib for the state directory
    local kinds = {}
    for _, e in ipairs(list) do kinds[e.kind] = (kinds[e.kind] or 0) + 1 end
    assert.are.equal(9, #list)
    assert.are.equal(4, kinds.dir)
    for i = 0, #m - 1 do
      local l, err = state.parse_manifest(m:sub(1, i))
      assert(l == nil and type(err) == "string", "truncation at " .. i .. " accepted")
    end
    math.randomseed(84)
    for _ = 1, 400 do
      local i = math.random(1, #m)
      local b = string.char((m:byte(i) + math.random(1, 255)) % 256)
      local l, err = state.parse_manifest(m:sub(1, i - 1) .. b .. m:sub(i + 1))
      assert(l == nil and type(err) == "string", "changed byte at " .. i .. " accepted")
    end
  end)

  it("returns nil, message for random bytes and non-strings", function()
    math.randomseed(8484)
    for n = 1, 300 do
      local t = {}
      for i = 1, math.random(0, 200) do t[i] = string.char(math.random(0, 255)) end
      local s = (n % 3 == 0 and "vfioinit-manifest 2\n" or "") .. table.concat(t)
      local ok, l, err = pcall(state.parse_manifest, s)
      assert(ok, l)
      assert(l == nil and type(err) == "string")
    end
    for _, v in ipairs({ 42, true, {} }) do
      local ok, l, err = pcall(state.parse_manifest, v)
      assert(ok and l == nil and type(err) == "string")
    end
  end)
end)
