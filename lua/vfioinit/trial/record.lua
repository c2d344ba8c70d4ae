--[[ vfioinit.trial.record: what a trial is, kept in root while it is pending.

  /etc/vfioinit/trial/record (a file the trial's own journaled write creates):
    vfioinit-trial 1
    <key> <value>          one per line, values percent-encoded (%, newline, CR, NUL)
    opt <name> <value>     the options `commit` applies again (repeatable for lists)
    end <sha256 of every byte above this line>

Keys: id, kernel, generator, loader (grub|bls|uki), image (the trial's initramfs or UKI in
root), entry (grub: the /etc/grub.d script; bls: the entry's path without its
`+LEFT-DONE.conf`; uki: the trial UKI's path without its `+LEFT-DONE.efi`),
grubenv, next_entry, grubenv_was (the value next_entry had, `-` for none), grubenv_created
(yes|no), cmdline (the trial entry's kernel command line), default (the entry booted by
default). Pure text in, tables out: parse never raises.
]]
local core = require("vfioinit.core")

local M = {}

M.DIR = "/etc/vfioinit/trial"
M.PATH = M.DIR .. "/record"
M.HEADER = "vfioinit-trial 1"

local KEYS = { "id", "kernel", "generator", "loader", "image", "entry", "grubenv", "next_entry",
  "grubenv_was", "grubenv_created", "cmdline", "default" }
-- options commit takes again: lists, then single values
M.LISTS = { "ids", "devices", "modules", "generators", "kernels" }
M.VALUES = { "softdeps", "force", "cmdline", "match" }

local function enc(s) return (tostring(s):gsub("[%%\n\r%z ]", function(c) return ("%%%02X"):format(c:byte()) end)) end
local function dec(s) return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end)) end

--- serialize(rec) -> text
function M.serialize(rec)
  local out = { M.HEADER }
  for _, k in ipairs(KEYS) do
    if rec[k] ~= nil then out[#out + 1] = k .. " " .. enc(rec[k]) end
  end
  local o = rec.opts or {}
  for _, k in ipairs(M.LISTS) do
    local v = o[k]
    if type(v) == "string" then v = { v } end
    for _, x in ipairs(v or {}) do out[#out + 1] = "opt " .. k .. " " .. enc(x) end
  end
  for _, k in ipairs(M.VALUES) do
    if o[k] ~= nil and o[k] ~= false then out[#out + 1] = "opt " .. k .. " " .. enc(o[k]) end
  end
  local body = table.concat(out, "\n") .. "\n"
  return body .. "end " .. core.hash.sha256(body) .. "\n"
end

local IS_LIST, IS_VALUE, IS_KEY = {}, {}, {}
for _, k in ipairs(M.LISTS) do IS_LIST[k] = true end
for _, k in ipairs(M.VALUES) do IS_VALUE[k] = true end
for _, k in ipairs(KEYS) do IS_KEY[k] = true end

--- parse(text) -> rec | nil, "RECORD:LINE: reason"
function M.parse(text)
  local function bad(n, why) return nil, ("%s:%d: %s"):format(M.PATH, n, why) end
  if type(text) ~= "string" or text:sub(1, #M.HEADER + 1) ~= M.HEADER .. "\n" then
    return bad(1, "not a vfioinit trial record")
  end
  local body, sum = text:match("^(.*\n)end (%x+)\n$")
  if not body or core.hash.sha256(body) ~= sum then return bad(1, "damaged (checksum mismatch or truncated)") end
  local rec, n = { opts = {} }, 1
  for line in body:gmatch("([^\n]*)\n") do
    if n > 1 then
      local k, v = line:match("^(%S+) (%S*)$")
      local ok, ov = line:match("^opt (%S+) (%S*)$")
      if ok and IS_LIST[ok] then
        rec.opts[ok] = rec.opts[ok] or {}
        table.insert(rec.opts[ok], dec(ov))
      elseif ok and IS_VALUE[ok] then
        local x = dec(ov)
        rec.opts[ok] = x == "true" and true or x
      elseif k and IS_KEY[k] then
        rec[k] = dec(v)
      else
        return bad(n, "unknown line")
      end
    end
    n = n + 1
  end
  for _, k in ipairs({ "id", "kernel", "generator", "loader", "image", "entry" }) do
    if not rec[k] then return bad(1, "no " .. k) end
  end
  if not rec.id:match("^%x+$") then return bad(1, "bad id") end
  return rec
end

--- owns_entry(name) -> is this GRUB entry id, BLS entry file name or UKI file name a trial's?
-- Boot chains leave such entries out: they are what `apply --trial` added, not what the
-- machine boots.
function M.owns_entry(name)
  return name ~= nil and (name == "vfioinit-trial" or name:match("^vfioinit%-trial%-") ~= nil
    or name:match("%-vfioinit%-trial[+.][^/]*$") ~= nil)
end

--- load(root) -> rec | false (no trial) | nil, err
function M.load(root)
  local st = core.fs.stat(root, M.PATH)
  if not st then return false end
  local text, err = core.fs.read(root, M.PATH, 65536)
  if not text then return nil, err end
  return M.parse(text)
end

--- blocks(root) -> nil, or why a plain apply must wait: a pending trial (or its damaged record)
function M.blocks(root)
  local rec, err = M.load(root)
  if rec == nil then return err end
  if rec then return ("a trial is pending (%s): boot it and `vfioinit commit`, or `vfioinit revert`"):format(rec.id) end
end

return M
