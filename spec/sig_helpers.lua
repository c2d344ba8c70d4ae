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

return M
