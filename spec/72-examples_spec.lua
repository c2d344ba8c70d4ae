-- Every script in examples/ run as a user runs it (lua5.4, LUA_PATH/LUA_CPATH at ./lua
-- and the build dir) against synthetic Arch-, Fedora-, Debian- and Alpine-like roots
-- built from the shared corpus, so the examples cannot rot.
local h = require "helpers"
local vfioinit = require "vfioinit"

local BUILD = os.getenv("VFIOINIT_BUILD") or "build"
local ENV = ("LUA_PATH=%s LUA_CPATH=%s"):format(
  h.q(h.project .. "/lua/?.lua;" .. h.project .. "/lua/?/init.lua;;"),
  h.q(h.project .. "/" .. BUILD .. "/?.so;;"))

-- run(script, args...) -> stdout, stderr, exit code
local function run(script, ...)
  local args = {}
  for _, a in ipairs({ ... }) do args[#args + 1] = h.q(a) end
  local errf = os.tmpname()
  local out, _, code = h.sh(("cd %s && %s lua5.4 examples/%s %s 2>%s"):format(
    h.q(h.project), ENV, script, table.concat(args, " "), h.q(errf)))
  local err = h.readfile(errf) or ""
  os.remove(errf)
  return out, err, code
end

local ROOTS = {
  arch = function()
    return h.make_root({ os = { ID = "arch" }, corpus = { ["/etc/mkinitcpio.conf"] = "mkinitcpio/mkinitcpio.conf" },
      exec = { "/usr/bin/mkinitcpio" } })
  end,
  fedora = function()
    return h.make_root({ os = { ID = "fedora", VERSION_ID = "40" }, corpus = { ["/etc/dracut.conf"] = "dracut/dracut.conf" },
      exec = { "/usr/bin/dracut" } })
  end,
  debian = function()
    return h.make_root({ os = { ID = "debian", VERSION_ID = '"12"' },
      corpus = { ["/etc/initramfs-tools/modules"] = "initramfs-tools/modules" },
      exec = { "/usr/sbin/update-initramfs", "/etc/kernel/postinst.d/initramfs-tools" } })
  end,
}
local EDITED = {
  arch = "/etc/mkinitcpio.conf",
  fedora = "/etc/dracut.conf.d/10-vfioinit.conf",
  debian = "/etc/initramfs-tools/modules",
}
local FAMILIES = { "arch", "fedora", "debian" }

local covered = {}

describe("examples/dry-run.lua", function()
  covered["dry-run.lua"] = true

  it("prints exactly the plan's diff, writes nothing, exits 2 then 0 once configured", function()
    for _, fam in ipairs(FAMILIES) do
      local r = ROOTS[fam]()
      local hash = h.tree_hash(r)
      local out, err, code = run("dry-run.lua", r)
      assert.are.equal(2, code, fam .. ": " .. err)
      assert.are.equal(assert(vfioinit.plan({ root = r })):diff(), out)
      assert.truthy(out:find("+++ " .. EDITED[fam]:sub(2), 1, true), out)
      assert.are.equal(hash, h.tree_hash(r))
      assert.is_true(vfioinit.update_initramfs({ root = r, rebuild = false }).ok)
      out, err, code = run("dry-run.lua", r)
      assert.are.equal(0, code, err)
      assert.are.equal("", out)
      h.rm(r)
    end
  end)

  it("exits 1 with the reason on a bad root and on bad usage", function()
    local _, err, code = run("dry-run.lua", "/nonexistent/vfioinit-root")
    assert.are.equal(1, code)
    assert.matches("^dry%-run: ", err)
    _, err, code = run("dry-run.lua")
    assert.are.equal(1, code)
    assert.matches("^usage:", err)
  end)
end)

describe("examples/configure-root.lua", function()
  covered["configure-root.lua"] = true

  it("configures an Arch, a Fedora and a Debian root, then finds nothing to change", function()
    for _, fam in ipairs(FAMILIES) do
      local r = ROOTS[fam]()
      local want = assert(vfioinit.plan({ root = r }))
      local out, err, code = run("configure-root.lua", r)
      assert.are.equal(0, code, fam .. ": " .. err)
      assert.truthy(out:find("root " .. r .. ": " .. fam .. ", active generator ", 1, true), out)
      assert.truthy(out:find(want:diff(), 1, true), out)
      assert.truthy(out:find(("applied %d change(s)"):format(#want.changes), 1, true), out)
      assert.truthy(out:find("not rebuilt", 1, true), out)
      for _, c in ipairs(want.changes) do assert.are.equal(c.after, h.readfile(r .. c.path)) end
      local hash = h.tree_hash(r)
      out, err, code = run("configure-root.lua", r)
      assert.are.equal(0, code, err)
      assert.truthy(out:find("already configured: nothing to change", 1, true), out)
      assert.are.equal(hash, h.tree_hash(r))
      assert.is_true(vfioinit.revert({ root = r }))
      h.rm(r)
    end
  end)

  it("writes the modprobe.d file with --ids, and uses the mkinitfs generator next to it on Alpine", function()
    local r = ROOTS.debian()
    finally(function() h.rm(r) end)
    local out, err, code = run("configure-root.lua", r, "--ids", "10de:1b80")
    assert.are.equal(0, code, err)
    assert.matches("options vfio%-pci ids=10de:1b80", h.readfile(r .. "/etc/modprobe.d/vfioinit.conf"))
    local a = h.make_root({ os = { ID = "alpine" }, files = { ["/etc/mkinitfs/mkinitfs.conf"] = 'features="base ext4"\n' },
      exec = { "/sbin/mkinitfs" } })
    finally(function() h.rm(a) end)
    out, err, code = run("configure-root.lua", a)
    assert.are.equal(0, code, err)
    assert.truthy(out:find("active generator mkinitfs", 1, true), out)
    assert.are.equal('features="base ext4 vfio"\n', h.readfile(a .. "/etc/mkinitfs/mkinitfs.conf"))
    assert.truthy(h.readfile(a .. "/etc/mkinitfs/features.d/vfio.modules"))
  end)

  it("rebuilds with --rebuild (no kernel installed: no image to build)", function()
    local r = ROOTS.arch()
    finally(function() h.rm(r) end)
    local out, err, code = run("configure-root.lua", r, "--rebuild")
    assert.are.equal(0, code, err)
    assert.truthy(out:find("rebuilt 0 image(s)", 1, true), out)
  end)

  it("exits 1 on bad usage and on a broken config, naming the file and line", function()
    local _, err, code = run("configure-root.lua")
    assert.are.equal(1, code)
    assert.matches("^usage:", err)
    local r = ROOTS.arch()
    finally(function() h.rm(r) end)
    h.writefile(r .. "/etc/mkinitcpio.conf", "MODULES=(a\n")
    _, err, code = run("configure-root.lua", r)
    assert.are.equal(1, code)
    assert.matches("^configure%-root: /etc/mkinitcpio%.conf:%d+:", err)
  end)
end)

-- Read the one JSON object provision.lua prints, with python3 as an outside parser.
local function parse(json_text)
  local f = os.tmpname()
  h.writefile(f, json_text)
  local out, ok = h.sh("python3 -c " .. h.q([[
import json, sys
r = json.load(open(sys.argv[1]))
print(r["ok"], r.get("policy"), ",".join(r.get("generators", [])), len(r.get("changes", [])), len(r["log"]), "diff" in r)
]]) .. " " .. h.q(f) .. " 2>&1")
  os.remove(f)
  assert(ok, out)
  return out
end

describe("examples/provision.lua", function()
  covered["provision.lua"] = true

  it("picks the family's policy, logs through its sink and prints one JSON report", function()
    local gens = { arch = "mkinitcpio", fedora = "dracut", debian = "initramfs-tools" }
    for _, fam in ipairs(FAMILIES) do
      local r = ROOTS[fam]()
      local out, err, code = run("provision.lua", r)
      assert.are.equal(0, code, fam .. ": " .. err)
      assert.are.equal(1, select(2, out:gsub("\n", "")), out)
      assert.are.equal(("True %s %s 1 4 False\n"):format(fam, gens[fam]), parse(out))
      assert.matches("^%[%+%d+s%] policy " .. fam .. " %(os%-release ID=" .. fam .. "%)\n", err)
      assert.truthy(err:find("applying 1 change(s)", 1, true), err)
      assert.truthy(h.readfile(r .. EDITED[fam]):find("vfio_pci", 1, true))
      h.rm(r)
    end
  end)

  it("reports a failure as JSON with ok=false and exit 1", function()
    local out, _, code = run("provision.lua", "/nonexistent/vfioinit-root")
    assert.are.equal(1, code)
    assert.matches('^{.*"ok":false', out)
  end)

  it("writes nothing with --dry-run", function()
    local r = ROOTS.fedora()
    finally(function() h.rm(r) end)
    local hash = h.tree_hash(r)
    local out, err, code = run("provision.lua", r, "--dry-run")
    assert.are.equal(0, code, err)
    assert.matches('"dry_run":true', out)
    assert.are.equal(hash, h.tree_hash(r))
  end)
end)

describe("examples/policy-override.lua", function()
  covered["policy-override.lua"] = true

  it("is under 15 lines and overrides the Debian policy only", function()
    local src = assert(h.readfile(h.project .. "/examples/policy-override.lua"))
    assert.is_true(select(2, src:gsub("\n", "")) < 15)
    -- docs/REFERENCE.md ("Extending and composing") shows this very file
    assert.truthy(assert(h.readfile(h.project .. "/docs/REFERENCE.md")):find("```lua\n" .. src .. "```\n", 1, true),
      "docs/REFERENCE.md's policy override differs from examples/policy-override.lua")
    local r = ROOTS.debian()
    finally(function() h.rm(r) end)
    local out, err, code = run("policy-override.lua", r)
    assert.are.equal(0, code, err)
    assert.are.equal("policy debian (os-release ID=debian)\nconfigured\n", out)
    assert.truthy(err:find("[vfioinit] policy debian: run", 1, true), err)
    local modules = h.readfile(r .. "/etc/initramfs-tools/modules")
    assert.truthy(modules:find("\nkvmgt\n", 1, true), modules)
    assert.matches("options vfio%-pci ids=10de:1b80", h.readfile(r .. "/etc/modprobe.d/vfioinit.conf"))
    -- other families keep the shipped policy
    local f = ROOTS.fedora()
    finally(function() h.rm(f) end)
    out, err, code = run("policy-override.lua", f)
    assert.are.equal(0, code, err)
    assert.are.equal("policy fedora (os-release ID=fedora)\nconfigured\n", out)
    assert.is_nil(h.readfile(f .. "/etc/modprobe.d/vfioinit.conf"))
  end)
end)

describe("examples/", function()
  it("has a spec above for every script, and generators/mkinitfs.lua loads on its own", function()
    local listed = h.sh("cd " .. h.q(h.project .. "/examples") .. " && ls *.lua")
    for name in listed:gmatch("[^\n]+") do
      assert.is_true(covered[name] == true, "examples/" .. name .. " is not run by spec/72-examples_spec.lua")
    end
    local out, ok = h.sh(("cd %s && %s lua5.4 -e %s 2>&1"):format(h.q(h.project), ENV,
      h.q('local g = dofile("examples/generators/mkinitfs.lua"); io.write(g.name, " ", type(g.edits))')))
    assert.is_true(ok, out)
    assert.are.equal("mkinitfs function", out)
  end)
end)

-- The LDoc reference (config.ld) of the public API, the policies and the example generator.
local has_ldoc = select(2, h.sh("command -v ldoc >/dev/null 2>&1"))
local ldoc_it = has_ldoc and it or function(name) pending(name .. " (needs ldoc: apt-get install lua-ldoc)") end

describe("config.ld", function()
  ldoc_it("makes ldoc write the reference without a warning", function()
    local dir = h.tmpdir()
    finally(function() h.rm(dir) end)
    local out, ok = h.sh(("cd %s && ldoc -d %s . 2>&1"):format(h.q(h.project), h.q(dir)))
    assert.is_true(ok, out)
    assert.are.equal("reading configuration from config.ld\noutput written to " .. dir .. "\n", out)
    for _, m in ipairs({ "vfioinit", "vfioinit.policy", "mkinitfs" }) do
      local html = assert(h.readfile(dir .. "/modules/" .. m .. ".html"), m)
      assert.truthy(html:find(m == "mkinitfs" and "edit_conf" or (m == "vfioinit" and "register_generator" or "for_root"), 1, true), m)
    end
  end)
end)
