-- No dead exports (issue 24): every function a module under lua/vfioinit exports is called
-- from somewhere: another file through the name it requires the module by (`local x =
-- require "m"`, `util.lazy "m"`, `require("m").f`), its own module (M.f), a spec, an example,
-- a tool, a fuzz harness; or it is public (named in docs/CONTRACT.md). A plugin's functions are its interface,
-- called through a plugin table (`gen.ukis`, `t.readback`): for a module under generators/,
-- boot/loaders/ or policies/, or one loaded by a name held in a list (boot/cmdline's HOOKED),
-- any `.f`/`:f` elsewhere counts.
local h = require "helpers"

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

-- lua/vfioinit/a/b.lua -> vfioinit.a.b (init.lua: its folder)
local function module_of(path)
  return (path:match("^lua/(.*)%.lua$"):gsub("/", "."):gsub("%.init$", ""))
end

-- What one file uses: uses[module][name] through its require names and inline requires;
-- fields: every `.name`/`:name`; listed: the
-- module names it holds as plain strings (not required there).
local function scan(path, text)
  local s = { path = path, uses = {}, fields = {}, listed = {} }
  local alias = {}
  for a, m in text:gmatch("([%w_]+)%s*=%s*[%w_.]*%s*%(?%s*[\"'](vfioinit[%w_.]*)[\"']") do alias[a] = m end
  local function use(m, name)
    s.uses[m] = s.uses[m] or {}
    s.uses[m][name] = true
    local parent = m == "vfioinit.state" and m  -- re-exports its parts: state.x is one of them
    if parent then s.uses[parent .. ".*"] = s.uses[parent .. ".*"] or {}; s.uses[parent .. ".*"][name] = true end
  end
  for m, name in text:gmatch("require%s*%(?%s*[\"'](vfioinit[%w_.]*)[\"']%s*%)?%s*[.:]([%w_]+)") do use(m, name) end
  for a, name in text:gmatch("([%w_]+)[.:]([%a_][%w_]*)") do
    if alias[a] then use(alias[a], name) end
    s.fields[name] = true
  end
  -- a harness calling require(FUZZ_MODULE)[FUZZ_FUNC] (fuzz/*.c)
  local fm, ff = text:match('FUZZ_MODULE "([^"]+)"'), text:match('FUZZ_FUNC "([^"]+)"')
  if fm and ff then use(fm, ff) end
  for pre, m in text:gmatch("([%w_.]*)%s*%(?%s*[\"'](vfioinit%.[%w_.]+)[\"']") do
    if not pre:match("require$") and not pre:match("lazy$") then s.listed[m] = true end
  end
  return s
end

describe("exports under lua/vfioinit", function()
  it("are each used somewhere, or public", function()
    local scans, sources = {}, {}
    local list = h.sh("cd " .. h.project .. " && git ls-files lua bin spec examples contrib tools fuzz bench")
    for p in list:gmatch("[^\n]+") do
      if not p:match("^spec/fixtures/") and not p:match("^fuzz/corpus/") then
        local text = read(h.project .. "/" .. p)
        scans[#scans + 1] = scan(p, text)
        if p:match("^lua/vfioinit/.*%.lua$") then sources[#sources + 1] = { path = p, text = text } end
      end
    end
    local contract = read(h.project .. "/docs/CONTRACT.md")
    local listed = {}
    for _, s in ipairs(scans) do for m in pairs(s.listed) do listed[m] = true end end
    local dead, n = {}, 0
    for _, f in ipairs(sources) do
      local mod = module_of(f.path)
      local plugin = f.path:match("/generators/") or f.path:match("/boot/loaders/") or f.path:match("/policies/")
        or listed[mod]
      local names = {}
      for name in f.text:gmatch("\nfunction M[.:]([%w_]+)") do names[#names + 1] = name end
      for name in f.text:gmatch("\nM%.([%w_]+)%s*=%s*function") do names[#names + 1] = name end
      for _, name in ipairs(names) do
        n = n + 1
        local _, own = f.text:gsub("%f[%w_]M[.:]" .. name .. "%f[^%w_]", "")
        local used = own > 1 or mod == "vfioinit" or contract:find("%f[%w_]" .. name .. "%f[^%w_]") ~= nil
        for _, s in ipairs(scans) do
          if used then break end
          if s.path ~= f.path then
            local state = mod:match("^vfioinit%.state%.") and s.uses["vfioinit.state.*"]
            used = (s.uses[mod] and s.uses[mod][name]) or (state and state[name]) or (plugin and s.fields[name])
              or false
          end
        end
        if not used then dead[#dead + 1] = mod .. "." .. name end
      end
    end
    assert.is_true(n > 200, n .. " exports found")
    assert.are.same({}, dead)
  end)
end)
