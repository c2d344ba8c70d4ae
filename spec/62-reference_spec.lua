-- The reference (issue 17 item 2): `ldoc` (config.ld) writes an entry, with typed parameters
-- and a Returns section, for every function `require "vfioinit"` exports and every method of
-- the Plan object; docs/CONTRACT.md, in the repository, names them all.
local h = require "helpers"
local q = h.q

local has_ldoc = select(2, h.sh("command -v ldoc >/dev/null 2>&1"))
local ldoc_it = has_ldoc and it or function(name) pending(name .. " (needs ldoc: apt-get install lua-ldoc)") end

-- The <dd> of each entry of an LDoc module page: name -> html.
local function entries(html)
  local t = {}
  for name, body in html:gmatch('<a name = "([^"]+)"></a>.-</dt>%s*<dd>(.-)</dd>') do t[name] = body end
  return t
end

-- Every exported function, by the name its entry has ("plan", "Plan:apply").
local function exported()
  local vfioinit = require "vfioinit"
  local list = {}
  for name, v in pairs(vfioinit) do
    if type(v) == "function" then list[#list + 1] = { name = name, fn = v, self = false } end
  end
  -- the Plan object's methods, from a real plan's metatable
  local root = h.make_root({ os = { ID = "arch" }, corpus = { ["/etc/mkinitcpio.conf"] = "mkinitcpio/mkinitcpio.conf" },
    exec = { "/usr/bin/mkinitcpio" } })
  local plan = assert(vfioinit.plan({ root = root }))
  h.rm(root)
  local mt = getmetatable(plan)
  for name, v in pairs(mt.__index) do
    if type(v) == "function" and not name:match("^_") then list[#list + 1] = { name = "Plan:" .. name, fn = v, self = true } end
  end
  table.sort(list, function(a, b) return a.name < b.name end)
  return list
end

describe("the LDoc reference", function()
  local dir, page
  setup(function()
    dir = h.tmpdir()
    local out, ok = h.sh(("cd %s && ldoc -d %s . 2>&1"):format(q(h.project), q(dir)))
    assert(ok, out)
    page = h.readfile(dir .. "/modules/vfioinit.html")
  end)
  teardown(function() h.rm(dir) end)

  ldoc_it("has an entry for every exported function and every Plan method", function()
    local have = entries(page)
    local missing = {}
    for _, e in ipairs(exported()) do
      if not have[e.name] then missing[#missing + 1] = e.name end
    end
    assert.are.same({}, missing)
  end)

  ldoc_it("gives each entry a type for every parameter the function takes and a typed Returns section", function()
    local have = entries(page)
    for _, e in ipairs(exported()) do
      local body = assert(have[e.name], e.name)
      local returns = body:match("<h3>Returns:</h3>(.*)$")
      assert.truthy(returns, e.name .. " has no Returns section")
      assert.truthy(returns:find('class="types"', 1, true), e.name .. " returns no type")
      local info = debug.getinfo(e.fn, "u")
      if info.nparams then
        local want = info.nparams - (e.self and 1 or 0)
        local params = body:match("<h3>Parameters:</h3>(.-)</ul>") or ""
        local n, typed = 0, 0
        for li in params:gmatch("<li>(.-)</li>") do
          n = n + 1
          if li:find('class="types"', 1, true) then typed = typed + 1 end
        end
        assert.are.equal(want, n, e.name .. ": parameters documented")
        assert.are.equal(n, typed, e.name .. ": a parameter has no type")
      end
    end
  end)

  ldoc_it("documents revert's second value and the rebuild command's PATH inside root", function()
    local have = entries(page)
    local function text(name) return (have[name]:gsub("<[^>]+>", ""):gsub("%s+", " ")) end
    assert.truthy(text("revert"):find("the second value, one entry per file", 1, true))
    assert.truthy(text("register_generator"):find("looked up on the rebuild's PATH inside root", 1, true))
    -- the module's description points at the contract in the repository
    assert.truthy(page:find("docs/CONTRACT.md", 1, true))
  end)

  ldoc_it("documents a policy's match field (the os-release IDs it is chosen for)", function()
    local pol = h.readfile(dir .. "/modules/vfioinit.policy.html"):gsub("<[^>]+>", ""):gsub("%s+", " ")
    assert.truthy(pol:find("match: the os-release IDs", 1, true), "vfioinit.policy.html does not describe match")
  end)
end)

describe("docs/CONTRACT.md", function()
  local contract = assert(h.readfile(h.project .. "/docs/CONTRACT.md"))

  it("names every exported function and Plan method", function()
    local missing = {}
    for _, e in ipairs(exported()) do
      local word = e.name:gsub("^Plan:", "plan:")
      if not contract:find(word .. "(", 1, true) and not contract:find(word .. "{", 1, true) then
        missing[#missing + 1] = e.name
      end
    end
    assert.are.same({}, missing)
  end)

  it("has the CLI's options, exit codes and JSON shapes", function()
    for _, opt in ipairs(require("vfioinit.cli").OPTIONS) do
      assert.truthy(contract:find(opt[1], 1, true), opt[1])
    end
    for _, heading in ipairs({ "## Exit status", "## JSON output", "## Lua API", "## CLI" }) do
      assert.truthy(contract:find("\n" .. heading, 1, true), heading)
    end
    assert.truthy(contract:find("revert", 1, true) and contract:find("second value", 1, true))
  end)
end)
