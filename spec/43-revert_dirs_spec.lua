-- revert removes the directories apply created for its files (dracut's
-- modules.d/90vfioinit-bind, mkinitcpio's /etc/initcpio/{install,hooks}, /etc/vfioinit ...,
-- and the parents of its own state directory, /var/lib in a bare root) once they are empty: the manifest records them as `dir` entries. A directory that was
-- there before apply, or that holds something else after revert, stays. The oracle is
-- `find`: the tree's directories before apply and after revert.
local h = require "helpers"
local vfioinit = require "vfioinit"
local state = require "vfioinit.state"

local ADDR = "0000:00:04.0"

-- Every directory under root (find's own list), sorted.
local function dirs(root)
  return h.sh("cd " .. h.q(root) .. " && find . -type d | sort")
end

-- Every file's path and content under root (directory times move with their entries).
local function files(root)
  return h.sh("cd " .. h.q(root) .. " && find . -type f -print0 | sort -z | xargs -0 -r sha256sum")
end

local function manifest_dirs(root)
  local list = assert(state.parse_manifest(h.readfile(root .. state.MANIFEST)))
  local out = {}
  for _, e in ipairs(list) do if e.kind == "dir" then out[#out + 1] = e.path end end
  table.sort(out)
  return out
end

local function dracut_root()
  return h.make_root({ os = { ID = "fedora" }, corpus = { ["/etc/dracut.conf"] = "dracut/dracut.conf" },
    exec = { "/usr/bin/dracut" } })
end

local function mkinitcpio_root()
  return h.make_root({ os = { ID = "arch" }, files = { ["/etc/mkinitcpio.conf"] = "MODULES=()\nHOOKS=(base udev modconf block)\n" },
    exec = { "/usr/bin/mkinitcpio" } })
end

describe("revert removes the directories apply created", function()
  it("dracut --device: 90vfioinit-bind, modules.d, dracut.conf.d and modprobe.d go; the tree is as before", function()
    local r = dracut_root()
    finally(function() h.rm(r) end)
    local before, tree = dirs(r), files(r)
    assert(assert(vfioinit.plan({ root = r, devices = { ADDR }, ids = "1af4:1000" })):apply())
    assert.truthy(dirs(r):find("./usr/lib/dracut/modules.d/90vfioinit-bind\n", 1, true))
    -- recorded: every directory that was not there, and none that was
    for _, d in ipairs(manifest_dirs(r)) do
      assert.is_nil(before:find("." .. d .. "\n", 1, true), d .. " was there before apply")
    end
    assert.truthy(table.concat(manifest_dirs(r), " "):find("/usr/lib/dracut/modules.d/90vfioinit-bind", 1, true))
    local ok, list = vfioinit.revert({ root = r })
    assert.is_true(ok, list)
    assert.are.equal(before, dirs(r))
    assert.are.equal(tree, files(r))
    local removed = {}
    for _, e in ipairs(list) do if e.kind == "dir" then removed[#removed + 1] = e.path end end
    assert.truthy(table.concat(removed, " "):find("/usr/lib/dracut/modules.d/90vfioinit-bind", 1, true))
  end)

  it("mkinitcpio --device: /etc/initcpio/install and hooks go", function()
    local r = mkinitcpio_root()
    finally(function() h.rm(r) end)
    local before = dirs(r)
    assert(assert(vfioinit.plan({ root = r, devices = { ADDR } })):apply())
    assert.truthy(dirs(r):find("./etc/initcpio/hooks\n", 1, true))
    assert(vfioinit.revert({ root = r }))
    assert.are.equal(before, dirs(r))
  end)

  it("a directory that existed before apply stays, even when empty", function()
    local r = dracut_root()
    finally(function() h.rm(r) end)
    h.sh("mkdir -p " .. h.q(r .. "/usr/lib/dracut/modules.d") .. " " .. h.q(r .. "/etc/modprobe.d"))
    local before = dirs(r)
    assert(assert(vfioinit.plan({ root = r, devices = { ADDR }, ids = "1af4:1000" })):apply())
    assert.is_nil(table.concat(manifest_dirs(r), " "):find("/usr/lib/dracut/modules.d ", 1, true))
    assert(vfioinit.revert({ root = r }))
    assert.are.equal(before, dirs(r))
  end)

  it("a created directory that holds something else after revert stays, with it; revert still succeeds", function()
    local r = dracut_root()
    finally(function() h.rm(r) end)
    assert(assert(vfioinit.plan({ root = r, devices = { ADDR } })):apply())
    local mine = r .. "/usr/lib/dracut/modules.d/90vfioinit-bind/NOTES"
    h.writefile(mine, "mine\n")
    local ok, list = vfioinit.revert({ root = r })
    assert.is_true(ok, list)
    assert.are.equal("mine\n", h.readfile(mine))
    assert.is_nil(h.readfile(r .. "/usr/lib/dracut/modules.d/90vfioinit-bind/module-setup.sh"))
    for _, e in ipairs(list) do
      assert.is_false(e.path == "/usr/lib/dracut/modules.d/90vfioinit-bind" and e.action == "removed", e.path)
    end
    -- nothing of vfioinit's state is left
    assert.is_nil(h.readfile(r .. state.MANIFEST))
  end)

  it("revert --dry-run lists no directory and removes none", function()
    local r = dracut_root()
    finally(function() h.rm(r) end)
    assert(assert(vfioinit.plan({ root = r, devices = { ADDR } })):apply())
    local tree = h.tree_hash(r)
    local code, out = h.cli("--root " .. h.q(r) .. " revert --dry-run")
    assert.are.equal(0, code, out)
    assert.is_nil(out:find("90vfioinit-bind\n", 1, true), out)
    assert.are.equal(tree, h.tree_hash(r))
    code, out = h.cli("--root " .. h.q(r) .. " revert")
    assert.are.equal(0, code, out)
    assert.truthy(out:find("removed /usr/lib/dracut/modules.d/90vfioinit-bind\n", 1, true), out)
  end)

  it("a manifest with a damaged dir entry is refused as damaged, changing nothing", function()
    for _, bad in ipairs({ "dir\tx\t/etc/x\t-\t-\tabsent\t-\t-", "dir\tx\t/etc/x\t/var/lib/vfioinit/backups/1\t644\tdir\t-\t-" }) do
      local body = "vfioinit-manifest 2\n" .. bad .. "\n"
      local text = body .. ("end 1 %s\n"):format(require("vfioinit.core").hash.sha256(body))
      local list, err = state.parse_manifest(text)
      assert.is_nil(list)
      assert.truthy(err:find("damaged state", 1, true), err)
    end
  end)
end)
