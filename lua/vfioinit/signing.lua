--[[ vfioinit.signing: a rebuilt EFI image keeps its signature (docs/CONTRACT.md "Secure
Boot and rebuilds"). rebuild.lua asks, per image:

  local was = signing.before(root, path)   -- before the command: nil (no EFI image) or
                                           -- {signed=, fingerprints={[fp]=subject}, subjects=}
  local why, warning, signed = signing.after(root, path, was, sign, timeout)
                                           -- after it: signed with sign={key=,cert=} (sbsign
                                           -- in root) when it came out unsigned, then judged
  signing.advice(gen, root)                -- how to make the rebuild sign, for `why`

The generator's own command runs the signing hooks the distribution installs; vfioinit
checks what came out and never creates keys.
]]
local core = require("vfioinit.core")
local context = require("vfioinit.context")

local M = {}

M.SBSIGN = "sbsign"
M.TAIL = 20

local function subjects(list) return table.concat(list, ", ") end

--- before(root, path) -> nil when path is no readable PE image (an initramfs, no file),
-- else {signed=bool, fingerprints={[sha256]=subject}, subjects={...}}: who signed it.
function M.before(root, path)
  local info = core.sig.read(root, path)
  if not info then return nil end
  local was = { signed = #info.signatures > 0, fingerprints = {}, subjects = {} }
  for _, s in ipairs(info.signatures) do
    local subject = s.signer and s.signer.subject or "(signer certificate not included)"
    if s.signer and s.signer.fingerprint then was.fingerprints[s.signer.fingerprint] = subject end
    was.subjects[#was.subjects + 1] = subject
  end
  return was
end

-- Is path (inside root) a regular file? Its error otherwise.
local function need_file(root, what, path)
  if type(path) ~= "string" or path:sub(1, 1) ~= "/" then
    return ("%s: an absolute path inside the root expected, got %s"):format(what, tostring(path))
  end
  local st, err = core.fs.stat(root, path)
  if not st then return ("%s %s"):format(what, err) end
  if st.type ~= "file" then return ("%s %s: not a regular file"):format(what, path) end
end

--- check(root, sign) -> true | nil, err: the sign option ({key=, cert=}, paths inside root)
-- can be used: both files there, the certificate an X.509 one, sbsign installed in root.
-- Asked before anything is written.
function M.check(root, sign)
  if sign == nil then return true end
  local err = need_file(root, "sign key", sign.key) or need_file(root, "sign cert", sign.cert)
  if err then return nil, err end
  local pem, rerr = core.fs.read(root, sign.cert, 1024 * 1024)
  if not pem then return nil, "sign cert " .. rerr end
  local _, cerr = core.sig.cert(pem)
  if cerr then return nil, ("sign cert %s: %s"):format(sign.cert, cerr) end
  if not context.command_in(root, M.SBSIGN) then
    return nil, ("%s: command not found in %s (sign key/cert given: install sbsigntool there)"):format(M.SBSIGN, root)
  end
  return true
end

--- sign(root, path, sign, timeout) -> true | nil, err: `sbsign --key K --cert C --output
-- PATH PATH` inside root (chrooted unless root is "/"), in place as sbctl signs: the caller
-- keeps the previous image until the result is judged.
function M.sign(root, path, sign, timeout)
  local argv = { M.SBSIGN, "--key", sign.key, "--cert", sign.cert, "--output", path, path }
  local tail = {}
  local res, err = core.spawn.run({
    argv = argv, root = root ~= "/" and root or nil, timeout = timeout or 600,
    on_line = function(_, line)
      tail[#tail + 1] = line
      if #tail > M.TAIL then table.remove(tail, 1) end
    end,
  })
  local cmd = table.concat(argv, " ")
  if not res then return nil, ("%s: %s"):format(cmd, err) end
  if res.timed_out or res.status ~= 0 then
    return nil, ("`%s` %s%s"):format(cmd, res.timed_out and "timed out" or ("exited with status " .. tostring(res.status)),
      #tail > 0 and (":\n" .. table.concat(tail, "\n")) or "")
  end
  return true
end

-- Does a signature of the new image verify against db? (db's certificates, DER)
local function in_db(root, path, firmware)
  if not firmware or #firmware.db == 0 then return false end
  local ders = {}
  for i, c in ipairs(firmware.db) do ders[i] = c.der end
  return math.type(core.sig.verify(root, path, ders)) == "integer"
end

-- Why the new image (info: its core.sig.read) may not replace one `was` describes, or nil;
-- and a warning. See M.after.
local function judge(root, path, was, info)
  local now = {}
  for _, s in ipairs(info.signatures) do
    local fp = s.signer and s.signer.fingerprint
    if s.digest_ok and fp and was.fingerprints[fp] then return nil end
    now[#now + 1] = (s.signer and s.signer.subject or "(signer certificate not included)")
      .. (s.digest_ok and "" or " (its signed digest does not match the file)")
  end
  -- db and SecureBoot of root's efivarfs (the running firmware's on / or in a chroot that has /sys)
  local firmware = require("vfioinit.signature").firmware(root)
  if #now > 0 and in_db(root, path, firmware) then return nil end
  if not was.signed then
    if #now == 0 and firmware.secure_boot then
      return nil, ("%s is unsigned and Secure Boot is on: the firmware will not start it "
        .. "(vfioinit signs only with --sign-key/--sign-cert)"):format(path)
    end
    return nil
  end
  if #now == 0 then
    return ("%s: the rebuilt image is unsigned, but the previous one was signed by %s"):format(path, subjects(was.subjects))
  end
  return ("%s: the rebuilt image is signed by %s, which neither signed the previous one (%s) nor is in %s")
    :format(path, subjects(now), subjects(was.subjects), firmware.efi and "db" or "db (not known: no efivarfs in the root)")
end

local UNSIGNED = { signed = false, fingerprints = {}, subjects = {} }

--- after(root, path, was, sign, timeout) -> nil | why (the previous image must come back),
-- warning | nil, signed (true: sbsign signed it). `was`: M.before of the previous image.
-- The new image, when it is an EFI image, is signed with `sign` ({key=, cert=}) if it came
-- out unsigned; then a previous image that was signed needs a new one with a signature
-- whose signer certificate (SHA-256 fingerprint) signed the previous image and whose signed
-- digest is the file's, or one that verifies against db. An unsigned image where the
-- previous one was unsigned too stays, with a warning when Secure Boot is on.
function M.after(root, path, was, sign, timeout)
  local info, err = core.sig.read(root, path)
  if not info then
    if was and was.signed then return ("%s: the rebuilt image is no EFI image that can be read: %s"):format(path, err) end
    return nil  -- no EFI image
  end
  local signed
  if sign and #info.signatures == 0 then
    local ok, serr = M.sign(root, path, sign, timeout)
    if not ok then return ("%s: signing with sbsign failed: %s"):format(path, serr) end
    signed = true
    info, err = core.sig.read(root, path)
    if not info then return ("%s: unreadable after sbsign: %s"):format(path, err), nil, signed end
  end
  local why, warning = judge(root, path, was or UNSIGNED, info)
  return why, warning, signed
end

--- advice(gen, root) -> how to make the rebuild sign: the generator's hook or option
-- (gen.sign_hint), or vfioinit's own --sign-key/--sign-cert, and the keys root's signing
-- setup names (signature.keys).
function M.advice(gen, root)
  local named = {}
  for _, k in ipairs(require("vfioinit.signature").keys(root)) do
    if k.path and not k.error then named[#named + 1] = ("%s names %s"):format(k.source, k.path) end
  end
  return ("make the rebuild sign it: %s, or give vfioinit --sign-key KEY --sign-cert CERT "
    .. "(paths inside the root; Lua sign={key=,cert=})%s"):format(gen.sign_hint or "the generator's signing hook",
    #named > 0 and ("; this root's signing setup: " .. table.concat(named, ", ")) or "")
end

return M
