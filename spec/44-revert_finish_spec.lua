-- A revert always finishes (issue 22):
--  13. the command a revert runs (grubby/kernelstub's inverse, update-grub) runs while the
--      manifest still names its file: a failed or killed one is finished by the next revert
--      (kill -9 at every mutating call and around every command, as spec/84-state_spec.lua does);
--  14. a lost backup stops the restore of that one file only: every other file is restored,
--      the lost one is named with the reason (exit 1), and `revert --force` forgets it;
--  15. revert settles the `<image>.vfioinit-prev` a killed rebuild left, as apply does.
-- Oracles: the BLS entries' options and grub.cfg as the stand-in tools write them (the
-- grub.cfg generated before apply, byte for byte), awk over the manifest, bytes of files.
local h = require "helpers"
local v = require "vfioinit"
local context = require "vfioinit.context"
local bootloaders = require "vfioinit.boot.cmdline"

local q = h.q
local root_it = h.chroot_it(it, pending)
local build = os.getenv("VFIOINIT_BUILD") or "build"
local FAIL = "/etc/standin-fails"  -- while it exists, the stand-in tool fails
local APPLETS = "sh mkdir printf mv rm cat test ["

-- A root the tools are chrooted into: busybox and the applets the stand-ins use.
local function busybox(root)
  h.sh("mkdir -p " .. q(root .. "/bin") .. " " .. q(root .. "/usr/sbin") .. " " .. q(root .. "/boot"))
  h.sh("cp " .. q(h.static_busybox()) .. " " .. q(root .. "/bin/busybox"))
  h.sh("cd " .. q(root .. "/bin") .. " && for a in " .. APPLETS .. "; do ln -s busybox $a; done")
end

-- Install `fixture` as `path`, behind a wrapper that fails (status 1) while FAIL exists.
local function failable(root, path, body)
  h.writefile(root .. path .. ".real", body, 493)
  h.writefile(root .. path, ("#!/bin/sh\n[ -e %s ] && { echo 'stand-in failure' >&2; exit 1; }\nexec %s.real \"$@\"\n")
    :format(FAIL, path), 493)
end

-- What apply's regenerate stage runs for target `name` (setup: apply's own path).
local function regenerate(root, name)
  local x = assert(require("vfioinit.boot").new():get(name)).regenerate(context.new({ root = root }))
  if type(x[1]) == "string" then x = { x } end
  for _, argv in ipairs(x) do
    local e = bootloaders.run_command(root, { target = name, argv = argv }, { timeout = 60 })
    assert(e.ok, e.error)
  end
end

local function words(line)
  local t = {}
  for w in (line or ""):gmatch("%S+") do t[#t + 1] = w end
  table.sort(t)
  return table.concat(t, " ")
end

local ENTRY = "title Fedora Linux\nversion %s\nlinux /vmlinuz-%s\ninitrd /initramfs-%s.img\n"
  .. "options root=/dev/vda1 ro vfio_pci.ids=10de:1b80 rhgb\n"
local BLS = "/boot/loader/entries/a.conf"

-- grubby's root after `apply --cmdline`: the BLS entry carries the parameters.
local function grubby_root()
  local root = h.make_root({ os = { ID = "fedora" }, files = { ["/etc/dracut.conf"] = "" }, exec = { "/usr/bin/dracut" } })
  local kver = h.install_kernel(root, "cloud")
  h.writefile(root .. BLS, ENTRY:format(kver, kver, kver))
  busybox(root)
  failable(root, "/usr/sbin/grubby", h.readfile(h.project .. "/spec/fixtures/standin-grubby"))
  local original = h.readfile(root .. BLS)
  assert(assert(v.plan({ root = root, ids = "1af4:1000", cmdline = true })):apply())
  regenerate(root, "grubby")
  local opts = h.sh("sed -n 's/^options //p' " .. q(root .. BLS))
  assert(opts:find("intel_iommu=on", 1, true) and opts:find("1af4:1000", 1, true), opts)
  return root, function(r, where)
    -- the entry holds exactly the words it had (grubby appends a word it replaces)
    local now = h.readfile(r .. BLS)
    assert.are.equal(words(original:match("\noptions ([^\n]*)")), words(now:match("\noptions ([^\n]*)")), where)
    assert.are.equal(original:gsub("\noptions [^\n]*", ""), (now:gsub("\noptions [^\n]*", "")), where)
    assert.is_nil(h.readfile(r .. "/etc/vfioinit/grubby.cmdline"), where)
  end
end

-- GRUB's root after `apply --cmdline`: grub.cfg generated from the drop-in.
local function grub_root()
  local root = h.make_root({ os = { ID = "debian" }, files = { ["/etc/initramfs-tools/modules"] = "# modules\n",
    ["/etc/default/grub"] = 'GRUB_CMDLINE_LINUX_DEFAULT="quiet"\nGRUB_CMDLINE_LINUX=""\n' },
    exec = { "/usr/sbin/update-initramfs" } })
  local kver = h.install_kernel(root, "cloud")
  busybox(root)
  h.writefile(root .. "/boot/vmlinuz-" .. kver, "")
  h.writefile(root .. "/usr/sbin/grub-mkconfig", h.readfile(h.project .. "/spec/fixtures/standin-grub-mkconfig"), 493)
  failable(root, "/usr/sbin/update-grub", "#!/bin/sh\nexec grub-mkconfig -o /boot/grub/grub.cfg\n")
  regenerate(root, "grub")
  local original = h.readfile(root .. "/boot/grub/grub.cfg")
  assert(assert(v.plan({ root = root, ids = "1af4:1000", cmdline = true })):apply())
  regenerate(root, "grub")
  assert(h.readfile(root .. "/boot/grub/grub.cfg"):find("intel_iommu=on", 1, true))
  return root, function(r, where)
    assert.are.equal(original, h.readfile(r .. "/boot/grub/grub.cfg"), where)
    assert.is_nil(h.readfile(r .. "/etc/default/grub.d/vfioinit.cfg"), where)
  end
end

-- A copy of root to revert: the kernel's module tree (never written) as hard links.
local function clone(src, dst)
  local out, ok = h.sh(("rm -rf %s && mkdir %s && cd %s && for d in * .[!.]*; do [ -e \"$d\" ] || continue; "
    .. "if [ \"$d\" = lib ]; then cp -al \"$d\" %s/; else cp -a \"$d\" %s/; fi; done 2>&1")
    :format(q(dst), q(dst), q(src), q(dst), q(dst)))
  assert(ok, out)
end

-- Nothing of vfioinit's state left.
local function assert_no_state(r, where)
  assert.are.equal("", h.sh("ls -A " .. q(r .. "/var/lib") .. " 2>/dev/null"), where)
  assert.are.equal("", h.sh("find " .. q(r) .. " -name '.*.vfioinit-*'"), where)
end

-- A child lua that dies by SIGKILL at its Nth step: a mutating core.fs call (before it), or
-- a command it spawns (before it starts, and after it ended before anything else). With
-- N = 0 it counts the steps of a whole revert.
local DRIVER = [[
local project, build, root, at = ...
package.path = project .. "/lua/?.lua;" .. project .. "/lua/?/init.lua;" .. package.path
package.cpath = project .. "/" .. build .. "/?.so;" .. package.cpath
local core = require "vfioinit.core"
local n, at = 0, tonumber(at)
local function step()
  n = n + 1
  if n == at then
    local f = io.open("/proc/self/stat"); local pid = f:read("*a"):match("^(%d+)"); f:close()
    os.execute("kill -9 " .. pid); os.exit(99)
  end
end
for _, name in ipairs({ "write_atomic", "remove", "mkdirs", "rename", "copy" }) do
  local real = core.fs[name]
  core.fs[name] = function(...) step(); return real(...) end
end
local spawn = core.spawn.run
core.spawn.run = function(...)
  step()
  local res = table.pack(spawn(...))
  step()
  return table.unpack(res, 1, res.n)
end
local ok, err = require("vfioinit").revert({ root = root })
if not ok then io.stderr:write(tostring(err), "\n"); os.exit(3) end
io.stdout:write(n, "\n")
]]

local function child(r, at)
  local dir = h.tmpdir()
  h.writefile(dir .. "/driver.lua", DRIVER)
  local out = h.sh(("cd %s && %s %s %s %s %s %s 2>&1; echo rc=$?"):format(q(h.project), h.lua, q(dir .. "/driver.lua"),
    q(h.project), q(build), q(r), q(tostring(at))))
  h.rm(dir)
  return tonumber(out:match("rc=(%d+)%s*$")), out
end

describe("item 13: the command after revert runs while the manifest still names its file", function()
  for _, case in ipairs({ { "grubby", grubby_root, "grubby" }, { "update-grub", grub_root, "update-grub" } }) do
    local name, make, tool = case[1], case[2], case[3]

    root_it(name .. " fails: revert fails naming it, keeps its state, and the next revert finishes", function()
      local r, check = make()
      finally(function() h.rm(r) end)
      h.writefile(r .. FAIL, "")
      local ok, err = v.revert({ root = r })
      assert.is_nil(ok)
      assert.truthy(tostring(err):find(tool, 1, true), err)
      assert.truthy(tostring(err):find("stand-in failure", 1, true), err)
      assert.truthy(h.readfile(r .. "/var/lib/vfioinit/manifest"))
      os.remove(r .. FAIL)
      local list
      ok, list = v.revert({ root = r })
      assert.is_true(ok, list)
      assert.truthy(list.regenerated and #list.regenerated > 0)
      check(r)
      assert_no_state(r)
    end)

    root_it(name .. ": kill -9 at every step of a revert, then revert: the entries are as before apply", function()
      local template, check = make()
      finally(function() h.rm(template) end)
      local copy = template .. ".count"
      clone(template, copy)
      local rc, out = child(copy, 0)
      h.rm(copy)
      assert.are.equal(0, rc, out)
      local steps = tonumber(out:match("(%d+)%s*rc="))
      assert.is_true(steps >= 4, out)
      for k = 1, steps do
        local r = template .. ".k"
        clone(template, r)
        local where = ("kill at step %d of %d"):format(k, steps)
        rc, out = child(r, k)
        assert.are.equal(137, rc, where .. ": " .. out)
        local ok, err = v.revert({ root = r })
        assert(ok, where .. ": " .. tostring(err))
        check(r, where)
        assert_no_state(r, where)
        h.rm(r)
      end
    end)
  end
end)

local IDS = { "1af4:1000" }
local CONFIGS = { "/etc/mkinitcpio.conf", "/etc/dracut.conf", "/etc/initramfs-tools/modules", "/etc/booster.yaml" }
local LOST = "/etc/mkinitcpio.conf"
local MANIFEST = "/var/lib/vfioinit/manifest"

-- A manifest field of the entry of path (awk over its tab-separated lines).
local function field(r, path, n)
  return (h.sh(("awk -F'\\t' -v p=%s '$3 == p { print $%d }' %s"):format(q(path), n, q(r .. MANIFEST))):gsub("\n$", ""))
end

-- Every file's path and content under root.
local function tree(r)
  return h.sh("cd " .. q(r) .. " && find . -type f -print0 | sort -z | xargs -0 -r sha256sum")
end

-- all four generators' configs applied; LOST's backup then deleted. Returns root, the
-- originals, LOST as apply left it.
local function lost_root()
  local r = h.all_root()
  local orig = {}
  for _, p in ipairs(CONFIGS) do orig[p] = assert(h.readfile(r .. p)) end
  assert(assert(v.plan({ root = r, ids = IDS })):apply())
  assert.are.equal("saved", field(r, LOST, 1))
  local backup = field(r, LOST, 4)
  assert(os.remove(r .. backup))
  return r, orig, h.readfile(r .. LOST), backup
end

describe("item 14: a lost backup stops the restore of its own file only", function()
  it("revert restores every other file, names the lost one (exit 1) until --force forgets it", function()
    local r, orig, applied, backup = lost_root()
    finally(function() h.rm(r) end)
    local created = h.sh(("awk -F'\\t' '$1 == \"created\" { print $3 }' %s"):format(q(r .. MANIFEST)))
    assert.truthy(created:find("/etc/modprobe.d/", 1, true))
    local code, _, err = h.cli("--root " .. q(r) .. " revert")
    assert.are.equal(1, code, err)
    assert.truthy(err:find("vfioinit: " .. LOST .. ": cannot be restored", 1, true), err)
    assert.truthy(err:find(backup .. ": No such file or directory", 1, true), err)
    assert.is_nil(err:find("damaged", 1, true), err)
    for p, content in pairs(orig) do
      assert.are.equal(p == LOST and applied or content, h.readfile(r .. p), p)
    end
    for p in created:gmatch("[^\n]+") do assert.is_nil(h.readfile(r .. p), p) end
    -- the next revert names it again, changing nothing
    local before = tree(r)
    local json
    code, json = h.cli("--root " .. q(r) .. " --json revert")
    assert.are.equal(1, code, json)
    assert.are.equal("False " .. LOST .. " True", h.pyjson(json, "d['ok'], d['refused'][0]['path'], d['refused'][0]['lost']"))
    assert.are.equal(before, tree(r))
    -- --force forgets it, leaving it as apply wrote it
    code, _, err = h.cli("--root " .. q(r) .. " revert --force")
    assert.are.equal(0, code, err)
    assert.are.equal(applied, h.readfile(r .. LOST))
    for p, content in pairs(orig) do if p ~= LOST then assert.are.equal(content, h.readfile(r .. p), p) end end
    assert_no_state(r)
  end)

  it("Lua: nil, one line per file, refused {path=, reason=, lost=true} with refused.reverted", function()
    local r, _, _, backup = lost_root()
    finally(function() h.rm(r) end)
    local paths = {}
    for p in h.sh(("awk -F'\\t' -v p=%s '$1 != \"dir\" && NF == 8 && $3 != p { print $3 }' %s"):format(q(LOST), q(r .. MANIFEST)))
      :gmatch("[^\n]+") do paths[#paths + 1] = p end
    table.sort(paths)
    local before = tree(r)
    -- a dry run says the same and writes nothing
    local ok, msg, refused = v.revert({ root = r, dry_run = true })
    assert.is_nil(ok)
    assert.are.equal(before, tree(r))
    assert.are.equal(1, #refused)
    ok, msg, refused = v.revert({ root = r })
    assert.is_nil(ok)
    assert.are.equal(1, select(2, msg:gsub("[^\n]+", "")), msg)
    assert.are.equal(LOST, refused[1].path)
    assert.is_true(refused[1].lost)
    assert.truthy(refused[1].reason:find(backup, 1, true), refused[1].reason)
    local got = {}
    for _, e in ipairs(refused.reverted) do if e.kind ~= "dir" then got[#got + 1] = e.path end end
    table.sort(got)
    assert.are.same(paths, got)
  end)

  it("with a file edited by hand too: refuses, changing nothing, naming both; --force restores the edited one", function()
    local r, orig, applied = lost_root()
    finally(function() h.rm(r) end)
    h.writefile(r .. "/etc/booster.yaml", h.readfile(r .. "/etc/booster.yaml") .. "# mine\n")
    local edited = h.readfile(r .. "/etc/booster.yaml")
    local before = tree(r)
    local code, _, err = h.cli("--root " .. q(r) .. " revert")
    assert.are.equal(1, code, err)
    assert.truthy(err:find("/etc/booster.yaml: changed since vfioinit wrote it", 1, true), err)
    assert.truthy(err:find(LOST .. ": cannot be restored", 1, true), err)
    assert.are.equal(before, tree(r))
    code, _, err = h.cli("--root " .. q(r) .. " revert --force")
    assert.are.equal(0, code, err)
    assert.are.equal(orig["/etc/booster.yaml"], h.readfile(r .. "/etc/booster.yaml"))
    assert.are.equal(edited, h.readfile(r .. "/etc/booster.yaml.vfioinit-edited"))
    assert.are.equal(applied, h.readfile(r .. LOST))
    assert_no_state(r)
  end)
end)

-- A real newc archive holding one file `name` with `content`.
local function cpio(name, content)
  local d = h.tmpdir()
  h.writefile(d .. "/" .. name, content)
  local out = h.sh("cd " .. q(d) .. " && echo " .. q(name) .. " | cpio -o -H newc --quiet")
  h.rm(d)
  return out
end

describe("item 15: revert settles what a killed rebuild left", function()
  local function mkinitcpio_root()
    local r = h.make_root({ os = { ID = "arch" }, corpus = { ["/etc/mkinitcpio.conf"] = "mkinitcpio/mkinitcpio.conf" },
      exec = { "/usr/bin/mkinitcpio" } })
    local kver = h.install_kernel(r, "cloud")
    return r, "/boot/initramfs-" .. kver .. ".img"
  end

  for _, case in ipairs({
    { "a partial image", function(new) return new:sub(1, #new // 2) end, "previous" },
    { "no image", function() return nil end, "previous" },
    { "a complete new image", function(new) return new end, "new" },
  }) do
    it("after apply, with " .. case[1] .. " beside <image>.vfioinit-prev: the " .. case[3] .. " image stays", function()
      local r, img = mkinitcpio_root()
      finally(function() h.rm(r) end)
      local conf = h.readfile(r .. "/etc/mkinitcpio.conf")
      assert(assert(v.plan({ root = r, ids = IDS })):apply())
      local prev, new = cpio("old", ("previous image\n"):rep(200)), cpio("new", ("new image\n"):rep(400))
      h.writefile(r .. img .. ".vfioinit-prev", prev)
      local left = case[2](new)
      if left then h.writefile(r .. img, left) end
      local code, out, err = h.cli("--root " .. q(r) .. " --json revert")
      assert.are.equal(0, code, err)
      assert.are.equal(case[3] == "new" and new or prev, h.readfile(r .. img))
      assert.is_nil(h.readfile(r .. img .. ".vfioinit-prev"))
      assert.are.equal(conf, h.readfile(r .. "/etc/mkinitcpio.conf"))
      assert.are.equal((case[3] == "new" and "removed " or "restored ") .. img .. ".vfioinit-prev",
        h.pyjson(out, "d['leftovers'][0]['action'] + ' ' + d['leftovers'][0]['path']"))
      assert_no_state(r)
    end)
  end

  it("not while a refusal (a file edited by hand) changes nothing", function()
    local r, img = mkinitcpio_root()
    finally(function() h.rm(r) end)
    assert(assert(v.plan({ root = r, ids = IDS })):apply())
    h.writefile(r .. img .. ".vfioinit-prev", cpio("old", "previous image\n"))
    h.writefile(r .. "/etc/mkinitcpio.conf", h.readfile(r .. "/etc/mkinitcpio.conf") .. "# mine\n")
    local before = tree(r)
    local code, _, err = h.cli("--root " .. q(r) .. " revert")
    assert.are.equal(1, code, err)
    assert.are.equal(before, tree(r))
  end)

  it("with nothing to revert (a killed `vfioinit rebuild`): the previous image goes back", function()
    local r, img = mkinitcpio_root()
    finally(function() h.rm(r) end)
    local prev = cpio("old", "previous image\n")
    h.writefile(r .. img .. ".vfioinit-prev", prev)
    h.writefile(r .. img, cpio("new", ("new image\n"):rep(400)):sub(1, 700))
    local ok, list = v.revert({ root = r })
    assert.is_true(ok, list)
    assert.are.equal(prev, h.readfile(r .. img))
    assert.is_nil(h.readfile(r .. img .. ".vfioinit-prev"))
    assert.are.equal("restored", list.leftovers[1].action)
  end)
end)
