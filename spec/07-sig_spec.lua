-- core.sig (src/sig.c): Authenticode signatures of PE/COFF images, on files Debian's
-- sbsigntool signed with throwaway keys (openssl req -x509): the systemd EFI stub and a
-- UKI, signed once and twice, tampered and truncated; Debian's signed shim when installed.
-- sbverify is the oracle of what verifies, of the signers and of the digest; openssl x509
-- of what a certificate says.
local h = require "helpers"
local u = require "uki_helpers"
local core = require "vfioinit.core"
local sig = require "sig_helpers"

local q, sh = h.q, h.sh

local sit = sig.guard(it, pending)

-- sbverify --cert cert file: verified?, and its stderr/stdout
local function sbverify(cert, file)
  local out, ok = sh(("sbverify --cert %s %s 2>&1"):format(q(cert), q(file)))
  return ok == true, out
end

-- sbverify --list: { {issuers = {...}, subjects = {...}}, ... } per signature
local function sblist(file)
  local sigs, cur, part = {}, nil, nil
  for l in sh("sbverify --list " .. q(file) .. " 2>/dev/null"):gmatch("[^\n]+") do
    if l:match("^signature %d+") then cur = { issuers = {}, subjects = {} }; sigs[#sigs + 1] = cur
    elseif l:match("^image signature issuers:") then part = "issuers"
    elseif l:match("^image signature certificates:") then part = "certs"
    elseif part == "issuers" and l:match("^ %- ") then cur.issuers[#cur.issuers + 1] = l:match("^ %- (.*)$")
    elseif part == "certs" and l:match("^ %- subject: ") then cur.subjects[#cur.subjects + 1] = l:match("^ %- subject: (.*)$")
    end
  end
  return sigs
end

describe("core.sig (Authenticode signatures)", function()
  local dir, files, certs
  lazy_setup(function()
    if sig.missing() then return end
    dir = h.tmpdir()
    certs = {}
    for _, k in ipairs({ "a", "b" }) do certs[k] = sig.keypair(dir, k, "/CN=vfioinit spec " .. k .. "/O=Test") end
    local function sign(key, src, dst) sig.sign(dir, key, dir .. "/" .. src, dir .. "/" .. dst) end
    sh(("cp %s %s"):format(q(u.STUB), q(dir .. "/stub.efi")))
    h.writefile(dir .. "/cmdline", "quiet vfio-pci.ids=1af4:1000\n\0")
    h.writefile(dir .. "/linux", ("\1"):rep(8192))
    u.make(dir .. "/uki.efi", { { ".cmdline", dir .. "/cmdline" }, { ".linux", dir .. "/linux" } })
    sign("a", "stub.efi", "a.efi")
    sign("b", "a.efi", "ab.efi")
    sign("b", "uki.efi", "uki-b.efi")
    local signed = h.readfile(dir .. "/a.efi")
    -- one byte of .text changed; the table cut short; the file cut inside the sections
    local text = assert(core.image.sections(dir, "/a.efi"))[1]
    local at = text.offset + 100
    h.writefile(dir .. "/tampered.efi", signed:sub(1, at) .. string.char((signed:byte(at + 1) + 1) % 256) .. signed:sub(at + 2))
    h.writefile(dir .. "/short-table.efi", signed:sub(1, #signed - 100))
    h.writefile(dir .. "/short-sections.efi", signed:sub(1, text.offset + 1000))
    files = { "stub.efi", "uki.efi", "a.efi", "ab.efi", "uki-b.efi", "tampered.efi", "short-table.efi", "short-sections.efi" }
  end)
  lazy_teardown(function() if dir then h.rm(dir) end end)

  sit("verifies exactly the files and certificates sbverify verifies", function()
    local verified = 0
    for _, f in ipairs(files) do
      for _, k in ipairs({ "a", "b" }) do
        local want = sbverify(certs[k], dir .. "/" .. f)
        local n, why = core.sig.verify(dir, "/" .. f, h.readfile(certs[k]))
        assert.are.equal(want, math.type(n) == "integer", ("%s with %s: %s"):format(f, k, tostring(why)))
        if want then verified = verified + 1 end
      end
    end
    assert.are.equal(4, verified)  -- a.efi (a), ab.efi (a and b), uki-b.efi (b)
    -- the index is the signature that verified: b signed ab.efi second
    assert.are.equal(1, core.sig.verify(dir, "/ab.efi", h.readfile(certs.a)))
    assert.are.equal(2, core.sig.verify(dir, "/ab.efi", h.readfile(certs.b)))
    -- several certificates, PEM in one string or DER in a list
    local der = sh(("openssl x509 -in %s -outform DER | od -An -v -tx1"):format(q(certs.b))):gsub("%s", "")
    der = der:gsub("%x%x", function(x) return string.char(tonumber(x, 16)) end)
    assert.are.equal(1, core.sig.verify(dir, "/uki-b.efi", { h.readfile(certs.a), der }))
    assert.are.equal(2, core.sig.verify(dir, "/ab.efi", { der }))
    assert.are.equal(1, core.sig.verify(dir, "/a.efi", h.readfile(certs.b) .. h.readfile(certs.a)))
  end)

  sit("says why nothing verifies, and refuses a file it cannot read", function()
    local a = h.readfile(certs.a)
    assert.are.same({ false, "unsigned" }, { core.sig.verify(dir, "/stub.efi", a) })
    assert.are.same({ false, "the signed digest does not match the file" }, { core.sig.verify(dir, "/tampered.efi", a) })
    assert.are.same({ false, "not signed by the given certificates" }, { core.sig.verify(dir, "/uki-b.efi", a) })
    assert.are.same({ nil, "/short-table.efi: the certificate table lies past the end of the file" },
      { core.sig.verify(dir, "/short-table.efi", a) })
    local v, err = core.sig.read(dir, "/short-sections.efi")
    assert.is_nil(v)
    assert.truthy(err:find("^/short%-sections%.efi: not a PE image"), err)
    assert.are.same({ nil, "no X.509 certificate in the certificates given" }, { core.sig.verify(dir, "/a.efi", "junk") })
    v, err = core.sig.read(dir, "/nope.efi")
    assert.is_nil(v)
    assert.truthy(err:find("/nope.efi", 1, true), err)
  end)

  sit("names each signature's signer and certificates as sbverify --list does", function()
    for _, f in ipairs({ "a.efi", "ab.efi", "uki-b.efi", "stub.efi" }) do
      local want = sblist(dir .. "/" .. f)
      local info = assert(core.sig.read(dir, "/" .. f))
      assert.are.equal(#want, #info.signatures, f)
      for i, w in ipairs(want) do
        local s = info.signatures[i]
        assert.are.same(w.issuers, { s.signer.issuer })
        local subjects = {}
        for j, c in ipairs(s.certificates) do subjects[j] = c.subject end
        assert.are.same(w.subjects, subjects)
        assert.are.equal("sha256", s.algorithm)
      end
    end
  end)

  sit("computes the Authenticode digest sbverify computes", function()
    -- sbverify prints both digests when they differ: "got" (signed) and "expecting" (the file's)
    local _, out = sbverify(certs.a, dir .. "/tampered.efi")
    local got, expecting = out:match("got:%s+(%x+)"), out:match("expecting:%s+(%x+)")
    assert.truthy(got and expecting, out)
    local info = assert(core.sig.read(dir, "/tampered.efi"))
    assert.are.equal(expecting, info.digest)
    assert.are.equal(got, info.signatures[1].digest)
    assert.is_false(info.signatures[1].digest_ok)
    -- the untouched file: what was signed is what is there, and the second signature signs the same
    info = assert(core.sig.read(dir, "/ab.efi"))
    assert.are.equal(got, info.digest)
    for _, s in ipairs(info.signatures) do
      assert.are.equal(info.digest, s.digest)
      assert.is_true(s.digest_ok)
    end
    assert.are.same({}, assert(core.sig.read(dir, "/stub.efi")).signatures)
  end)

  sit("reads a certificate, PEM or DER, as openssl x509 does", function()
    local out = sh(("openssl x509 -in %s -noout -subject -issuer -serial -fingerprint -sha256 -nameopt compat"):format(q(certs.a)))
    local want = {
      subject = out:match("subject=([^\n]+)"), issuer = out:match("issuer=([^\n]+)"),
      serial = out:match("serial=(%x+)"):lower(),
      fingerprint = out:match("Fingerprint=([%x:]+)"):gsub(":", ""):lower(),
    }
    assert.are.same(want, assert(core.sig.cert(h.readfile(certs.a))))
    local der = dir .. "/a.der"
    sh(("openssl x509 -in %s -outform DER -out %s"):format(q(certs.a), q(der)))
    assert.are.same(want, assert(core.sig.cert(h.readfile(der))))
    assert.are.same({ nil, "not an X.509 certificate" }, { core.sig.cert("-----BEGIN CERTIFICATE-----\nxx\n") })
    -- the signer read from the image is the certificate that signed it
    assert.are.same(want, assert(core.sig.read(dir, "/a.efi")).signatures[1].signer)
  end)

  -- Debian's shim, signed twice by Microsoft (UEFI CA 2011 and 2023); its own certificate
  -- table carries the CA certificates a firmware db holds.
  local SHIM = "/usr/lib/shim/shimx64.efi.signed"
  local shim_it = io.open(SHIM) and sit or function(desc) pending(desc .. " (" .. SHIM .. " not installed: shim-signed)") end
  shim_it("verifies Debian's shim against the Microsoft CAs in its table as sbverify does", function()
    local info = assert(core.sig.read("/", SHIM))
    local want = sblist(SHIM)
    assert.is_true(#want >= 1)
    assert.are.equal(#want, #info.signatures)
    for i, w in ipairs(want) do assert.are.same(w.issuers, { info.signatures[i].signer.issuer }) end
    -- every certificate of every WIN_CERTIFICATE (read here with string.unpack and openssl),
    -- each as the only trusted one: the signers and the CAs verify, as with sbverify
    local img = h.readfile(SHIM)
    local pe = string.unpack("<I4", img, 0x3d)
    local off, size = string.unpack("<I4I4", img, pe + 24 + 144 + 1)
    local pos, n = off, 0
    while pos < off + size - 8 do
      local len = string.unpack("<I4", img, pos + 1)
      h.writefile(dir .. "/p7.der", img:sub(pos + 9, pos + len))
      local pems = sh(("openssl pkcs7 -inform DER -print_certs -in %s"):format(q(dir .. "/p7.der")))
      for pem in pems:gmatch("%-%-%-%-%-BEGIN CERTIFICATE%-%-%-%-%-.-%-%-%-%-%-END CERTIFICATE%-%-%-%-%-\n") do
        h.writefile(dir .. "/c.pem", pem)
        local ok = sbverify(dir .. "/c.pem", SHIM)
        assert.are.equal(ok, math.type(core.sig.verify("/", SHIM, pem)) == "integer", pem)
        if ok then n = n + 1 end
      end
      pos = pos + (len + 7) // 8 * 8
    end
    assert.is_true(n >= 2, "certificates that verify: " .. n)
  end)
end)
