-- Unified diff of two texts (Myers' O(ND) algorithm), in the format `patch` reads.
local M = {}

local function lines(text)
  local t = {}
  if not text or text == "" then return t, true end
  for l in text:gmatch("([^\n]*)\n") do t[#t + 1] = l end
  local tail = text:match("[^\n]+$")
  local eol = true
  if tail and text:sub(-1) ~= "\n" then t[#t + 1] = tail; eol = false end
  return t, eol
end

-- Edit script as a list of {op, aindex, bindex}: op is "=", "-" or "+".
local function myers(a, b)
  local n, m = #a, #b
  local max = n + m
  local v = { [1] = 0 }
  local trace = {}
  local found
  for d = 0, max do
    local snapshot = {}
    for k, x in pairs(v) do snapshot[k] = x end
    trace[d] = snapshot
    for k = -d, d, 2 do
      local x
      if k == -d or (k ~= d and (v[k - 1] or -1) < (v[k + 1] or -1)) then
        x = v[k + 1] or 0
      else
        x = (v[k - 1] or 0) + 1
      end
      local y = x - k
      while x < n and y < m and a[x + 1] == b[y + 1] do x, y = x + 1, y + 1 end
      v[k] = x
      if x >= n and y >= m then found = d; break end
    end
    if found then break end
  end
  -- backtrack
  local script = {}
  local x, y = n, m
  for d = found, 1, -1 do
    local vd = trace[d]
    local k = x - y
    local prev_k
    if k == -d or (k ~= d and (vd[k - 1] or -1) < (vd[k + 1] or -1)) then
      prev_k = k + 1
    else
      prev_k = k - 1
    end
    local prev_x = vd[prev_k] or 0
    local prev_y = prev_x - prev_k
    while x > prev_x and y > prev_y do
      script[#script + 1] = { "=", x, y }; x, y = x - 1, y - 1
    end
    if x == prev_x then script[#script + 1] = { "+", x, y }; y = y - 1
    else script[#script + 1] = { "-", x, y }; x = x - 1 end
  end
  while x > 0 and y > 0 do script[#script + 1] = { "=", x, y }; x, y = x - 1, y - 1 end
  -- reverse
  local out = {}
  for i = #script, 1, -1 do out[#out + 1] = script[i] end
  return out
end

-- unified(before, after, old_name, new_name [, context]) -> diff text ("" when equal)
function M.unified(before, after, old_name, new_name, context)
  context = context or 3
  if before == after then return "" end
  local a, aeol = lines(before)
  local b, beol = lines(after)
  local script = myers(a, b)
  local out = { "--- " .. old_name .. "\n", "+++ " .. new_name .. "\n" }
  local i = 1
  while i <= #script do
    -- find next change
    while i <= #script and script[i][1] == "=" do i = i + 1 end
    if i > #script then break end
    local start = math.max(1, i - context)
    local stop = i
    -- extend the hunk while changes are within 2*context lines
    local j = i
    while j <= #script do
      if script[j][1] ~= "=" then stop = j; j = j + 1
      else
        local k = j
        while k <= #script and script[k][1] == "=" do k = k + 1 end
        if k <= #script and k - j <= 2 * context then j = k else break end
      end
    end
    stop = math.min(#script, stop + context)
    local astart, bstart, alen, blen = nil, nil, 0, 0
    local body = {}
    for s = start, stop do
      local op, ai, bi = script[s][1], script[s][2], script[s][3]
      if op == "=" then
        astart = astart or ai; bstart = bstart or bi
        alen, blen = alen + 1, blen + 1
        body[#body + 1] = " " .. a[ai] .. "\n"
        if ai == #a and not aeol then body[#body + 1] = "\\ No newline at end of file\n" end
      elseif op == "-" then
        astart = astart or ai; bstart = bstart or (bi + 1)
        alen = alen + 1
        body[#body + 1] = "-" .. a[ai] .. "\n"
        if ai == #a and not aeol then body[#body + 1] = "\\ No newline at end of file\n" end
      else
        astart = astart or (ai + 1); bstart = bstart or bi
        blen = blen + 1
        body[#body + 1] = "+" .. b[bi] .. "\n"
        if bi == #b and not beol then body[#body + 1] = "\\ No newline at end of file\n" end
      end
    end
    local function range(s, l)
      if l == 0 then return (s - 1) .. ",0" end
      if l == 1 then return tostring(s) end
      return s .. "," .. l
    end
    out[#out + 1] = ("@@ -%s +%s @@\n"):format(range(astart, alen), range(bstart, blen))
    for _, l in ipairs(body) do out[#out + 1] = l end
    i = stop + 1
  end
  return table.concat(out)
end

return M
