-- The vfioinit command: exit codes, messages, --json (parsed by python3's json, not ours).
local h = require "helpers"


local run, pyjson = h.cli, h.pyjson

local function arch_root()
  return h.make_root({ os = { ID = "arch" }, corpus = { ["/etc/mkinitcpio.conf"] = "mkinitcpio/mkinitcpio.conf" },
    exec = { "/usr/bin/mkinitcpio", "/usr/lib/kernel/install.d/50-mkinitcpio.install" } })
end

describe("vfioinit CLI", function()
  local r
  before_each(function() r = arch_root() end)
  after_each(function() h.rm(r) end)

  it("plan exits 2 with a unified diff while changes are pending, 0 once applied", function()
    local code, out = run("--root " .. h.q(r) .. " plan")
    assert.are.equal(2, code)
    assert.truthy(out:match("^%-%-%- etc/mkinitcpio%.conf\n%+%+%+ etc/mkinitcpio%.conf\n@@"), out)
    code = run("--root " .. h.q(r) .. " apply --no-rebuild")
    assert.are.equal(0, code)
    code, out = run("--root " .. h.q(r) .. " plan")
    assert.are.equal(0, code)
    assert.are.equal("", out)
  end)

  it("prints one JSON object for each command", function()
    local code, out = run("--json --root " .. h.q(r) .. " plan")
    assert.are.equal(2, code)
    assert.are.equal("True /etc/mkinitcpio.conf", pyjson(out, "d['pending'], d['changes'][0]['path']"))
    code, out = run("--json --root " .. h.q(r) .. " status")
    assert.are.equal(0, code)
    assert.are.equal("mkinitcpio False", pyjson(out, "d['active'], d['configured']"))
    code, out = run("--json --root " .. h.q(r) .. " apply --no-rebuild")
    assert.are.equal(0, code)
    assert.are.equal("True 1", pyjson(out, "d['ok'], len(d['changes'])"))
    code, out = run("--json --root " .. h.q(r) .. " revert")
    assert.are.equal(0, code)
    assert.are.equal("/etc/mkinitcpio.conf restored", pyjson(out, "d['reverted'][0]['path'], d['reverted'][0]['action']"))
    code, out = run("--json --root " .. h.q(r) .. " verify")
    assert.are.equal(0, code)
    assert.are.equal("True", pyjson(out, "d['ok']"))
  end)

  it("refuses invalid module names and malformed ids with exit 1, writing nothing", function()
    local before = h.tree_hash(r)
    local code, _, err = run("--root " .. h.q(r) .. " --module 'x y' apply --no-rebuild")
    assert.are.equal(1, code)
    assert.truthy(err:match("^vfioinit: invalid module name"), err)
    code, _, err = run("--root " .. h.q(r) .. " --ids 10de:1b80,zz apply --no-rebuild")
    assert.are.equal(1, code)
    assert.truthy(err:match("^vfioinit: invalid device id"), err)
    assert.are.equal(before, h.tree_hash(r))
  end)

  it("names the file and line of a broken config: vfioinit: PATH:LINE: reason", function()
    h.writefile(r .. "/etc/mkinitcpio.conf", "# header\nBINARIES=()\nMODULES=(ext4\n  nvme\n")
    local before = h.tree_hash(r)
    local code, _, err = run("--root " .. h.q(r) .. " apply --no-rebuild")
    assert.are.equal(1, code)
    assert.truthy(err:match("^vfioinit: /etc/mkinitcpio%.conf:%d+: "), err)
    assert.are.equal(before, h.tree_hash(r))
  end)

  it("rejects unknown commands and options", function()
    assert.are.equal(1, (run("frobnicate")))
    assert.are.equal(1, (run("--frob plan")))
    assert.are.equal(0, (run("--help")))
  end)

  it("status names the generators and a kernel's module states", function()
    h.install_kernel(r, "cloud")
    local code, out = run("--root " .. h.q(r) .. " status")
    assert.are.equal(0, code)
    assert.truthy(out:find("mkinitcpio%s+active"), out)
    assert.truthy(out:find("vfio_pci=module", 1, true), out)
    assert.truthy(out:find("vfio_virqfd=module", 1, true), out)
  end)
end)
