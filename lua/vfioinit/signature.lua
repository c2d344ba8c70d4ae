--- vfioinit.signature: Secure Boot facts for `status`. Who signed what boots (core.sig: the
-- image's Authenticode signatures), what the firmware trusts (efivarfs: SecureBoot,
-- SetupMode and db) and the certificates root's own signing setup names (sbctl's db key,
-- dracut's uefi_secureboot_cert, ukify's SecureBootCertificate). Every file is read
-- inside root through vfioinit.core.
local core = require("vfioinit.core")
local context = require("vfioinit.context")

local M = {}

M.EFIVARS = "/sys/firmware/efi/efivars"
local GLOBAL = "8be4df61-93ca-11d2-aa0d-00e098032b8c"       -- EFI_GLOBAL_VARIABLE: SecureBoot, SetupMode
local SECURITY_DB = "d719b2cb-3d3a-4596-a3bc-dad00e67656f"  -- EFI_IMAGE_SECURITY_DATABASE_GUID: db
local CERT_X509 = "a5c059a1-94e4-4aa7-87b5-ab155c2bf072"    -- EFI_CERT_X509_GUID
local MAX_FILE = 1024 * 1024
local ENOENT = 2

-- sbctl's db certificate (current and pre-0.10 layout); ukify's config as kernel-install's
-- 60-ukify.install looks for it, the first that exists.
M.SBCTL = { "/var/lib/sbctl/keys/db/db.pem", "/usr/share/secureboot/keys/db/db.pem" }
M.UKI_CONF = { "/etc/kernel/uki.conf", "/run/kernel/uki.conf", "/usr/local/lib/kernel/uki.conf", "/usr/lib/kernel/uki.conf" }

-- Little-endian unsigned integer of n bytes at pos (Lua 5.1 has no string.unpack).
local function le(s, pos, n)
  local v = 0
  for i = n - 1, 0, -1 do v = v * 256 + s:byte(pos + i) end
  return v
end

local function guid(s, pos)
  local tail = s:sub(pos + 8, pos + 15):gsub(".", function(c) return ("%02x"):format(c:byte()) end)
  return ("%08x-%04x-%04x-%s-%s"):format(le(s, pos, 4), le(s, pos + 4, 2), le(s, pos + 6, 2), tail:sub(1, 4), tail:sub(5))
end

--- siglists(data, name) -> list of X.509 certificates (DER), count of other entries | nil, err:
-- a sequence of EFI_SIGNATURE_LISTs (UEFI spec, "Signature Database": SignatureType,
-- SignatureListSize, SignatureHeaderSize, SignatureSize, the header, then SignatureSize
-- entries of owner GUID + data). `name` is what errors say.
function M.siglists(data, name)
  local certs, others, pos = {}, 0, 1
  while pos <= #data do
    local left = #data - pos + 1
    if left < 28 then return nil, ("%s: byte %d: a signature list header cut short"):format(name, pos - 1) end
    local typ = guid(data, pos)
    local size, hsize, ssize = le(data, pos + 16, 4), le(data, pos + 20, 4), le(data, pos + 24, 4)
    if size > left or size < 28 + hsize or ssize < 16 or (size - 28 - hsize) % ssize ~= 0 then
      return nil, ("%s: byte %d: a signature list whose sizes do not add up"):format(name, pos - 1)
    end
    for p = pos + 28 + hsize, pos + size - 1, ssize do
      if typ == CERT_X509 then certs[#certs + 1] = data:sub(p + 16, p + ssize - 1) else others = others + 1 end
    end
    pos = pos + size
  end
  return certs, others
end

-- An EFI variable's data without its 4-byte attributes: data | nil (absent) | nil, err.
local function efivar(root, name, vendor)
  local path = ("%s/%s-%s"):format(M.EFIVARS, name, vendor)
  local data, err, code = core.fs.read(root, path, MAX_FILE)
  if not data then
    if code == ENOENT then return nil end
    return nil, err
  end
  if #data < 4 then return nil, path .. ": shorter than its 4-byte attributes" end
  return data:sub(5)
end

-- A one-byte boolean variable (SecureBoot, SetupMode): true/false | nil (absent) | nil, err.
local function flag(root, name)
  local v, err = efivar(root, name, GLOBAL)
  if v == nil then return nil, err end
  if #v ~= 1 or v:byte() > 1 then return nil, ("%s/%s-%s: not a one-byte 0 or 1"):format(M.EFIVARS, name, GLOBAL) end
  return v:byte() == 1
end

--- firmware(root) -> { efi = bool, secure_boot = bool|nil, setup_mode = bool|nil,
-- db = { {subject=, issuer=, serial=, fingerprint=, der=}, ... }, db_other = count, errors = {...} }:
-- what root's efivarfs says (nil: not known). Meaningful for root "/" only: efivarfs is
-- the running firmware's, not a root's.
function M.firmware(root)
  local fw = { efi = false, db = {}, db_other = 0, errors = {} }
  local st = core.fs.stat(root, M.EFIVARS)
  if not (st and st.type == "dir") then return fw end
  fw.efi = true
  local err
  fw.secure_boot, err = flag(root, "SecureBoot")
  fw.errors[#fw.errors + 1] = err
  fw.setup_mode, err = flag(root, "SetupMode")
  fw.errors[#fw.errors + 1] = err
  local db, derr = efivar(root, "db", SECURITY_DB)
  if derr then fw.errors[#fw.errors + 1] = derr end
  if db then
    local certs, others = M.siglists(db, ("%s/db-%s"):format(M.EFIVARS, SECURITY_DB))
    if not certs then fw.errors[#fw.errors + 1] = others else
      fw.db_other = others
      for _, der in ipairs(certs) do
        local c, cerr = core.sig.cert(der)
        if c then c.der = der; fw.db[#fw.db + 1] = c else fw.errors[#fw.errors + 1] = "db: " .. cerr end
      end
    end
  end
  return fw
end

-- The value of key in [section] of an INI-style file (the last one wins), or nil.
local function ini_value(text, section, key)
  local cur, val
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do
    line = line:match("^%s*(.-)%s*$")
    local s = line:match("^%[(.-)%]$")
    if s then cur = s
    elseif cur == section and not line:match("^[#;]") then
      local k, v = line:match("^([^=]-)%s*=%s*(.*)$")
      if k == key then val = v end
    end
  end
  return val ~= "" and val or nil
end

-- One key: {source=, path=, from=, cert={...}, pem=} or {..., error=}.
local function key(root, source, path, from)
  local k = { source = source, path = path, from = from }
  if path:sub(1, 1) ~= "/" then k.error = path .. ": not an absolute path"; return k end
  local pem, err = core.fs.read(root, path, MAX_FILE)
  if not pem then k.error = err; return k end
  local c, cerr = core.sig.cert(pem)
  if not c then k.error = path .. ": " .. cerr; return k end
  k.cert, k.pem = c, pem
  return k
end

--- keys(root[, ctx]) -> list of the signing certificates root's setup names (ctx: the run's
-- context over root, so a status reads the configs once):
-- {source = "sbctl"|"dracut"|"ukify", path = certificate, from = config naming it,
--  cert = core.sig.cert's table, pem = text} or with `error` when it cannot be read.
function M.keys(root, ctx)
  local out = {}
  for _, p in ipairs(M.SBCTL) do
    if core.fs.stat(root, p) then out[#out + 1] = key(root, "sbctl", p); break end
  end
  ctx = ctx or context.new({ root = root })
  -- value, the config that set it | false (unset) | nil, err
  local cert, from = require("vfioinit.generators.dracut").setting(ctx, "uefi_secureboot_cert")
  if cert then out[#out + 1] = key(root, "dracut", cert, from)
  elseif cert == nil then out[#out + 1] = { source = "dracut", error = from } end
  for _, conf in ipairs(M.UKI_CONF) do
    local text, cerr = ctx.read(conf)
    if text or cerr then
      local p = text and ini_value(text, "UKI", "SecureBootCertificate")
      if cerr then out[#out + 1] = { source = "ukify", from = conf, error = cerr }
      elseif p then out[#out + 1] = key(root, "ukify", p, conf) end
      break
    end
  end
  return out
end

--- image(root, path, anchors) -> { signed = bool, signers = {subject, ...}, digest_ok = bool,
-- trusted_by = {name, ...} } | { error = msg }: an image's signatures and which of
-- `anchors` ({ {name=, certs=string|{string,...}}, ... }) one of them verifies against.
function M.image(root, path, anchors)
  local info, err = core.sig.read(root, path)
  if not info then return { error = err } end
  local r = { signed = #info.signatures > 0, signers = {}, digest_ok = true, trusted_by = {} }
  for _, s in ipairs(info.signatures) do
    r.signers[#r.signers + 1] = s.signer and s.signer.subject or "(signer certificate not included)"
    r.digest_ok = r.digest_ok and s.digest_ok
  end
  if not r.signed then return r end
  for _, a in ipairs(anchors or {}) do
    if type(core.sig.verify(root, path, a.certs)) == "number" then r.trusted_by[#r.trusted_by + 1] = a.name end
  end
  return r
end

--- signers(root, path) -> list of {subject=, fingerprint=} (empty: unsigned) | nil, err: the
-- certificates that signed an image, e.g. the one a rebuild is about to replace, so that
-- the new image can be checked against them.
function M.signers(root, path)
  local info, err = core.sig.read(root, path)
  if not info then return nil, err end
  local out = {}
  for _, s in ipairs(info.signatures) do
    if s.signer then out[#out + 1] = { subject = s.signer.subject, fingerprint = s.signer.fingerprint } end
  end
  return out
end

--- status(root, chains, opts) -> the Secure Boot summary for `status`, and each chain of
-- `chains` that exists gets `signature` (image's result). The firmware is read when
-- opts.firmware (root "/"); opts.ctx: the run's context. Anchors: the firmware's db, then each readable key.
function M.status(root, chains, opts)
  local fw = (opts or {}).firmware and M.firmware(root) or nil
  local keys = M.keys(root, (opts or {}).ctx)
  local anchors = {}
  if fw and #fw.db > 0 then
    local ders = {}
    for i, c in ipairs(fw.db) do ders[i] = c.der end
    anchors[1] = { name = "db", certs = ders }
  end
  for _, k in ipairs(keys) do
    if k.pem then anchors[#anchors + 1] = { name = k.source .. " " .. k.path, certs = k.pem } end
  end
  local seen = {}
  for _, c in ipairs(chains) do
    if c.path and c.exists ~= false then
      seen[c.path] = seen[c.path] or M.image(root, c.path, anchors)
      c.signature = seen[c.path]
    end
  end
  local sum = { keys = {} }
  if fw then
    sum.efi, sum.secure_boot, sum.setup_mode, sum.errors = fw.efi, fw.secure_boot, fw.setup_mode, fw.errors
    sum.db = {}
    for i, c in ipairs(fw.db) do sum.db[i] = { subject = c.subject, fingerprint = c.fingerprint } end
  end
  for i, k in ipairs(keys) do
    sum.keys[i] = { source = k.source, path = k.path, from = k.from, subject = k.cert and k.cert.subject, error = k.error }
  end
  return sum
end

return M
