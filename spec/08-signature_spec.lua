-- vfioinit.signature: what the firmware trusts (efivarfs files in a temp root, the db made
-- by efitools' cert-to-efi-sig-list and hash-to-efi-sig-list), the keys a root's signing
-- setup names (sbctl, dracut, ukify), and `status` saying who signed what boots, with
-- sbverify as the oracle of which certificate verifies. Never reads this machine's /sys.
local h = require "helpers"
local u = require "uki_helpers"
local signature = require "vfioinit.signature"
local sig = require "sig_helpers"

local q, sh = h.q, h.sh
local KVER = "6.1.0-57-cloud-amd64"
local GLOBAL = "8be4df61-93ca-11d2-aa0d-00e098032b8c"
local DB = "d719b2cb-3d3a-4596-a3bc-dad00e67656f"

local sit = sig.guard(it, pending, { "cert-to-efi-sig-list", "hash-to-efi-sig-list" })

-- openssl's SHA-256 fingerprint of a PEM file, as core.sig gives it (lowercase hex)
local function fingerprint(pem)
  return sh(("openssl x509 -in %s -noout -fingerprint -sha256"):format(q(pem))):match("=([%x:]+)"):gsub(":", ""):lower()
end

local function subject(pem)
  return (sh(("openssl x509 -in %s -noout -subject -nameopt compat"):format(q(pem))):match("subject=([^\n]+)"))
end

describe("vfioinit.signature", function()
  local dir, certs
  lazy_setup(function()
    if sig.missing() then return end
    dir = h.tmpdir()
    certs = {}
    for _, k in ipairs({ "a", "b" }) do certs[k] = sig.keypair(dir, k, "/CN=vfioinit db " .. k) end
  end)
  lazy_teardown(function() if dir then h.rm(dir) end end)

  -- efivarfs files: 4 attribute bytes (NV|BS|RT = 7, little-endian), then the data
  local function efivar(root, name, guid, data)
    h.writefile(root .. "/sys/firmware/efi/efivars/" .. name .. "-" .. guid, "\7\0\0\0" .. data)
  end

  sit("reads SecureBoot, SetupMode and db's X.509 certificates from efivarfs in root", function()
    local root = h.tmpdir()
    finally(function() h.rm(root) end)
    -- not booted with UEFI: no efivars directory
    assert.are.same({ efi = false, db = {}, db_other = 0, errors = {} }, signature.firmware(root))
    -- db as efitools writes it: one list per certificate, plus a SHA-256 hash list
    local esl = {}
    for _, k in ipairs({ "a", "b" }) do
      local out, ok = sh(("cert-to-efi-sig-list -g 11111111-2222-3333-4444-555555555555 %s %s 2>&1")
        :format(q(certs[k]), q(dir .. "/" .. k .. ".esl")))
      assert(ok, out)
      esl[#esl + 1] = h.readfile(dir .. "/" .. k .. ".esl")
    end
    local out, ok = sh(("hash-to-efi-sig-list %s %s 2>&1"):format(q(u.STUB), q(dir .. "/hash.esl")))
    assert(ok, out)
    efivar(root, "SecureBoot", GLOBAL, "\1")
    efivar(root, "SetupMode", GLOBAL, "\0")
    efivar(root, "db", DB, esl[1] .. h.readfile(dir .. "/hash.esl") .. esl[2])
    local fw = signature.firmware(root)
    assert.is_true(fw.efi)
    assert.is_true(fw.secure_boot)
    assert.is_false(fw.setup_mode)
    assert.are.same({}, fw.errors)
    assert.are.equal(1, fw.db_other)
    assert.are.equal(2, #fw.db)
    assert.are.same({ fingerprint(certs.a), fingerprint(certs.b) }, { fw.db[1].fingerprint, fw.db[2].fingerprint })
    assert.are.same({ subject(certs.a), subject(certs.b) }, { fw.db[1].subject, fw.db[2].subject })
    -- Secure Boot off, in setup mode; a db cut short is an error naming the variable, the rest still read
    efivar(root, "SecureBoot", GLOBAL, "\0")
    efivar(root, "SetupMode", GLOBAL, "\1")
    efivar(root, "db", DB, esl[1]:sub(1, 40))
    fw = signature.firmware(root)
    assert.is_false(fw.secure_boot)
    assert.is_true(fw.setup_mode)
    assert.are.same({}, fw.db)
    assert.are.same({ "/sys/firmware/efi/efivars/db-" .. DB .. ": byte 0: a signature list whose sizes do not add up" },
      fw.errors)
    -- a variable that is not one byte, and one missing: an error, and not known
    efivar(root, "SecureBoot", GLOBAL, "\1\1")
    os.remove(root .. "/sys/firmware/efi/efivars/SetupMode-" .. GLOBAL)
    fw = signature.firmware(root)
    assert.is_nil(fw.secure_boot)
    assert.is_nil(fw.setup_mode)
    assert.are.equal("/sys/firmware/efi/efivars/SecureBoot-" .. GLOBAL .. ": not a one-byte 0 or 1", fw.errors[1])
  end)

  sit("finds the certificates sbctl, dracut and ukify sign with", function()
    local root = h.tmpdir()
    finally(function() h.rm(root) end)
    assert.are.same({}, signature.keys(root))
    h.writefile(root .. "/var/lib/sbctl/keys/db/db.pem", h.readfile(certs.a))
    h.writefile(root .. "/etc/dracut.conf.d/50-sb.conf", 'uefi_secureboot_cert="/etc/keys/dracut.pem"\n')
    h.writefile(root .. "/etc/keys/dracut.pem", h.readfile(certs.b))
    h.writefile(root .. "/etc/kernel/uki.conf", "[UKI]\nSecureBootPrivateKey=/etc/kernel/sb.key\n"
      .. "SecureBootCertificate = /etc/kernel/sb.crt\n[PCRSignature:x]\nSecureBootCertificate=/nope\n")
    local keys = signature.keys(root)
    assert.are.same({ "sbctl", "dracut", "ukify" }, { keys[1].source, keys[2].source, keys[3].source })
    assert.are.same({ "/var/lib/sbctl/keys/db/db.pem", "/etc/keys/dracut.pem", "/etc/kernel/sb.crt" },
      { keys[1].path, keys[2].path, keys[3].path })
    assert.are.equal(fingerprint(certs.a), keys[1].cert.fingerprint)
    assert.are.equal(fingerprint(certs.b), keys[2].cert.fingerprint)
    assert.truthy(keys[3].error:find("/etc/kernel/sb.crt", 1, true), keys[3].error)  -- named but absent
    assert.are.equal("/etc/dracut.conf.d/50-sb.conf", keys[2].from)  -- the drop-in that set it
    assert.are.equal("/etc/kernel/uki.conf", keys[3].from)
  end)

  sit("status shows who signed each chain's image and which known certificate verifies it, as sbverify does", function()
    local root = h.make_root({ files = { ["/etc/os-release"] = "ID=fedora\n", ["/etc/dracut.conf"] = "",
      ["/etc/kernel/install.conf"] = "layout=uki\n", ["/etc/kernel/entry-token"] = "fedora\n",
      ["/efi/EFI/BOOT/BOOTX64.EFI"] = "x", ["/lib/modules/" .. KVER .. "/modules.dep"] = "" },
      exec = { "/usr/bin/dracut" } })
    finally(function() h.rm(root) end)
    local uki = "/efi/EFI/Linux/fedora-" .. KVER .. ".efi"
    h.writefile(dir .. "/cmdline", "quiet\n\0")
    u.make(dir .. "/uki.efi", { { ".cmdline", dir .. "/cmdline" } })
    sh("mkdir -p " .. q(root .. "/efi/EFI/Linux"))
    local function status() return select(2, h.cli("--root " .. q(root) .. " status")) end
    -- unsigned
    sh(("cp %s %s"):format(q(dir .. "/uki.efi"), q(root .. uki)))
    local out = status()
    assert.truthy(out:find("\n  kernel%-install: [^\n]*" .. uki:gsub("%p", "%%%0") .. "[^\n]*\n    unsigned\n"), out)
    assert.truthy(out:find("secure boot: not known (the firmware is read for --root / only)\n", 1, true), out)
    -- signed with a; sbctl's db key is a, then b: sbverify decides which verifies
    sig.sign(dir, "a", dir .. "/uki.efi", root .. uki)
    for _, k in ipairs({ "a", "b" }) do
      h.writefile(root .. "/var/lib/sbctl/keys/db/db.pem", h.readfile(certs[k]))
      local verifies = select(2, sh(("sbverify --cert %s %s >/dev/null 2>&1"):format(q(certs[k]), q(root .. uki))))
      out = status()
      assert.truthy(out:find("  signing key (sbctl): /var/lib/sbctl/keys/db/db.pem " .. subject(certs[k]) .. "\n", 1, true), out)
      local want = "    signed by " .. subject(certs.a) .. "; "
        .. (verifies and "verifies against sbctl /var/lib/sbctl/keys/db/db.pem" or "verifies against none of the known certificates")
      assert.truthy(out:find(want .. "\n", 1, true), out)
    end
    -- the signer of the image as it is now, for what replaces it
    assert.are.same({ { subject = subject(certs.a), fingerprint = fingerprint(certs.a) } }, signature.signers(root, uki))
    -- --json carries the same under each chain's `signature` and `secure_boot`
    local _, json = h.cli("--root " .. q(root) .. " --json status")
    assert.are.equal("True " .. subject(certs.a) .. " 0 sbctl",
      h.pyjson(json, "[c for c in d['boot_chains'] if c['kind'] == 'uki'][0]['signature']['signed'], "
        .. "[c for c in d['boot_chains'] if c['kind'] == 'uki'][0]['signature']['signers'][0], "
        .. "len([c for c in d['boot_chains'] if c['kind'] == 'uki'][0]['signature']['trusted_by']), "
        .. "d['secure_boot']['keys'][0]['source']"))
  end)
end)
