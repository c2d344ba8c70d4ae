-- Plain ostree (no rpm-ostree): the kernel command line is the `options` of the deployment's
-- BLS entry, which ostree writes. The record /etc/vfioinit/ostree.cmdline (cmdtool.lua) holds
-- vfioinit's operations; after apply `ostree admin instutil set-kargs` gives the default
-- deployment its options with them applied, after revert with their inverse applied: exactly
-- vfioinit's words come and go, whatever else the line holds. set-kargs rewrites the entry of
-- the deployment in place. Why not `ostree admin kargs edit-in-place --append-if-missing`:
-- in ostree 2022.7 (Debian 12) it only appends, to every deployment, and nothing takes a word
-- away again; `ostree admin deploy --karg-delete` takes one word per new deployment.
-- Never `--import-proc-cmdline`/`--karg-proc-cmdline`: that is the running machine's line,
-- not root's.
local toolbase = require("vfioinit.boot.cmdline.toolbase")
local cmdtool = require("vfioinit.boot.cmdline.cmdtool")
local cmdline = require("vfioinit.edit.cmdline")
local ostree = require("vfioinit.ostree")

local M = {}

-- The default deployment of the root's sysroot, read now (nil, err when it cannot be).
function M.default(ctx)
  local info, err = ostree.detect(ctx.ostree.uroot)
  if not info then return nil, err or (ctx.ostree.uroot .. ": no ostree deployment") end
  return info.default, info
end

-- toolbase's `current`: the default deployment's options and their "PATH:LINE".
function M.current(ctx)
  local d, err = M.default(ctx)
  if not d then return nil, err end
  return d.options or "", ("%s:%d"):format(d.entry, d.options_line or 1)
end

-- What is read back: the default deployment's entry (the run's chains of an ostree root are
-- its deployments', lua/vfioinit/ostree.lua); a rollback keeps its old arguments.
function M.reads(c) return c.loader == "bls" and c.default == true end

-- `line` with `ops` ({op="add"|"replace"|"remove", old=, new=}) applied, by word.
function M.apply_ops(line, ops)
  local words = {}
  for _, w in ipairs((cmdline.split(line or ""))) do words[#words + 1] = w.text end
  local function find(text, key)
    for i, w in ipairs(words) do if w == text then return i end end
    for i, w in ipairs(words) do if key and cmdline.norm(w:match("^[^=]*")) == key then return i end end
  end
  for _, o in ipairs(ops) do
    local key = cmdline.norm(((o.new or o.old)):match("^[^=]*"))
    if o.op == "add" then
      if not find(o.new) then words[#words + 1] = o.new end
    elseif o.op == "replace" then
      local i = find(o.old, key)
      if i then words[i] = o.new else words[#words + 1] = o.new end
    elseif o.op == "remove" then
      local i = find(o.old)
      if i then table.remove(words, i) end
    end
  end
  return table.concat(words, " ")
end

-- set-kargs with `line` (ostree= left out: ostree writes it itself), as a command.
local function set_kargs(ctx, line)
  local init = select(2, cmdline.split(line))
  if init then return nil, "the options hold `--`, which set-kargs cannot pass: change them by hand" end
  local ia = require("vfioinit.ostree_initramfs")
  local sys, bind = ia.sysroot_args(ctx.ostree)
  local argv = { "ostree", "admin", "instutil", "set-kargs" }
  for _, a in ipairs(sys) do argv[#argv + 1] = a end
  for _, w in ipairs((cmdline.split(line))) do
    if w.key ~= "ostree" then argv[#argv + 1] = w.text end
  end
  return { argv = argv, bind = bind }
end

local T = toolbase.new({ name = "ostree_kargs", command = "ostree", current = M.current,
  apply = function() return {} end, undo = function() return {} end, order = 91 })
T.ostree, T.reads = true, M.reads  -- a target of ostree deployments only
T.undo = nil  -- reverted after the deployments are (ostree_initramfs first): revert_argvs

function T.detect(ctx)
  local o = ctx.ostree
  return o ~= nil and o.kind == "deployed" and o.tool == "ostree"
end

-- after apply: the default deployment's options with the record's operations
function T.regenerate(ctx)
  local ops = cmdtool.parse(ctx.read(T.record))
  if #ops == 0 then return nil end
  local line = M.current(ctx)
  if not line then return nil end
  local new = M.apply_ops(line, cmdtool.net(ops))
  if new == line then return nil end
  return set_kargs(ctx, new)
end

-- after revert (the record as it was): the same with the inverse operations
function T.revert_argvs(ctx, before)
  local ops = cmdtool.parse(before)
  if #ops == 0 then return {} end
  local line = M.current(ctx)
  if not line then return {} end
  local new = M.apply_ops(line, cmdtool.inverse(ops))
  if new == line then return {} end
  local c = set_kargs(ctx, new)
  return c and { c } or {}
end

-- shared with rpm_ostree_kargs.lua: the default deployment's line, and what is read back
T.current_line, T.reads_default = M.current, M.reads
return T
