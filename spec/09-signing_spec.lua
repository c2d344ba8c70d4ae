-- A rebuilt EFI image keeps its signature (lua/vfioinit/signing.lua through rebuild.run): in
-- a busybox chroot, a stand-in generator puts a UKI in place that sbsign signed with
-- throwaway keys (or left unsigned); sbverify is the oracle of who signed what is left, and
-- of what vfioinit's own `sbsign` (sign={key=,cert=}, run inside the root) produced.
local h = require "helpers"
local u = require "uki_helpers"
local sig = require "sig_helpers"
local rebuild = require "vfioinit.rebuild"

local q, sh = h.q, h.sh
local KVER = "6.1.0-test"
local IMAGE = "/efi/EFI/Linux/test.efi"
local DB = "d719b2cb-3d3a-4596-a3bc-dad00e67656f"
local GLOBAL = "8be4df61-93ca-11d2-aa0d-00e098032b8c"

local root_it = h.chroot_it(it, pending)
local sit = sig.guard(root_it, pending, { "cert-to-efi-sig-list" })

-- The stand-in generator: /usr/bin/mkuki copies /var/uki/<mode>.efi over the image, the
-- mode read from /etc/mkuki.mode (what a generator and its signing hook leave behind).
local gen = {
  name = "mkuki", sign_hint = "the stand-in's signing hook",
  image_path = function() return IMAGE end,
  rebuild_argv = function(_, kvers) return { { argv = { "/usr/bin/mkuki" }, kernels = kvers } } end,
}
local MKUKI = "#!/bin/sh\nread -r mode < /etc/mkuki.mode\ncp /var/uki/$mode.efi " .. IMAGE .. "\n"

local function sbverify(cert, file)
  return select(2, sh(("sbverify --cert %s %s >/dev/null 2>&1"):format(q(cert), q(file)))) == true
end

-- sbsign and the libraries it links, copied into root (what `apt-get install sbsigntool` puts there)
local function install_sbsign(root)
  local files = { "/usr/bin/sbsign" }
  for lib in sh("ldd /usr/bin/sbsign"):gmatch("(/%S+)") do files[#files + 1] = lib end
  for _, f in ipairs(files) do
    local out, ok = sh(("mkdir -p %s && cp -L %s %s"):format(q(root .. f:match("^(.*)/")), q(f), q(root .. f)))
    assert(ok, out)
  end
end

describe("rebuild keeps the signature of an EFI image", function()
  local dir, certs, subject, root, ctx
  lazy_setup(function()
    if sig.missing() then return end
    dir = h.tmpdir()
    certs, subject = {}, {}
    for _, k in ipairs({ "a", "b" }) do
      certs[k] = sig.keypair(dir, k, "/CN=vfioinit rebuild " .. k)
      subject[k] = "/CN=vfioinit rebuild " .. k
    end
    h.writefile(dir .. "/linux", ("\1"):rep(8192))
    -- one UKI per variant, each with its own .cmdline (a rebuild changes the bytes)
    for _, v in ipairs({ "old", "unsigned", "new" }) do
      h.writefile(dir .. "/cmdline-" .. v, v .. " vfio-pci.ids=1af4:1000\n\0")
      u.make(dir .. "/" .. v .. ".efi", { { ".cmdline", dir .. "/cmdline-" .. v }, { ".linux", dir .. "/linux" } })
    end
    sig.sign(dir, "a", dir .. "/old.efi", dir .. "/old-a.efi")
    sig.sign(dir, "a", dir .. "/new.efi", dir .. "/a.efi")
    sig.sign(dir, "b", dir .. "/new.efi", dir .. "/b.efi")
    -- signed by a, then changed: the signed digest no longer matches
    local signed = h.readfile(dir .. "/a.efi")
    local at = #signed // 3
    h.writefile(dir .. "/tampered-a.efi", signed:sub(1, at) .. string.char((signed:byte(at + 1) + 1) % 256) .. signed:sub(at + 2))
  end)
  lazy_teardown(function() if dir then h.rm(dir) end end)

  -- A root whose image is `old` (a variant) and whose generator writes `mode`.
  local function make(old, mode)
    root = h.tmpdir()
    sh(("mkdir -p %s/bin %s/usr/bin %s/var/uki %s/efi/EFI/Linux %s/etc %s/tmp"):format(q(root), q(root), q(root), q(root), q(root), q(root)))
    sh(("cp %s %s/bin/busybox && for a in sh cp cat; do ln -s busybox %s/bin/$a; done"):format(q(h.static_busybox()), q(root), q(root)))
    h.writefile(root .. "/usr/bin/mkuki", MKUKI, 493)
    sh(("cp %s/*.efi %s/var/uki/"):format(q(dir), q(root)))
    sh(("cp %s %s"):format(q(dir .. "/" .. old .. ".efi"), q(root .. IMAGE)))
    h.writefile(root .. "/etc/mkuki.mode", mode .. "\n")
    ctx = { root = root, kernels = { KVER } }
    finally(function() h.rm(root) end)
  end

  local function run(opts)
    opts = opts or {}
    opts.kernels, opts.timeout = { KVER }, 60
    return rebuild.run(ctx, { gen }, opts)
  end

  local function same(variant) return h.readfile(root .. IMAGE) == h.readfile(dir .. "/" .. variant .. ".efi") end

  -- db in root's efivarfs (4 attribute bytes, then the lists efitools writes)
  local function db_of(k)
    local esl = dir .. "/" .. k .. ".esl"
    local out, ok = sh(("cert-to-efi-sig-list %s %s 2>&1"):format(q(certs[k]), q(esl)))
    assert(ok, out)
    h.writefile(root .. "/sys/firmware/efi/efivars/db-" .. DB, "\7\0\0\0" .. h.readfile(esl))
  end

  sit("a signed UKI rebuilt unsigned: the previous image comes back and the error says how to sign", function()
    make("old-a", "unsigned")
    local r = run()
    assert.is_false(r.ok)
    local e = r.rebuilt[1]
    assert.is_false(e.ok)
    assert.truthy(same("old-a"), "the previous image is not back")
    assert.is_true(sbverify(certs.a, root .. IMAGE))
    assert.is_nil(io.open(root .. IMAGE .. ".vfioinit-prev"))
    assert.truthy(e.error:find(IMAGE .. ": the rebuilt image is unsigned, but the previous one was signed by " .. subject.a, 1, true), e.error)
    assert.truthy(e.error:find("the stand-in's signing hook", 1, true), e.error)
    assert.truthy(e.error:find("--sign-key KEY --sign-cert CERT", 1, true), e.error)
    assert.truthy(e.error:find("(previous image " .. IMAGE .. " restored)", 1, true), e.error)
  end)

  sit("signed by the certificate that signed the previous image: it stays", function()
    make("old-a", "a")
    local r = run()
    assert.is_true(r.ok, r.error)
    assert.truthy(same("a"))
    assert.is_true(sbverify(certs.a, root .. IMAGE))
  end)

  sit("signed by another certificate: refused unless db holds it; a digest that does not match is refused", function()
    make("old-a", "b")
    local r = run()
    assert.is_false(r.ok)
    assert.truthy(same("old-a"))
    assert.truthy(r.error:find(("signed by %s, which neither signed the previous one (%s) nor is in db")
      :format(subject.b, subject.a), 1, true), r.error)
    -- the same rebuild with b enrolled in the firmware's db
    db_of("b")
    r = run()
    assert.is_true(r.ok, r.error)
    assert.truthy(same("b"))
    assert.is_false(sbverify(certs.a, root .. IMAGE))
    h.writefile(root .. "/etc/mkuki.mode", "tampered-a\n")
    h.sh("cp " .. q(dir .. "/old-a.efi") .. " " .. q(root .. IMAGE))
    r = run()
    assert.is_false(r.ok)
    assert.truthy(same("old-a"))
    assert.is_false(sbverify(certs.a, dir .. "/tampered-a.efi"))
    assert.truthy(r.error:find(subject.a .. " (its signed digest does not match the file)", 1, true), r.error)
  end)

  sit("sign={key=,cert=}: sbsign inside the root signs what came out unsigned", function()
    make("old-a", "unsigned")
    install_sbsign(root)
    sh(("mkdir -p %s/etc/keys && cp %s %s %s/etc/keys/"):format(q(root), q(dir .. "/a.key"), q(certs.a), q(root)))
    local r = run({ sign = { key = "/etc/keys/a.key", cert = "/etc/keys/a.pem" } })
    assert.is_true(r.ok, r.error)
    assert.is_true(r.rebuilt[1].signed)
    assert.is_true(sbverify(certs.a, root .. IMAGE))
    assert.is_false(sbverify(certs.b, root .. IMAGE))
    -- the new image (its .cmdline), not the previous one
    assert.truthy(h.readfile(root .. IMAGE):find("unsigned vfio-pci.ids", 1, true))
    -- a key that is not there: nothing runs, the image is as it was
    make("old-a", "unsigned")
    r = run({ sign = { key = "/etc/keys/none.key", cert = "/etc/keys/a.pem" } })
    assert.is_false(r.ok)
    assert.truthy(same("old-a"))
    assert.truthy(r.error:find("sign key /etc/keys/none.key: ", 1, true), r.error)
  end)

  sit("an unsigned image stays unsigned; under Secure Boot the report warns", function()
    make("old", "unsigned")
    local r = run()
    assert.is_true(r.ok, r.error)
    assert.is_nil(r.rebuilt[1].warning)
    h.writefile(root .. "/sys/firmware/efi/efivars/SecureBoot-" .. GLOBAL, "\6\0\0\0\1")
    r = run()
    assert.is_true(r.ok, r.error)
    assert.truthy(same("unsigned"))
    assert.are.equal(IMAGE .. " is unsigned and Secure Boot is on: the firmware will not start it "
      .. "(vfioinit signs only with --sign-key/--sign-cert)", r.rebuilt[1].warning)
  end)
end)

describe("--sign-key/--sign-cert and sign={key=,cert=}", function()
  it("come together, with apply and rebuild only; Lua's sign is two strings", function()
    for _, cmd in ipairs({ "apply", "rebuild" }) do
      local code, out, err = h.cli("--root / " .. cmd .. " --sign-key /k")
      assert.are.equal(1, code)
      assert.are.equal("", out)
      assert.truthy(err:find("--sign-key applies to " .. cmd .. " only with --sign-cert", 1, true), err)
    end
    local code, _, err = h.cli("--root / plan --sign-key /k --sign-cert /c")
    assert.are.equal(1, code)
    assert.truthy(err:find("--sign-key does not apply to plan", 1, true), err)
    local v = require "vfioinit"
    for _, bad in ipairs({ { key = "/k" }, { key = "/k", cert = 1 }, { key = "/k", cert = "/c", engine = "x" }, "/k" }) do
      local ok, msg = pcall(v.update_initramfs, { root = "/nonexistent", sign = bad })
      assert.is_false(ok)
      assert.truthy(tostring(msg):find("field 'sign': {key=PATH, cert=PATH} (strings, nothing else) expected", 1, true), msg)
      ok, msg = pcall(v.rebuild, { root = "/nonexistent", sign = bad })
      assert.is_false(ok)
      assert.truthy(tostring(msg):find("field 'sign'", 1, true), msg)
    end
  end)

  it("a key or certificate that cannot be used fails apply before anything is written", function()
    local root = h.make_root({ os = { ID = "arch" }, files = { ["/etc/booster.yaml"] = "", ["/etc/keys/db.pem"] = "not a certificate\n",
      ["/etc/keys/db.key"] = "key\n" } })
    finally(function() h.rm(root) end)
    h.install_kernel(root, "cloud")
    sig.keypair(root .. "/etc/keys", "real", "/CN=x")
    local before = h.tree_hash(root)
    local cases = {
      { "--sign-key /etc/keys/none.key --sign-cert /etc/keys/db.pem", "--sign-key /etc/keys/none.key: No such file or directory" },
      { "--sign-key /etc/keys/db.key --sign-cert /etc/keys/db.pem", "--sign-cert /etc/keys/db.pem: not an X.509 certificate" },
      { "--sign-key etc/keys/db.key --sign-cert /etc/keys/db.pem", "--sign-key: an absolute path inside the root expected, got etc/keys/db.key" },
      { "--no-rebuild --sign-key /etc/keys/db.key --sign-cert /etc/keys/db.pem", "--sign-key: --no-rebuild rebuilds nothing to sign" },
    }
    for _, c in ipairs(cases) do
      for _, cmd in ipairs({ "apply", "apply --dry-run" }) do
        local code, out, err = h.cli("--root " .. q(root) .. " --ids 1af4:1000 " .. cmd .. " " .. c[1])
        assert.are.equal(1, code, err)
        assert.are.equal("", out)
        assert.are.equal("vfioinit: " .. c[2] .. "\n", err)
      end
    end
    -- a certificate, but no sbsign in the root
    local code, _, err = h.cli("--root " .. q(root) .. " --ids 1af4:1000 apply --sign-key /etc/keys/real.key --sign-cert /etc/keys/real.pem")
    assert.are.equal(1, code)
    assert.are.equal(("vfioinit: sbsign: command not found in %s (sign key/cert given: install sbsigntool there)\n"):format(root), err)
    -- the Lua API checks the same before its plan is applied
    local report, lerr = require("vfioinit").update_initramfs({ root = root, ids = "1af4:1000",
      sign = { key = "/etc/keys/none.key", cert = "/etc/keys/real.pem" } })
    assert.is_nil(report)
    assert.are.equal("sign key /etc/keys/none.key: No such file or directory", lerr)
    assert(before == h.tree_hash(root), "a file under the root changed")
  end)
end)
