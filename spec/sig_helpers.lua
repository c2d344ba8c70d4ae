-- Signed images for the specs: throwaway keys (openssl req -x509) and Debian's sbsigntool
-- (sbsign signs, sbverify is the oracle); efitools builds EFI signature lists.
local h = require "helpers"
local u = require "uki_helpers"

local M = {}
local q, sh = h.q, h.sh

-- Why signed images cannot be made here (nil when they can); `extra`: more commands needed.
function M.missing(extra)
  local cmds = { "sbsign", "sbverify", "openssl" }
  for _, c in ipairs(extra or {}) do cmds[#cmds + 1] = c end
  for _, c in ipairs(cmds) do
    if not select(2, sh("command -v " .. c .. " >/dev/null 2>&1")) then
      return c .. " not installed (apt-get install sbsigntool efitools openssl)"
    end
  end
  return u.missing()
end

-- An `it` that is pending with the reason when signed images cannot be made.
function M.guard(it, pending, extra)
  return function(desc, fn)
    local why = M.missing(extra)
    if why then pending(desc .. " (" .. why .. ")") else it(desc, fn) end
  end
end

-- A self-signed key pair dir/<name>.key, dir/<name>.pem with subject `subj`; the .pem path.
function M.keypair(dir, name, subj)
  local out, ok = sh(("openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj %s -keyout %s -out %s 2>&1")
    :format(q(subj), q(dir .. "/" .. name .. ".key"), q(dir .. "/" .. name .. ".pem")))
  assert(ok, out)
  return dir .. "/" .. name .. ".pem"
end

-- sbsign src (host path) with dir/<name>.key into dst.
function M.sign(dir, name, src, dst)
  local out, ok = sh(("sbsign --key %s --cert %s --output %s %s 2>&1"):format(
    q(dir .. "/" .. name .. ".key"), q(dir .. "/" .. name .. ".pem"), q(dst), q(src)))
  assert(ok, out)
end

-- Debian's sbsigntool package installed into a real root with its own dpkg (the .deb from
-- apt's cache, or fetched with apt-get download): what `apt-get install sbsigntool` leaves.
function M.install_sbsigntool(root)
  local deb = sh("ls /var/cache/apt/archives/sbsigntool_*_amd64.deb 2>/dev/null | tail -n1"):gsub("%s+$", "")
  if deb == "" then
    local out, ok = sh(("cd %s/tmp && apt-get download sbsigntool 2>&1"):format(q(root)))
    assert(ok, out)
    deb = sh(("ls %s/tmp/sbsigntool_*.deb"):format(q(root))):gsub("%s+$", "")
  else
    sh(("cp %s %s/tmp/"):format(q(deb), q(root)))
  end
  local out, ok = sh(("env -u LD_PRELOAD bash -c %s 2>&1"):format(q(("PROG=spec; . tools/lib-chroot.sh; chroot_run %s dpkg -i /tmp/%s")
    :format(q(root), deb:match("[^/]+$")))))
  assert(ok, "dpkg -i sbsigntool in the root failed:\n" .. out)
end

-- Debian's ovmf test key (enrolled in PK, KEK and db of OVMF_VARS_4M.snakeoil.fd): the PEM
-- certificate's path, and its private key decrypted to host path `key` with the password
-- ovmf's README.Debian gives (sbsign reads no encrypted key without a terminal).
M.SNAKEOIL = "/usr/share/ovmf/PkKek-1-snakeoil"
function M.snakeoil(key)
  local readme = h.readfile("/usr/share/doc/ovmf/README.Debian") or ""
  local pass = assert(readme:match("password for the key is%s+'([^']+)'"), "no snakeoil password in ovmf's README.Debian")
  local out, ok = sh(("openssl rsa -in %s -passin pass:%s -out %s 2>&1"):format(q(M.SNAKEOIL .. ".key"), q(pass), q(key)))
  assert(ok, out)
  return M.SNAKEOIL .. ".pem"
end

return M
