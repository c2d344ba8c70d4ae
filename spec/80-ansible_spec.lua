-- The Ansible collection in contrib/ansible (module vfioinit.vfioinit.initramfs): built and
-- installed with ansible-galaxy into a temp dir, run by ansible-playbook against localhost
-- (connection: local). Results are read from the json stdout callback by python3.
-- (1) a synthetic Arch-like root: check mode, --diff, apply, idempotence, absent, a failure;
-- (2) VFIOINIT_REAL=1: a throwaway copy of the real initramfs-tools root (tools/clone-root):
--     apply with ids + rebuild, per-kernel rebuild results, second run unchanged.
-- ansible-playbook runs without LD_PRELOAD (tools/test preloads the sanitizer runtime for
-- lua5.4); the CLI gets it back through a small wrapper given as the module's `executable`.
local h = require "helpers"

local real = os.getenv("VFIOINIT_REAL") == "1"
local COLLECTION = h.project .. "/contrib/ansible/ansible_collections/vfioinit/vfioinit"

local work -- temp dir: collection install, ansible temp dirs, playbooks, the CLI wrapper

local function setup_work()
  work = h.tmpdir()
  local out, ok = h.sh(("env -u LD_PRELOAD sh -c %s 2>&1"):format(h.q(
    ("ansible-galaxy collection build %s --output-path %s >/dev/null && " ..
     "ansible-galaxy collection install %s/vfioinit-vfioinit-*.tar.gz -p %s/collections")
    :format(h.q(COLLECTION), h.q(work), h.q(work), h.q(work)))))
  assert(ok, "ansible-galaxy build/install failed:\n" .. out)
  -- the CLI, with the environment ansible-playbook itself runs without
  local preload = os.getenv("LD_PRELOAD")
  local exe = work .. "/vfioinit"
  -- each run's arguments, one line per run, in argv.log: what the module passed, seen from outside
  h.writefile(exe, "#!/bin/sh\n" .. (preload and preload ~= "" and ("LD_PRELOAD=" .. h.q(preload) .. " export LD_PRELOAD\n") or "")
    .. "echo \"$*\" >> " .. h.q(work .. "/argv.log") .. "\n"
    .. "exec " .. h.q(h.project .. "/bin/vfioinit") .. " \"$@\"\n", 493)
  h.writefile(work .. "/tree-hash", "#!/bin/sh\n"
    .. "cd \"$1\" && find . -printf '%p %m %T@ %s\\n' | sort && find . -type f -print0 | sort -z | xargs -0 -r sha256sum\n", 493)
end

-- Run a playbook (YAML text); returns the path of the json callback output and stderr.
local runs = 0
local function playbook(yaml, flags)
  runs = runs + 1
  local pb = ("%s/play%d.yml"):format(work, runs)
  local outf, errf = pb .. ".json", pb .. ".err"
  h.writefile(pb, yaml)
  local env = table.concat({
    "env -u LD_PRELOAD",
    -- ansible-core has no `json` stdout callback (it is ansible.posix's): the spec ships one
    "ANSIBLE_STDOUT_CALLBACK=vfioinit_json",
    "ANSIBLE_CALLBACK_PLUGINS=" .. h.q(h.project .. "/spec/fixtures/ansible/callback_plugins"),
    "ANSIBLE_COLLECTIONS_PATH=" .. h.q(work .. "/collections"),
    "ANSIBLE_LOCAL_TEMP=" .. h.q(work .. "/tmp"),
    "ANSIBLE_REMOTE_TEMP=" .. h.q(work .. "/tmp"),
    "ANSIBLE_LOCALHOST_WARNING=false",
    "ANSIBLE_INVENTORY_UNPARSED_WARNING=false",
    "ANSIBLE_RETRY_FILES_ENABLED=false",
    "ANSIBLE_NOCOLOR=1",
  }, " ")
  h.sh(("%s ansible-playbook -i localhost, %s %s >%s 2>%s"):format(env, flags or "", h.q(pb), h.q(outf), h.q(errf)))
  return outf, h.readfile(errf) or ""
end

-- python3 evaluates each expression of `exprs` ({name = expr}) over `t`, the task results by
-- task name (host localhost), and `d`, the whole report; returns {name = printed value}.
local function query(outf, exprs)
  local names = {}
  for k in pairs(exprs) do names[#names + 1] = k end
  table.sort(names)
  local py = { "import json,sys",
    "d=json.load(open(sys.argv[1]))",
    "t={x['task']['name']: x['hosts'].get('localhost', {}) for p in d['plays'] for x in p['tasks']}",
    "def v(f):",
    "    try: return str(f())",
    "    except Exception as e: return '<%s: %s>' % (type(e).__name__, e)",
    "sys.stdout.write('\\0'.join([" }
  for _, k in ipairs(names) do py[#py + 1] = "  v(lambda: (" .. exprs[k] .. "))," end
  py[#py + 1] = "]))"
  local out, ok = h.sh("python3 -c " .. h.q(table.concat(py, "\n")) .. " " .. h.q(outf) .. " 2>&1")
  -- ansible-playbook's own stderr says why when it printed no report at all
  assert(ok, out .. "\n" .. (h.readfile(outf) or "") .. "\n" .. (h.readfile(outf:gsub("%.json$", ".err")) or ""))
  local r, i = {}, 0
  for field in (out .. "\0"):gmatch("([^\0]*)\0") do i = i + 1; r[names[i]] = field end
  return r
end

local function task(name, args, extra)
  local lines = { "    - name: " .. name, "      vfioinit.vfioinit.initramfs:" }
  for _, kv in ipairs(args) do lines[#lines + 1] = "        " .. kv end
  lines[#lines + 1] = "        executable: " .. work .. "/vfioinit"
  for _, e in ipairs(extra or {}) do lines[#lines + 1] = "      " .. e end
  return table.concat(lines, "\n") .. "\n"
end

local function hash_task(name, root)
  return ("    - name: %s\n      ansible.builtin.command:\n        argv: [%s/tree-hash, %s]\n"):format(name, work, root)
end

local HEAD = "- hosts: localhost\n  connection: local\n  gather_facts: false\n  tasks:\n"

describe("Ansible module vfioinit.vfioinit.initramfs", function()
  setup(setup_work)
  teardown(function() if work then h.rm(work) end end)

  it("synthetic Arch root: check mode writes nothing and reports changed, --diff shows the diff, "
    .. "apply changes once, state=absent restores byte for byte; a broken config fails with PATH:LINE", function()
    local corpus = assert(h.readfile(h.corpus .. "/mkinitcpio/mkinitcpio.conf"))
    local r = h.make_root({ os = { ID = "arch" }, corpus = { ["/etc/mkinitcpio.conf"] = "mkinitcpio/mkinitcpio.conf" },
      exec = { "/usr/bin/mkinitcpio" } })
    local bad = h.make_root({ os = { ID = "arch" }, exec = { "/usr/bin/mkinitcpio" },
      files = { ["/etc/mkinitcpio.conf"] = "# header\nBINARIES=()\nMODULES=(ext4\n  nvme\n" } })
    finally(function() h.rm(r); h.rm(bad) end)
    local before, bad_before = h.tree_hash(r), h.tree_hash(bad)
    local present = { "root: " .. r, "rebuild: false" }
    local absent = { "root: " .. r, "rebuild: false", "state: absent" }
    local outf, err = playbook(HEAD
      .. hash_task("hash0", r)
      .. task("check", present, { "check_mode: true" })
      .. hash_task("hash1", r)
      .. task("apply1", present)
      .. task("apply2", present)
      .. task("check2", present, { "check_mode: true" })
      .. task("absent_check", absent, { "check_mode: true" })
      .. task("absent1", absent)
      .. task("absent2", absent)
      .. task("broken_check", { "root: " .. bad, "rebuild: false" }, { "check_mode: true", "ignore_errors: true" })
      .. task("broken", { "root: " .. bad, "rebuild: false" }, { "ignore_errors: true" }),
      "--diff")
    local R = query(outf, {
      stats = "d['stats']['localhost']['failures'], d['stats']['localhost']['unreachable']",
      check = "t['check']['changed'], t['check'].get('failed', False), t['check']['changes'][0]['path']",
      hash0 = "t['hash0']['stdout']", hash1 = "t['hash1']['stdout']",
      diff = "t['check']['diff']['prepared']",
      apply1 = "t['apply1']['changed'], t['apply1']['rebuilt'], t['apply1']['kernels']",
      apply1_diff = "t['apply1']['diff']['prepared']",
      apply2 = "t['apply2']['changed'], len(t['apply2']['changes']), repr(t['apply2']['diff_text'])",
      check2 = "t['check2']['changed']",
      absent_check = "t['absent_check']['changed'], t['absent_check']['reverted'][0]['path']",
      absent1 = "t['absent1']['changed'], t['absent1']['reverted'][0]['action'], t['absent1']['reverted'][0]['path']",
      absent1_after = "[l for l in t['absent1']['diff']['prepared'].splitlines() if l.startswith('+MODULES')][0]",
      absent2 = "t['absent2']['changed']",
      broken_check = "t['broken_check']['failed']", broken_check_msg = "t['broken_check']['msg']",
      broken = "t['broken']['failed']", broken_msg = "t['broken']['msg']",
    })
    assert.are.equal("(0, 0)", R.stats, err)

    -- check mode: changed=true, nothing written (same tree before, between and after the task)
    assert.are.equal("(True, False, '/etc/mkinitcpio.conf')", R.check)
    assert.are.equal(R.hash0, R.hash1)
    assert.are.equal((before:gsub("\n$", "")), R.hash0)
    -- --diff: the plan's unified diff
    assert.truthy(R.diff:find("--- etc/mkinitcpio.conf\n+++ etc/mkinitcpio.conf\n@@", 1, true), R.diff)
    assert.truthy(R.diff:find("\n-MODULES=()\n+MODULES=(vfio vfio_iommu_type1 vfio_pci)\n", 1, true), R.diff)

    -- first run changes, second does not (and neither does check mode afterwards)
    assert.are.equal("(True, [], [])", R.apply1)
    assert.are.equal(R.diff, R.apply1_diff)
    assert.are.equal("(False, 0, \"''\")", R.apply2)
    assert.are.equal("False", R.check2)

    -- absent: check mode predicts the revert, the revert restores, a second one does nothing
    assert.are.equal("(True, '/etc/mkinitcpio.conf')", R.absent_check)
    assert.are.equal("(True, 'restored', '/etc/mkinitcpio.conf')", R.absent1)
    assert.are.equal("+MODULES=()", R.absent1_after)  -- revert --dry-run's diff
    assert.are.equal("False", R.absent2)
    assert.are.equal(corpus, h.readfile(r .. "/etc/mkinitcpio.conf"))
    assert.is_nil(h.readfile(r .. "/var/lib/vfioinit/manifest"))

    -- failures: failed, with the CLI's message; nothing written
    assert.are.equal("True", R.broken_check)
    assert.are.equal("True", R.broken)
    assert.truthy(R.broken_check_msg:match("^vfioinit: /etc/mkinitcpio%.conf:%d+: "), R.broken_check_msg)
    assert.truthy(R.broken_msg:match("^vfioinit: /etc/mkinitcpio%.conf:%d+: "), R.broken_msg)
    assert.are.equal(bad_before, h.tree_hash(bad))
  end)

  it("devices, match and force reach the CLI: --device binds by address (check mode lists it), "
    .. "a bad --match pattern fails with the CLI's message, force lets state=absent restore a hand-edited file", function()
    local r = h.make_root({ os = { ID = "fedora" }, corpus = { ["/etc/dracut.conf"] = "dracut/dracut.conf" },
      exec = { "/usr/bin/dracut" } })
    finally(function() h.rm(r) end)
    local dev = { "root: " .. r, "rebuild: false", "devices: ['00:04.0']" }
    local absent = { "root: " .. r, "rebuild: false", "state: absent" }
    local SETUP = "/usr/lib/dracut/modules.d/90vfioinit-bind/module-setup.sh"
    local edit = ('    - name: edit\n      ansible.builtin.shell: "echo hand-edit >> %s/etc/dracut.conf.d/90-vfioinit-bind.conf"\n')
      :format(r)
    local outf, err = playbook(HEAD
      .. task("check", dev, { "check_mode: true" })
      .. task("apply", dev)
      .. task("bad_match", { "root: " .. r, "rebuild: false", "match: '['" }, { "ignore_errors: true" })
      .. task("other_root_match", { "root: " .. r, "rebuild: false", "match: '^10de:'" }, { "ignore_errors: true" })
      .. edit
      .. task("absent_refused", absent, { "ignore_errors: true" })
      .. task("absent_forced", { "root: " .. r, "rebuild: false", "state: absent", "force: true" }))
    local R = query(outf, {
      stats = "d['stats']['localhost']['unreachable']",
      check = "t['check']['changed'], t['check']['devices'], 'matched' in t['check']",
      check_setup = "any(c['path'] == '" .. SETUP .. "' for c in t['check']['changes'])",
      apply = "t['apply']['changed'], sorted(c['path'] for c in t['apply']['changes'] if 'vfioinit-bind' in c['path'])",
      bad_match = "t['bad_match']['failed'], t['bad_match']['msg']",
      other_root_match = "t['other_root_match']['failed'], t['other_root_match']['msg']",
      absent_refused = "t['absent_refused']['failed'], t['absent_refused']['msg']",
      absent_forced = "t['absent_forced']['changed'], t['absent_forced']['cmd']",
      all = "t",
    })
    assert.are.equal("0", R.stats, err)
    assert.are.equal("(True, ['0000:00:04.0'], False)", R.check, R.all)
    assert.are.equal("True", R.check_setup, R.all)
    assert.are.equal("(True, ['/etc/dracut.conf.d/90-vfioinit-bind.conf', '" .. SETUP
      .. "', '/usr/lib/dracut/modules.d/90vfioinit-bind/vfioinit-bind.sh'])", R.apply, R.all)
    -- match: the CLI's own refusals, so the pattern reached it
    assert.truthy(R.bad_match:find("^%(True, 'vfioinit: %-%-match: %[: "), R.bad_match)
    assert.truthy(R.other_root_match:find("needs --root /", 1, true), R.other_root_match)
    -- force: without it revert refuses the hand-edited file; with it the file is restored (removed)
    -- and the edit kept beside it
    assert.truthy(R.absent_refused:find("^%(True, [\"']vfioinit: /etc/dracut.conf.d/90%-vfioinit%-bind.conf: changed since"),
      R.absent_refused)
    assert.truthy(R.absent_forced:find("^%(True, %[.*'%-%-force', 'revert'%]%)$"), R.absent_forced)
    assert.is_nil(h.readfile(r .. SETUP))
    assert.truthy(h.readfile(r .. "/etc/dracut.conf.d/90-vfioinit-bind.conf.vfioinit-edited"):find("\nhand%-edit\n$"))
  end)

  it("cmdline and timeout reach the CLI: --cmdline in check mode and apply puts the IOMMU and ids on GRUB's "
    .. "command line (as bash reads it), --timeout goes to the commands that run generators, a bad one fails "
    .. "with the CLI's message", function()
    local mkconfig = "#!/bin/sh\n. /etc/default/grub\nfor x in ${sysconfdir}/default/grub.d/*.cfg ; do\n  . \"$x\"\ndone\n"
    local function grub_root()
      return h.make_root({ os = { ID = "debian" }, files = { ["/etc/initramfs-tools/modules"] = "# modules\n",
        ["/etc/default/grub"] = 'GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX_DEFAULT="quiet"\nGRUB_CMDLINE_LINUX=""\n',
        ["/usr/sbin/grub-mkconfig"] = mkconfig }, exec = { "/usr/sbin/update-initramfs", "/usr/sbin/update-grub" } })
    end
    local r, plain = grub_root(), grub_root()
    finally(function() h.rm(r); h.rm(plain) end)
    -- the words grub-mkconfig puts on a normal entry: bash sources the files as it does
    local function grub_words(root)
      local script = ("sysconfdir=%s/etc; . %s/etc/default/grub; for x in %s/etc/default/grub.d/*.cfg; do "
        .. "[ -e \"$x\" ] && . \"$x\"; done; echo $GRUB_CMDLINE_LINUX $GRUB_CMDLINE_LINUX_DEFAULT"):format(root, root, root)
      local out, ok = h.sh("bash -c " .. h.q(script) .. " 2>&1")
      assert(ok, out)
      return out
    end
    local args = { "root: " .. r, "rebuild: false", "ids: ['1af4:1000']", "cmdline: true", "timeout: 45" }
    h.writefile(work .. "/argv.log", "")
    local outf, err = playbook(HEAD
      .. hash_task("hash0", r)
      .. task("check", args, { "check_mode: true" })
      .. hash_task("hash1", r)
      .. task("apply", args)
      .. task("plain", { "root: " .. plain, "rebuild: false", "ids: ['1af4:1000']" })
      .. task("bad_timeout", { "root: " .. r, "rebuild: false", "timeout: 0" }, { "ignore_errors: true" }), "--diff")
    local R = query(outf, {
      stats = "d['stats']['localhost']['unreachable']",
      check = "t['check']['changed'], sorted(c['path'] for c in t['check']['changes'] if c['generator'] == 'cmdline')",
      check_diff = "'+++ etc/default/grub.d/vfioinit.cfg' in t['check']['diff']['prepared']",
      unchanged = "t['hash0']['stdout'] == t['hash1']['stdout']",
      apply = "t['apply']['changed'], t['apply']['cmdline'], t['apply']['regenerated']",
      plain = "t['plain']['changed'], 'cmdline' in t['plain']",
      bad_timeout = "t['bad_timeout']['failed'], t['bad_timeout']['msg']",
      all = "t",
    })
    assert.are.equal("0", R.stats, err)
    assert.are.equal("(True, ['/etc/default/grub.d/vfioinit.cfg'])", R.check, R.all)
    assert.are.equal("True", R.check_diff, R.all)
    assert.are.equal("True", R.unchanged)
    assert.are.equal("(True, [], [])", R.apply, R.all)  -- --no-rebuild: nothing regenerated, nothing read back
    assert.are.equal("(True, False)", R.plain, R.all)
    assert.are.equal("(True, 'vfioinit: --timeout 0: expected a number of seconds > 0 and at most 1e9')", R.bad_timeout)
    -- check mode wrote nothing; apply put the words on GRUB's line; without cmdline nothing of GRUB's changed
    local words = " " .. grub_words(r):gsub("%s+", " ")
    for _, w in ipairs({ "quiet", "intel_iommu=on", "iommu=pt", "vfio-pci.ids=1af4:1000" }) do
      assert.truthy(words:find(" " .. w:gsub("%p", "%%%0") .. " "), w .. " not in:" .. words)
    end
    assert.are.equal(" quiet ", " " .. grub_words(plain):gsub("%s+", " "))
    assert.is_nil(h.readfile(plain .. "/etc/default/grub.d/vfioinit.cfg"))
    -- what the module ran: --cmdline for plan and apply, --timeout only where generators run
    local calls = {}
    for line in h.readfile(work .. "/argv.log"):gmatch("[^\n]+") do calls[#calls + 1] = line end
    local function ran(cmd)
      for _, l in ipairs(calls) do if l:find(" " .. cmd .. "$") or l:find(" " .. cmd .. " ") then return l end end
    end
    local plan, apply, verify = ran("plan"), ran("apply"), ran("verify")
    assert.truthy(plan and plan:find("--cmdline", 1, true), table.concat(calls, "\n"))
    assert.is_nil(plan:find("--timeout", 1, true))
    assert.truthy(apply:find("--cmdline --timeout 45 apply --no-rebuild", 1, true), apply)
    assert.is_nil(verify, verify)  -- rebuild: false, so check mode asked plan only
  end)

  describe("on a real debootstrap root (tools/clone-root initramfs-tools)", function()
    if not real then
      pending("set VFIOINIT_REAL=1 (real initramfs-tools root, real update-initramfs)")
      return
    end
    it("apply with ids rebuilds and verifies each kernel's image and reports it; a second run is unchanged", function()
      local dir = h.tmpdir()
      local dest = dir .. "/root"
      finally(function()
        h.sh("env -u LD_PRELOAD tools/clone-root --remove " .. h.q(dest) .. " >/dev/null 2>&1")
        h.rm(dir)
      end)
      local out, ok = h.sh("env -u LD_PRELOAD tools/clone-root initramfs-tools " .. h.q(dest) .. " 2>&1")
      assert(ok, out)
      local args = { "root: " .. dest, "ids: ['1af4:1000']", "rebuild: true", "timeout: 900" }
      -- stock: the images as debootstrap left them, put back at the end to make them stale
      local stock = ("    - name: %s\n      ansible.builtin.shell: %s\n")
      local outf, err = playbook(HEAD
        .. stock:format("save", h.q(("mkdir %s/stock && cp -a %s/boot/initrd.img-* %s/stock/"):format(dir, dest, dir)))
        .. task("check", args, { "check_mode: true" })
        .. task("apply1", args)
        .. task("apply2", args)
        .. task("check2", args, { "check_mode: true" })
        .. stock:format("restore", h.q(("cp -a %s/stock/. %s/boot/"):format(dir, dest)))
        .. task("check3", args, { "check_mode: true" }))
      local R = query(outf, {
        failures = "d['stats']['localhost']['failures']",
        check = "t['check']['changed']",
        apply1 = "t['apply1']['changed']",
        kernels = "len(t['apply1']['kernels'])",
        rebuilt = "len(t['apply1']['rebuilt'])",
        rebuilt_ok = "all(r['ok'] and r['generator'] == 'initramfs-tools' and r['image'].startswith('/boot/initrd.img-')"
          .. " and r['kernel'] in t['apply1']['kernels'] for r in t['apply1']['rebuilt'])",
        rebuilt_kernels = "sorted(r['kernel'] for r in t['apply1']['rebuilt']) == sorted(t['apply1']['kernels'])",
        verified = "all(v['ok'] for v in t['apply1']['verified']), len(t['apply1']['verified']) == len(t['apply1']['kernels'])",
        changes = "sorted(c['path'] for c in t['apply1']['changes'])",
        apply2 = "t['apply2']['changed'], t['apply2']['rebuilt'], all(v['ok'] for v in t['apply2']['verified'])",
        check2 = "t['check2']['changed'], t['check2']['pending_images']",
        check3 = "t['check3']['changed'], sorted(i['kernel'] for i in t['check3']['pending_images']) == sorted(t['apply1']['kernels'])",
        summary = "[(r['kernel'], r['image'], r['ok'], r['seconds']) for r in t['apply1']['rebuilt']]",
        all = "t",
      })
      assert.are.equal("0", R.failures, err .. R.all)
      io.stderr:write("\n[ansible on the real initramfs-tools root] rebuilt: " .. R.summary .. "\n")
      assert.are.equal("True", R.check)
      assert.are.equal("True", R.apply1)
      assert.is_true(tonumber(R.kernels) >= 1)
      -- one rebuild result per kernel, by initramfs-tools, ok, image in /boot; each image verified
      assert.are.equal(R.kernels, R.rebuilt)
      assert.are.equal("True", R.rebuilt_ok, R.all)
      assert.are.equal("True", R.rebuilt_kernels)
      assert.are.equal("(True, True)", R.verified)
      assert.truthy(R.changes:find("/etc/modprobe.d/vfioinit.conf", 1, true), R.changes)
      -- second run: nothing changed, nothing rebuilt, still verified
      assert.are.equal("(False, [], True)", R.apply2)
      -- check mode: nothing pending; with the stock images back, apply would rebuild them: changed
      assert.are.equal("(False, [])", R.check2)
      assert.are.equal("(True, True)", R.check3, R.all)
    end)
  end)
end)
