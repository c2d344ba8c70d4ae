-- The Ansible collection's conventions (issue 17 item 4): ansible-core's validate-modules
-- (the validator `ansible-test sanity --test validate-modules` runs, called directly: that
-- command wants to bootstrap pip into a venv, which needs the network) reports nothing
-- beyond the collection's ignore file; every key the module returns is documented in RETURN;
-- check mode of state=absent is `vfioinit revert --dry-run`; galaxy.yml names the public home.
local h = require "helpers"
local q = h.q

local COLLECTION = h.project .. "/contrib/ansible/ansible_collections/vfioinit/vfioinit"
local MODULE = COLLECTION .. "/plugins/modules/initramfs.py"

-- The Python ansible runs under (its scripts' #! line), and ansible-core's version X.Y.
local function ansible_python()
  local ansible = (h.sh("command -v ansible"):gsub("%s+$", ""))
  if ansible == "" then return nil end
  local first = (h.readfile(ansible) or ""):match("^#!%s*(%S+)")
  return first
end
local PY = ansible_python()

local function validator()
  if not PY then return nil, "ansible-core is not installed" end
  local out, ok = h.sh(PY .. " -c " .. q("import os, ansible_test, voluptuous; print(os.path.dirname(ansible_test.__file__))") .. " 2>&1")
  if not ok then return nil, "ansible-test or voluptuous missing (apt-get install ansible-core python3-voluptuous)" end
  return out:gsub("%s+$", "") .. "/_util/controller/sanity/validate-modules/validate.py"
end

-- Run the module as Ansible does on the target: python, one args file (ANSIBLE_MODULE_ARGS).
-- LD_PRELOAD (tools/test's sanitizer runtime) stays off python and goes back on the CLI.
local work
local function module_run(args)
  local f = work .. "/args.json"
  local parts = {}
  for k, v in pairs(args) do
    local j = type(v) == "string" and ('"' .. v .. '"') or tostring(v)
    parts[#parts + 1] = ('"%s": %s'):format(k, j)
  end
  parts[#parts + 1] = '"executable": "' .. work .. '/vfioinit"'
  h.writefile(f, '{"ANSIBLE_MODULE_ARGS": {' .. table.concat(parts, ", ") .. "}}")
  local out = h.sh(("cd %s && env -u LD_PRELOAD PYTHONDONTWRITEBYTECODE=1 %s %s %s 2>&1"):format(q(work), PY, q(MODULE), q(f)))
  return out
end

-- python evaluates `expr` over `r`, the module's result (its JSON stdout), and `doc`, RETURN.
local function pyeval(result_json, expr)
  local rf = work .. "/result.json"
  h.writefile(rf, result_json)
  local out, ok = h.sh(("env -u LD_PRELOAD PYTHONDONTWRITEBYTECODE=1 %s -c %s %s %s 2>&1"):format(PY, q(table.concat({
    "import json, sys, yaml, importlib.util",
    "spec = importlib.util.spec_from_file_location('m', sys.argv[2])",
    "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)",
    "doc = yaml.safe_load(m.RETURN)",
    "r = json.loads(open(sys.argv[1]).read())",
    "print(" .. expr .. ")" }, "\n")), q(rf), q(MODULE)))
  assert(ok, out .. "\n" .. result_json)
  return (out:gsub("\n$", ""))
end

local function arch_root()
  return h.make_root({ os = { ID = "arch" }, corpus = { ["/etc/mkinitcpio.conf"] = "mkinitcpio/mkinitcpio.conf" },
    exec = { "/usr/bin/mkinitcpio" } })
end

describe("Ansible collection", function()
  setup(function()
    work = h.tmpdir()
    local preload = os.getenv("LD_PRELOAD")
    h.writefile(work .. "/vfioinit", "#!/bin/sh\n" .. (preload and preload ~= "" and ("LD_PRELOAD=" .. q(preload) .. " export LD_PRELOAD\n") or "")
      .. "exec " .. q(h.project .. "/bin/vfioinit") .. " \"$@\"\n", 493)
  end)
  teardown(function() h.rm(work) end)

  it("passes ansible-core's validate-modules, with only the ignore file's entries left", function()
    local validate, why = validator()
    if not validate then pending(why); return end
    local version = h.sh(PY .. " -c " .. q("from ansible.release import __version__ as v; print('.'.join(v.split('.')[:2]))")):gsub("%s+$", "")
    local out = h.sh(("cd %s && env -u LD_PRELOAD PYTHONDONTWRITEBYTECODE=1 ANSIBLE_COLLECTIONS_PATH=%s %s %s --format json --arg-spec "
      .. "--collection ansible_collections/vfioinit/vfioinit --collection-version 0.1.0 plugins/modules/initramfs.py 2>&1")
      :format(q(COLLECTION), q(h.project .. "/contrib/ansible"), PY, q(validate)))
    local ignore = h.readfile(COLLECTION .. "/tests/sanity/ignore-" .. version .. ".txt")
    assert.truthy(ignore, "no tests/sanity/ignore-" .. version .. ".txt")
    -- errors as "path validate-modules:code", minus the ignored ones; every ignore must be used
    local f = work .. "/validate.json"
    h.writefile(f, out)
    local left = h.sh(PY .. " -c " .. q(table.concat({
      "import json, sys",
      "d = json.load(open(sys.argv[1]))",
      "errs = set('%s validate-modules:%s' % (p, e['code']) for p, r in d.items() for e in r['errors'] + r['traces'])",
      "ign = set(l.split('#')[0].strip() for l in open(sys.argv[2]) if l.split('#')[0].strip())",
      "print(sorted(errs - ign), sorted(ign - errs))" }, "\n")) .. " " .. q(f) .. " " .. q(COLLECTION .. "/tests/sanity/ignore-" .. version .. ".txt") .. " 2>&1")
    assert.are.equal("[] []\n", left, out)
  end)

  it("documents every key it returns, present and absent, in and out of check mode", function()
    if not PY then pending("ansible-core is not installed"); return end
    local root = arch_root()
    -- a root whose kernel command line is /etc/kernel/cmdline, for cmdline=true
    local kroot = h.make_root({ os = { ID = "arch" }, exec = { "/usr/bin/mkinitcpio" },
      files = { ["/etc/mkinitcpio.conf"] = "MODULES=()\nHOOKS=(base udev modconf)\n", ["/etc/kernel/cmdline"] = "rw quiet\n" } })
    finally(function() h.rm(root); h.rm(kroot) end)
    local base = { root = root, rebuild = false }
    local runs = {
      { _ansible_check_mode = true, _ansible_diff = true },
      { _ansible_diff = true },
      { state = "absent", _ansible_check_mode = true, _ansible_diff = true },
      { state = "absent", _ansible_diff = true },
      { root = kroot, cmdline = true, timeout = 30, _ansible_check_mode = true, _ansible_diff = true },
      { root = kroot, cmdline = true, timeout = 30, _ansible_diff = true },
    }
    local seen = 0
    for _, extra in ipairs(runs) do
      local args = {}
      for k, v in pairs(base) do args[k] = v end
      for k, v in pairs(extra) do args[k] = v end
      local res = module_run(args)
      assert.are.equal("False", pyeval(res, "r.get('failed', False)"), res)
      -- the common return values (changed, diff, invocation, warnings) are Ansible's own
      local undocumented = pyeval(res, "sorted(k for k in r if k not in doc and k not in "
        .. "('changed', 'diff', 'invocation', 'warnings', 'failed', 'msg'))")
      assert.are.equal("[]", undocumented, res)
      seen = seen + tonumber(pyeval(res, "len(r)"))
    end
    assert.is_true(seen > 20)
  end)

  it("check mode of state=absent is `vfioinit revert --dry-run`: it predicts the revert, and refuses as revert would", function()
    if not PY then pending("ansible-core is not installed"); return end
    local root = arch_root()
    finally(function() h.rm(root) end)
    local code = h.cli("--root " .. q(root) .. " apply --no-rebuild")
    assert.are.equal(0, code)
    local before = h.tree_hash(root)
    local res = module_run({ root = root, state = "absent", rebuild = false, _ansible_check_mode = true, _ansible_diff = true })
    assert.are.equal("True ['revert', '--dry-run'] [('/etc/mkinitcpio.conf', 'restored')]",
      pyeval(res, "r['changed'], r['cmd'][-2:], [(e['path'], e['action']) for e in r['reverted']]"))
    -- the diff is the CLI's own dry-run diff
    local _, cli_diff = h.cli("--root " .. q(root) .. " revert --dry-run")
    assert.are.equal(cli_diff, pyeval(res, "r['diff']['prepared']"))
    assert.are.equal(before, h.tree_hash(root))
    -- a file edited since vfioinit wrote it: revert refuses, so check mode fails the same way
    local conf = root .. "/etc/mkinitcpio.conf"
    h.writefile(conf, h.readfile(conf) .. "# edited by hand\n")
    before = h.tree_hash(root)
    res = module_run({ root = root, state = "absent", rebuild = false, _ansible_check_mode = true })
    local _, _, err = h.cli("--root " .. q(root) .. " revert --dry-run")
    assert.truthy(err:find("/etc/mkinitcpio.conf", 1, true), err)
    assert.are.equal("True True", pyeval(res, "r.get('failed'), '/etc/mkinitcpio.conf' in r['msg']"))
    assert.are.equal(before, h.tree_hash(root))
  end)

  it("names the public home in galaxy.yml and ships no bytecode", function()
    local galaxy = h.readfile(COLLECTION .. "/galaxy.yml")
    assert.truthy(galaxy:find("\nrepository: https://github.com/vfioinit/vfioinit\n", 1, true), galaxy)
    assert.is_nil(galaxy:find("example.invalid", 1, true))
    assert.are.equal("", h.sh("cd " .. q(h.project) .. " && git ls-files | grep -E '(__pycache__|\\.py[co]$)' || true"))
  end)
end)
