-- The CLI says what happened: --json is always one strict JSON object, bad input gets one
-- line naming its cause (never a traceback), repeats act once, and nothing is reported as
-- done that was not. JSON is checked by python3's json module (strict), not by our encoder.
local h = require "helpers"
local vfioinit = require "vfioinit"
local json = require "vfioinit.json"

local BIN = h.BIN

local run, pyjson = h.cli, h.pyjson

local function one_line(err)
  return err:match("^vfioinit: [^\n]*\n$") ~= nil and not err:find("traceback", 1, true)
end

local function arch_root(extra)
  local spec = { os = { ID = "arch" }, corpus = { ["/etc/mkinitcpio.conf"] = "mkinitcpio/mkinitcpio.conf" },
    exec = { "/usr/bin/mkinitcpio", "/usr/lib/kernel/install.d/50-mkinitcpio.install" }, files = {} }
  for k, v in pairs(extra or {}) do spec.files[k] = v; spec.corpus[k] = nil end
  return h.make_root(spec)
end

local COMMANDS = { "status", "plan", "apply", "rebuild", "verify", "revert" }

describe("--json", function()
  it("prints {ok=false, usage=true, error=...} for every usage error, the message still on stderr", function()
    for _, args in ipairs({ "--json", "--json frobnicate", "--json --bogus plan", "--bogus --json plan",
                            "--json plan extra", "--json --root", "--json=1 plan" }) do
      local code, out, err = run(args)
      assert.are.equal(1, code, args)
      local msg = err:match("^vfioinit: ([^\n]+)\n")
      assert.truthy(msg, args .. ": " .. err)
      assert.are.equal("False True", pyjson(out, "d['ok'], d['usage']"), args)
      assert.are.equal(msg, pyjson(out, "d['error']"), args)
    end
    -- without --json a usage error prints nothing on stdout
    local code, out = run("--bogus plan")
    assert.are.equal(1, code)
    assert.are.equal("", out)
    code, out = run("--json --help")
    assert.are.equal(0, code)
    assert.are.equal("True", pyjson(out, "d['ok'] and d['usage'].startswith('usage: vfioinit')"))
  end)

  it("prints exactly one JSON object for every command on a missing root and on a broken config", function()
    local bad = arch_root({ ["/etc/mkinitcpio.conf"] = "# header\nBINARIES=()\nMODULES=(ext4\n  nvme\n" })
    finally(function() h.rm(bad) end)
    local before = h.tree_hash(bad)
    for _, root in ipairs({ "/nonexistent/vfioinit-root", bad }) do
      for _, cmd in ipairs(COMMANDS) do
        local code, out = run("--json --root " .. h.q(root) .. " " .. cmd)
        -- json.loads raises on a second object ("Extra data") or an empty stdout
        local ok = pyjson(out, "d['ok']")
        -- on the broken root, status/verify/rebuild/revert have nothing that needs the config
        local must_fail = root ~= bad or cmd == "plan" or cmd == "apply"
        assert.truthy(ok == "False" or (ok == "True" and not must_fail), cmd .. " " .. root .. ": " .. out)
        assert.are.equal(ok == "False" and 1 or 0, code, cmd .. " " .. root)
      end
    end
    assert.are.equal(before, h.tree_hash(bad))
  end)

  it("escapes every byte outside well-formed UTF-8 as U+FFFD, one per byte (python's surrogateescape as oracle)", function()
    local raw = table.concat({ "plain é € 😀 ", "\255", " overlong \192\128", " surrogate \237\160\128",
      " too big \244\144\128\128", " bad start \128\191", " cut \226\130x", " ctl \1\127 ", "end cut \240\159\152" })
    local dir = h.tmpdir()
    finally(function() h.rm(dir) end)
    h.writefile(dir .. "/raw", raw)
    h.writefile(dir .. "/json", json.encode({ s = raw, [raw] = 1 }))
    local out, ok = h.sh("python3 -c " .. h.q([[
import json, re, sys
raw = open(sys.argv[1], 'rb').read()
d = json.loads(open(sys.argv[2], 'rb').read().decode('utf-8'))
want = re.sub('[\udc80-\udcff]', '\ufffd', raw.decode('utf-8', 'surrogateescape'))
print(d['s'] == want, list(d.keys()) == ['s', want] or sorted(d.keys()) == sorted(['s', want]), want.count('\ufffd'))
]]) .. " " .. h.q(dir .. "/raw") .. " " .. h.q(dir .. "/json") .. " 2>&1")
    assert(ok, out)
    -- 1 + 2 + 3 + 4 + 2 + 2 + 3 invalid bytes
    assert.are.equal("True True 17", (out:gsub("\n$", "")))
  end)

  it("stays valid JSON for a config and an os-release holding invalid UTF-8", function()
    local r = arch_root()
    finally(function() h.rm(r) end)
    local conf = h.readfile(r .. "/etc/mkinitcpio.conf")
    -- a comment right above MODULES=() ends up in the diff's context
    conf = conf:gsub("\nMODULES=%(%)", "\n# caf\233 \255\254\nMODULES=()", 1)
    h.writefile(r .. "/etc/mkinitcpio.conf", conf)
    h.writefile(r .. "/etc/os-release", "ID=arch\nNAME=\"Arch \255\"\nVERSION_ID=\"1\233\"\n")
    local code, out = run("--json --root " .. h.q(r) .. " plan")
    assert.are.equal(2, code)
    assert.are.equal("True", pyjson(out, "'\\n # caf\\ufffd \\ufffd\\ufffd\\n-MODULES=()\\n' in d['diff']"))
    code, out = run("--json --root " .. h.q(r) .. " status")
    assert.are.equal(0, code)
    assert.are.equal("arch 1\\ufffd", pyjson(out, "d['distro']['id'], ascii(d['distro']['version_id'])[1:-1]"))
    -- the human output keeps the bytes as they are
    code, out = run("--root " .. h.q(r) .. " plan")
    assert.are.equal(2, code)
    assert.truthy(out:find("\n # caf\233 \255\254\n-MODULES=()\n", 1, true), out)
  end)
end)

describe("one line naming the real cause", function()
  it("refuses a missing, empty or non-directory --root before taking any lock", function()
    local dir = h.tmpdir()
    finally(function() h.rm(dir) end)
    h.writefile(dir .. "/file", "x")
    local cases = {
      { dir .. "/missing", "--root " .. dir .. "/missing: no such directory" },
      { "", "--root '': empty path" },
      { dir .. "/file", "--root " .. dir .. "/file: not a directory" },
    }
    for _, c in ipairs(cases) do
      for _, cmd in ipairs(COMMANDS) do
        local code, out, err = run("--root " .. h.q(c[1]) .. " " .. cmd)
        assert.are.equal(1, code)
        assert.are.equal("vfioinit: " .. c[2] .. "\n", err, cmd)
        assert.are.equal("", out)
        code, out = run("--json --root " .. h.q(c[1]) .. " " .. cmd)
        assert.are.equal(1, code)
        assert.are.equal("False " .. c[2], pyjson(out, "d['ok'], d['error']"))
      end
    end
    assert.are.equal("x", h.readfile(dir .. "/file"))
  end)

  it("the Lua API returns nil, message for such a root ('' is not /)", function()
    local dir = h.tmpdir()
    finally(function() h.rm(dir) end)
    h.writefile(dir .. "/file", "x")
    for _, c in ipairs({ { dir .. "/missing", "no such directory" }, { "", "empty path" }, { dir .. "/file", "not a directory" } }) do
      local label = "root " .. (c[1] == "" and "''" or c[1]) .. ": " .. c[2]
      for _, f in ipairs({ "detect", "plan", "verify", "rebuild", "revert" }) do
        local res, err = vfioinit[f]({ root = c[1] })
        assert.is_nil(res, f)
        assert.are.equal(label, err, f)
      end
      local none, err, rep = vfioinit.update_initramfs({ root = c[1], rebuild = false })
      assert.is_nil(none)
      assert.are.equal(label, err)
      assert.is_false(rep.ok)
      assert.are.equal(label, rep.error)
    end
  end)

  it("refuses a negative or non-numeric VFIOINIT_LOCK_TIMEOUT, naming it, writing nothing", function()
    local r = arch_root()
    finally(function() h.rm(r) end)
    local before = h.tree_hash(r)
    -- one finite range for every number of seconds: 1e400 is read as inf, and refused like it
    for _, v in ipairs({ "-5", "abc", "5s", "inf", "1e400", "1e10" }) do
      for _, cmd in ipairs({ "apply --no-rebuild", "rebuild", "revert" }) do
        local code, _, err = run("--root " .. h.q(r) .. " " .. cmd, "VFIOINIT_LOCK_TIMEOUT=" .. v)
        assert.are.equal(1, code, v .. " " .. cmd)
        assert.is_true(one_line(err), err)
        assert.truthy(err:find("VFIOINIT_LOCK_TIMEOUT=" .. v .. ": ", 1, true), err)
      end
    end
    assert.are.equal(before, h.tree_hash(r))
    -- a plain number is fine
    local code = run("--root " .. h.q(r) .. " apply --no-rebuild", "VFIOINIT_LOCK_TIMEOUT=0.5")
    assert.are.equal(0, code)
  end)

  it("names the preset file and line of a relative or root-escaping path", function()
    local cases = {
      { "PRESETS=('default')\nALL_config=\"../../x\"\ndefault_image=\"/boot/initramfs-linux.img\"\n", 2, "ALL_config" },
      { "PRESETS=('default')\n\ndefault_image=\"boot/initramfs-linux.img\"\n", 3, "default_image" },
      { "PRESETS=('default')\ndefault_config=\"/etc/../../../x.conf\"\n", 2, "default_config" },
    }
    for _, c in ipairs(cases) do
      local r = arch_root({ ["/etc/mkinitcpio.d/linux.preset"] = c[1] })
      finally(function() h.rm(r) end)
      local before = h.tree_hash(r)
      for _, cmd in ipairs({ "plan", "apply --no-rebuild" }) do
        local code, _, err = run("--root " .. h.q(r) .. " " .. cmd)
        assert.are.equal(1, code, cmd)
        assert.is_true(one_line(err), err)
        assert.truthy(err:find("^vfioinit: /etc/mkinitcpio%.d/linux%.preset:" .. c[2] .. ": " .. c[3]), err)
      end
      assert.are.equal(before, h.tree_hash(r))
    end
  end)

  it("ends a bug in one line, never a traceback (a manifest naming a relative path)", function()
    local r = arch_root()
    finally(function() h.rm(r) end)
    h.writefile(r .. "/var/lib/vfioinit/manifest", "created\tmkinitcpio\tetc/x.conf\n")
    local code, out, err = run("--root " .. h.q(r) .. " revert")
    assert.are.equal(1, code)
    assert.is_true(one_line(err), err)
    code, out = run("--json --root " .. h.q(r) .. " revert")
    assert.are.equal(1, code)
    assert.are.equal("False", pyjson(out, "d['ok']"))
  end)
end)

describe("with a kernel installed", function()
  local r, kver
  before_each(function()
    r = arch_root()
    kver = h.install_kernel(r, "cloud")
  end)
  after_each(function() h.rm(r) end)

  it("names a script's missing interpreter instead of 'command not found'", function()
    h.writefile(r .. "/usr/bin/mkinitcpio", "#!/bin/bash\nexit 0\n", 493)
    local code, _, err = run("--root " .. h.q(r) .. " --kernel " .. kver .. " rebuild")
    assert.are.equal(1, code)
    assert.truthy(err:find("vfioinit: " .. r .. "/usr/bin/mkinitcpio: interpreter /bin/bash not found in " .. r, 1, true), err)
    assert.falsy(err:find("command not found", 1, true), err)
  end)

  it("verify and rebuild name a preset's relative image path with its line", function()
    h.writefile(r .. "/etc/mkinitcpio.d/linux.preset", "PRESETS=('default')\nALL_kver=" .. kver
      .. "\ndefault_image=\"boot/initramfs-linux.img\"\n")
    local before = h.tree_hash(r)
    for _, cmd in ipairs({ "verify", "rebuild", "apply" }) do
      local code, _, err = run("--root " .. h.q(r) .. " " .. cmd)
      assert.are.equal(1, code, cmd)
      assert.is_true(one_line(err), err)
      assert.truthy(err:find("^vfioinit: /etc/mkinitcpio%.d/linux%.preset:3: default_image must be an absolute path"), err)
    end
    assert.are.equal(before, h.tree_hash(r))
  end)

  it("refuses an unknown --kernel for rebuild, verify, status, plan and apply before running anything", function()
    local before = h.tree_hash(r)
    for _, cmd in ipairs({ "rebuild", "verify", "status", "plan", "apply" }) do
      local code, out, err = run("--root " .. h.q(r) .. " --kernel 9.9.9 " .. cmd)
      assert.are.equal(1, code, cmd)
      assert.are.equal("vfioinit: /lib/modules/9.9.9: no such kernel in " .. r .. "\n", err, cmd)
      assert.are.equal("", out, cmd)
    end
    assert.are.equal(before, h.tree_hash(r))
  end)

  it("refuses a --module no selected kernel has, writing nothing; a built-in one is accepted", function()
    local before = h.tree_hash(r)
    for _, cmd in ipairs({ "plan", "apply --no-rebuild" }) do
      local code, _, err = run("--root " .. h.q(r) .. " --module nonexistent " .. cmd)
      assert.are.equal(1, code, cmd)
      assert.are.equal("vfioinit: module nonexistent: no such module in kernel " .. kver .. "\n", err)
    end
    assert.are.equal(before, h.tree_hash(r))
    -- binfmt_script is built into Debian's kernels (modules.builtin), virtio-net is a module
    local builtin = h.sh("grep -c '/binfmt_script.ko$' " .. h.q(r .. "/lib/modules/" .. kver .. "/modules.builtin"))
    assert.are.equal("1\n", builtin)
    local code, out = run("--json --root " .. h.q(r) .. " --module binfmt_script --module virtio-net plan")
    assert.are.equal(2, code)
    assert.are.equal("['binfmt_script', 'virtio_net']", pyjson(out, "[m for m in d['modules'] if not m.startswith('vfio')]"))
  end)

  it("with no kernel installed keeps a --module it cannot check", function()
    local bare = arch_root()
    finally(function() h.rm(bare) end)
    local code = run("--root " .. h.q(bare) .. " --module nonexistent apply --no-rebuild")
    assert.are.equal(0, code)
    assert.are.same({ "vfio", "vfio_iommu_type1", "vfio_pci", "nonexistent" }, h.bash_array({ bare .. "/etc/mkinitcpio.conf" }, "MODULES"))
  end)

  it("apply --no-rebuild calls an image that lacks the modules stale and says how to fix it", function()
    -- an image built before vfioinit: a valid cpio without the VFIO modules
    local src = h.tmpdir()
    finally(function() h.rm(src) end)
    h.writefile(src .. "/etc/hostname", "x\n")
    local image = "/boot/initramfs-" .. kver .. ".img"
    h.sh("mkdir -p " .. h.q(r .. "/boot"))
    local _, ok = h.sh(("cd %s && find . | cpio --quiet -o -H newc > %s"):format(h.q(src), h.q(r .. image)))
    assert.truthy(ok)
    local code, out, err = run("--root " .. h.q(r) .. " apply --no-rebuild")
    assert.are.equal(0, code)
    -- the advice is a note (stderr); stdout holds only the diff of what was written
    assert.truthy(err:find(("\nvfioinit: image %s for %s is stale (lacks vfio, vfio_iommu_type1, vfio_pci, vfio_virqfd): "
      .. "run 'vfioinit rebuild' to bring it up to date\n"):format(image, kver), 1, true), err)
    assert.matches("^%-%-%- etc/mkinitcpio%.conf\n", out)
    assert.falsy(out:find("stale", 1, true), out)
    assert.falsy(out:find("verified", 1, true), out)
    code, out = run("--json --root " .. h.q(r) .. " apply --no-rebuild")
    assert.are.equal(0, code)
    assert.are.equal(("True True ['%s']"):format(image),
      pyjson(out, "d['ok'], d['verified'][0]['stale'], d['images_stale']"))
  end)

  it("a no-op apply prints nothing on stdout: what it verified is a note on stderr", function()
    -- an image as mkinitcpio builds it: the kernel's VFIO modules and its buildconfig
    -- ("config") listing them to load early
    local code = run("--root " .. h.q(r) .. " apply --no-rebuild")
    assert.are.equal(0, code)
    local src = h.tmpdir()
    finally(function() h.rm(src) end)
    local vdir = "/lib/modules/" .. kver .. "/kernel/drivers"
    h.sh("mkdir -p " .. h.q(src .. vdir) .. " " .. h.q(r .. "/boot") .. " && cp -r " .. h.q(r .. vdir .. "/vfio") .. " " .. h.q(src .. vdir))
    h.writefile(src .. "/config", 'MODULES="vfio vfio_iommu_type1 vfio_pci vfio_virqfd"\n')
    local image = "/boot/initramfs-" .. kver .. ".img"
    assert.truthy(select(2, h.sh(("cd %s && find . | cpio --quiet -o -H newc > %s"):format(h.q(src), h.q(r .. image)))))
    local before = h.tree_hash(r)
    for _, cmd in ipairs({ "apply --no-rebuild", "apply" }) do
      local c, out, err = run("--root " .. h.q(r) .. " " .. cmd)
      assert.are.equal(0, c, cmd .. ": " .. err)
      assert.are.equal("", out, cmd)
      assert.truthy(err:find(("vfioinit: verified %s (%s): VFIO modules present\n"):format(image, kver), 1, true), err)
    end
    assert.are.equal(before, (h.tree_hash(r):gsub("[^\n]*var/lib/vfioinit/verified[^\n]*\n", "")))
  end)

  it("acts once on a repeated --generator, --kernel or --module: the plan diff applies with patch", function()
    local code, diff = run("--root " .. h.q(r) .. " --generator mkinitcpio --generator mkinitcpio"
      .. " --kernel " .. kver .. " --kernel " .. kver .. " --module vfio-pci --module vfio_pci --module virtio_net --module virtio-net plan")
    assert.are.equal(2, code)
    local f = os.tmpname()
    h.writefile(f, diff)
    -- docs/REFERENCE.md: patch -p0 -d ROOT < plan.diff
    local out, ok = h.sh("patch -p0 -d " .. h.q(r) .. " < " .. h.q(f) .. " 2>&1")
    os.remove(f)
    assert.truthy(ok, out)
    assert.are.same({ "vfio", "vfio_iommu_type1", "vfio_pci", "vfio_virqfd", "virtio_net" },
      h.bash_array({ r .. "/etc/mkinitcpio.conf" }, "MODULES"))
    -- nothing left to plan, and verify looks at the one image once
    code = run("--root " .. h.q(r) .. " --module virtio_net plan")
    assert.are.equal(0, code)
    code, out = run("--json --root " .. h.q(r) .. " --kernel " .. kver .. " --kernel " .. kver
      .. " --generator mkinitcpio --generator mkinitcpio verify")
    assert.are.equal("1", pyjson(out, "len(d['images'])"))
    -- the Lua API too
    local plan = assert(vfioinit.plan({ root = r, generators = { "mkinitcpio", "mkinitcpio" }, kernels = { kver, kver } }))
    assert.are.same({ kver }, plan.kernels)
    assert.are.equal(1, #plan.generators)
  end)
end)

-- apply --dry-run is plan: the same diff and exit status, nothing written, nothing
-- created (not even /var/lib/vfioinit), on every path: config edits, --cmdline, --device.
describe("apply --dry-run", function()
  it("prints what plan prints, exits as plan does and writes nothing", function()
    local r = arch_root({ ["/etc/kernel/cmdline"] = "root=/dev/vda1 rw quiet\n" })
    finally(function() h.rm(r) end)
    local R = "--root " .. h.q(r) .. " "
    local before = h.tree_hash(r)
    for _, opts in ipairs({ "", "--ids 1af4:1000 --cmdline ", "--device 0000:01:00.0 ", "--softdeps --module vfio_pci " }) do
      local pcode, pout = run(R .. opts .. "plan")
      assert.are.equal(2, pcode, opts)
      local code, out, err = run(R .. opts .. "--dry-run apply")
      assert.are.equal(2, code, opts .. ": " .. err)
      assert.are.equal(pout, out, opts)
      assert.falsy(err:find("applying", 1, true), err)
      code, out = run(R .. opts .. "apply --dry-run --json")
      assert.are.equal(2, code, opts)
      assert.are.equal("True", pyjson(out, "d['pending'] and d['ok']"))
      assert.are.equal(before, h.tree_hash(r), opts)
    end
    assert.is_nil(h.readfile(r .. "/var/lib/vfioinit/manifest"))
    assert.are.equal("", (h.sh("ls -A " .. h.q(r .. "/var") .. " 2>/dev/null")))
    -- configured: nothing pending, exit 0 and an empty stdout, as plan
    assert.are.equal(0, (run(R .. "apply --no-rebuild")))
    local code, out, err = run(R .. "apply --dry-run")
    assert.are.equal(0, code, err)
    assert.are.equal("", out)
    assert.are.equal("vfioinit: nothing to change\n", err)
    -- and revert --dry-run writes nothing either
    before = h.tree_hash(r)
    code, out = run(R .. "revert --dry-run")
    assert.are.equal(0, code)
    assert.matches("^%-%-%- etc/mkinitcpio%.conf\n", out)
    assert.are.equal(before, h.tree_hash(r))
  end)
end)
