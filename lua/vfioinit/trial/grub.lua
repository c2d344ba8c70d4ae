--[[ vfioinit.trial.grub: a GRUB trial is a menu entry of its own and GRUB's one-shot
`next_entry` (what grub-reboot sets).

* /etc/grub.d/42_vfioinit-trial (vfioinit's, executable) prints, into grub.cfg, a copy of
  the default entry's body with the trial's initrd and command line, `--id vfioinit-trial`.
  Its first commands save `vfioinit_trial=<id>` in grubenv when GRUB starts it; top-level
  code before it turns that into `<id>:later` at the next start of GRUB: the loader's own
  record of whether the trial was the last entry it booted.
* grubenv's next_entry=vfioinit-trial: the root's 00_header (Debian's GRUB 2.06, upstream
  since 2.00) sets `default` from it and clears it (`save_env next_entry`) before anything
  boots, whatever GRUB_DEFAULT is; a header without that code is refused (GRUB_DEFAULT is
  never changed). A failed trial boot therefore leaves the old default for the next one.
]]
local bootcfg = require("vfioinit.boot.cfg")

local M = {}

M.SCRIPT = "/etc/grub.d/42_vfioinit-trial"
M.HEADER = "/etc/grub.d/00_header"
M.ID = "vfioinit-trial"
M.VAR = "vfioinit_trial"
M.ENV_SIZE = 1024  -- grub-editenv's block: GRUB rewrites it in place
local ENV_HEAD = "# GRUB Environment Block\n"

--- check_header(ctx) -> true | nil, err: does root's grub-mkconfig honour next_entry?
function M.check_header(ctx)
  local text, err = ctx.read(M.HEADER)
  if err then return nil, err end
  if not text then return nil, M.HEADER .. ": missing; vfioinit cannot tell whether GRUB honours next_entry" end
  if not text:find('set default="\\${next_entry}"', 1, true) then
    return nil, M.HEADER .. ":1: this GRUB header does not set `default` from grubenv's next_entry; a trial "
      .. "needs it (vfioinit does not change GRUB_DEFAULT)"
  end
  return true
end

-- A GRUB word as grub.cfg can hold it: single quotes around anything but plain characters.
local function quote(w)
  if w:match("^[%w%._,:=/+@%-]+$") then return w end
  return "'" .. w:gsub("'", "'\\''") .. "'"
end

-- The lines of the menuentry that starts at line `first` of text, up to its closing `}`.
local function body_of(text, first)
  local lines = {}
  for l in (text .. "\n"):gmatch("([^\n]*)\n") do lines[#lines + 1] = l end
  local out, depth = {}, 1
  for i = first + 1, #lines do
    local l = lines[i]
    if l:match("^%s*}%s*$") then depth = depth - 1 elseif l:match("{%s*$") then depth = depth + 1 end
    if depth == 0 then return out end
    out[#out + 1] = l
  end
  return nil
end

--- entry(cfg_text, titles, t) -> menuentry text | nil, err. The entry of grub.cfg whose
-- title path is `titles` ("A > B"), with t.cmdline (the trial's whole kernel command line),
-- t.initrd (the trial image's GRUB path in place of the last initrd), t.id, t.title.
function M.entry(cfg_text, path, titles, t)
  local cfg = bootcfg.grub(cfg_text)
  local e
  for _, x in ipairs(cfg.entries) do if table.concat(x.titles, " > ") == titles then e = x end end
  if not e or not e.linux then return nil, ("%s: no entry %q with a linux line"):format(path, titles) end
  local body = body_of(cfg_text, e.line)
  if not body then return nil, ("%s:%d: entry %q has no closing }"):format(path, e.line, titles) end
  local out = { ("menuentry %s --id %s {"):format(quote(t.title), M.ID),
    ("\tset %s=%s"):format(M.VAR, t.id), "\tsave_env " .. M.VAR }
  local last = e.initrd[#e.initrd]
  for _, l in ipairs(body) do
    local w = bootcfg.grub_words(l)
    local indent = l:match("^(%s*)")
    if w[1] == "linux" or w[1] == "linux16" or w[1] == "linuxefi" then
      local words = { w[1], quote(w[2]) }
      for _, x in ipairs(bootcfg.grub_words(t.cmdline:gsub('"', "\\\""))) do words[#words + 1] = quote(x) end
      l = indent .. table.concat(words, " ")
    elseif (w[1] == "initrd" or w[1] == "initrd16" or w[1] == "initrdefi") and last then
      local words = { w[1] }
      for k = 2, #w do words[#words + 1] = quote(w[k] == last and t.initrd or w[k]) end
      l = indent .. table.concat(words, " ")
    end
    out[#out + 1] = l
  end
  out[#out + 1] = "}"
  return table.concat(out, "\n") .. "\n", e
end

--- script(t, entry_text) -> the /etc/grub.d script
function M.script(t, entry_text)
  return table.concat({
    "#!/bin/sh",
    "# vfioinit trial " .. t.id .. ": boots " .. t.kernel .. " once with the VFIO configuration.",
    "# Written by `vfioinit apply --trial`; `vfioinit commit` or `vfioinit revert` removes it.",
    "set -e",
    "cat <<'EOF'",
    ('if [ "${%s}" = "%s" ]; then'):format(M.VAR, t.id),
    ('  set %s="%s:later"'):format(M.VAR, t.id),
    "  save_env " .. M.VAR,
    "fi",
    entry_text .. "EOF",
    "",
  }, "\n")
end

-- grubenv as an ordered list of {name, value} (grub-editenv's escapes undone).
local function env_list(text)
  local list = {}
  for line in (text or ""):gmatch("[^\n]+") do
    local k, v = line:match("^([^#=][^=]*)=(.*)$")
    if k then list[#list + 1] = { k, (v:gsub("\\(.)", "%1")) } end
  end
  return list
end

--- grubenv_set(text, vars) -> new text | nil, err. vars: name -> value (false: unset).
-- nil text: a new block. The result is grub-editenv's format, padded with `#` to 1024 bytes.
function M.grubenv_set(text, vars, path)
  if text and (#text ~= M.ENV_SIZE or text:sub(1, #ENV_HEAD) ~= ENV_HEAD) then
    return nil, path .. ":1: not a GRUB environment block (" .. #text .. " bytes)"
  end
  local list, seen = env_list(text), {}
  local out = {}
  for _, kv in ipairs(list) do
    local k = kv[1]
    seen[k] = true
    if vars[k] == nil then out[#out + 1] = kv elseif vars[k] then out[#out + 1] = { k, vars[k] } end
  end
  for _, k in ipairs({ "next_entry", M.VAR }) do
    if vars[k] and not seen[k] then out[#out + 1] = { k, vars[k] } end
  end
  local body = { ENV_HEAD }
  for _, kv in ipairs(out) do body[#body + 1] = kv[1] .. "=" .. kv[2]:gsub("([\\\n])", "\\%1") .. "\n" end
  local s = table.concat(body)
  if #s > M.ENV_SIZE then return nil, path .. ": the GRUB environment block is full" end
  return s .. ("#"):rep(M.ENV_SIZE - #s)
end

--- grubenv(text) -> name -> value
function M.grubenv(text)
  local env = {}
  for _, kv in ipairs(env_list(text)) do env[kv[1]] = kv[2] end
  return env
end

--- state(rec, env) -> "pending" | "started" | "later" | "gone", why
-- pending: next_entry still names the trial (GRUB has not started since);
-- started: the trial entry was the last one GRUB booted; later: GRUB started again after it.
function M.state(rec, env)
  local v = env[M.VAR]
  if v == rec.id then return "started", rec.grubenv .. ": " .. M.VAR .. "=" .. v .. " (GRUB's last boot was the trial entry)" end
  if v == rec.id .. ":later" then
    return "later", rec.grubenv .. ": " .. M.VAR .. "=" .. v .. " (GRUB booted the trial, then started again)"
  end
  if env.next_entry == rec.next_entry then return "pending", rec.grubenv .. ": next_entry=" .. env.next_entry end
  return "gone", rec.grubenv .. ": next_entry was used, but the trial entry left no record (no save_env?)"
end

return M
