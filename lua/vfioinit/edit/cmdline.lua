-- The kernel command line as the kernel reads it (lib/cmdline.c next_arg, kernel/params.c):
-- words separated by blanks (the kernel's isspace: space, tab, newline, CR, VT, FF; a CRLF
-- file's CR is one), a double quote groups blanks into a word (`a="b c"`), no escapes;
-- `-` and `_` are the same in a parameter's name (`vfio-pci.ids` = `vfio_pci.ids`); a lone
-- `--` ends the kernel's parameters (the rest is init's). Pure text, no I/O: the bootloader
-- modules read and write the files that hold a command line.
local M = {}

-- The parameter name the kernel compares: dashes are underscores.
function M.norm(name) return (name:gsub("-", "_")) end

local function unquote(s) return (s:gsub('"', "")) end

-- Words of s in order: {text=, first=, last= (byte offsets in s), name=, value= (nil for a
-- bare flag), key= (normalized name)}; `init` = the `--` word when there is one (the
-- words after it are not returned: they belong to init).
function M.split(s)
  local words, i, n = {}, 1, #s
  while i <= n do
    local a = s:find("[^ \t\n\r\v\f]", i)
    if not a then break end
    local j, quoted = a, false
    while j <= n do
      local c = s:sub(j, j)
      if c == '"' then quoted = not quoted
      elseif not quoted and c:match("[ \t\n\r\v\f]") then break end
      j = j + 1
    end
    local text = s:sub(a, j - 1)
    if text == "--" then return words, { first = a, last = j - 1 } end
    local name, value = text:match("^([^=]*)=(.*)$")
    name = unquote(name or text)
    words[#words + 1] = { text = text, first = a, last = j - 1, name = name,
      value = value and unquote(value), key = M.norm(name) }
    i = j
  end
  return words
end

-- The last word naming parameter `name` (the kernel acts on the last one), or nil.
function M.find(s, name)
  local key, hit = M.norm(name), nil
  for _, w in ipairs(M.split(s)) do if w.key == key then hit = w end end
  return hit
end

local function list_of(v)
  local t = {}
  for part in (v or ""):gmatch("[^,]+") do t[#t + 1] = part end
  return t
end

local function contains(list, x, fold)
  for _, v in ipairs(list) do
    if v == x or (fold and v:lower() == x:lower()) then return true end
  end
  return false
end

-- What `want` ({name=, value=, list=bool, refuse={values}}) needs done to s: nil when s
-- already has it, else {word=, text=} (replace word by text; word nil = append text), or
-- nil, nil, reason when s holds a value vfioinit must not override (`intel_iommu=off`).
local function step(s, want)
  local w = M.find(s, want.name)
  if not w then return { text = want.name .. (want.value and ("=" .. want.value) or "") } end
  local have = list_of(w.value)
  for _, bad in ipairs(want.refuse or {}) do
    if contains(have, bad, true) then
      return nil, nil, ("the command line sets %s; vfioinit does not override it"):format(w.text)
    end
  end
  if not want.list then
    if w.value == want.value then return nil end
    return nil, nil, ("the command line sets %s, vfioinit needs %s=%s"):format(w.text, want.name, want.value)
  end
  local missing = {}
  for _, v in ipairs(list_of(want.value)) do
    if not contains(have, v, true) and not contains(missing, v, true) then missing[#missing + 1] = v end
  end
  if #missing == 0 then return nil end
  -- keep the user's spelling of the name; the merged list goes back unquoted (no blanks in it)
  local merged = #have > 0 and (table.concat(have, ",") .. "," .. table.concat(missing, ","))
    or table.concat(missing, ",")
  return { word = w, text = w.name .. "=" .. merged }
end

-- s with every parameter of `wants` present (in order; each {name=, value=, list=,
-- refuse=}), words the user wrote kept byte for byte and in place; new words go before a
-- `--`, else at the end. Returns new_s, added (list of the words written) or nil, reason.
function M.add(s, wants)
  local added = {}
  for _, want in ipairs(wants) do
    local e, _, why = step(s, want)
    if why then return nil, why end
    if e then
      if e.word then
        s = s:sub(1, e.word.first - 1) .. e.text .. s:sub(e.word.last + 1)
      else
        local _, init = M.split(s)
        local at = init and init.first or #s + 1
        local before, after = s:sub(1, at - 1), s:sub(at)
        local sep = (before == "" or before:match("[ \t]$")) and "" or " "
        s = before .. sep .. e.text .. (init and " " or "") .. after
      end
      added[#added + 1] = e.text
    end
  end
  return s, added
end

-- The values of every list parameter `name` in s (the kernel's words only), lowercased, as
-- a set: what `vfio-pci.ids=a,b` names.
function M.values(s, name)
  local key, set = M.norm(name), {}
  for _, w in ipairs(M.split(s)) do
    if w.key == key then for _, v in ipairs(list_of(w.value)) do set[v:lower()] = true end end
  end
  return set
end

-- s with the values in `drop` (a set, lowercased) taken out of every list parameter `name`
-- (the kernel's words only); a word left with no value goes, with the blank before it.
-- The rest of s is kept byte for byte.
function M.drop_values(s, name, drop)
  local key, list = M.norm(name), M.split(s)
  for i = #list, 1, -1 do
    local w = list[i]
    if w.key == key then
      local keep, gone = {}, false
      for _, v in ipairs(list_of(w.value)) do
        if drop[v:lower()] then gone = true else keep[#keep + 1] = v end
      end
      if gone and #keep > 0 then
        s = s:sub(1, w.first - 1) .. w.name .. "=" .. table.concat(keep, ",") .. s:sub(w.last + 1)
      elseif gone then
        local a, b = w.first, w.last
        local lead = s:sub(1, a - 1):match("[ \t]*$")
        if #lead > 0 then a = a - #lead else b = b + #(s:sub(b + 1):match("^[ \t]*")) end
        s = s:sub(1, a - 1) .. s:sub(b + 1)
      end
    end
  end
  return s
end

-- True when s carries every parameter of wants (what verify asks of a boot entry's line).
function M.has(s, wants)
  for _, want in ipairs(wants) do
    local e, _, why = step(s, want)
    if e or why then return false, want.name end
  end
  return true
end

return M
