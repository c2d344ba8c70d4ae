local core = require "vfioinit.core"
local H = require "helpers"

-- the assignments named `name` in scan result r
local function find(r, name)
  local t = {}
  for _, a in ipairs(r) do if a.name == name then t[#t + 1] = a end end
  return t
end

local function values(items)
  local t = {}
  for _, it in ipairs(items) do t[#t + 1] = it.value end
  return t
end

describe("shell_scan()", function()
  it("should raise on a non-string argument", function()
    assert.has_error(function() core.scan.shell({}) end)
    assert.has_error(function() core.scan.shell() end)
  end)

  it("should return an empty list for empty text", function()
    local r = assert(core.scan.shell(""))
    assert.are.equal(0, #r)
  end)

  it("should give byte offsets of the statement, the parens and each item", function()
    local text = "# c\nMODULES=(a  \"b c\" 'd')\n"
    local r = assert(core.scan.shell(text))
    local a = find(r, "MODULES")[1]
    assert.are.equal("MODULES=(a  \"b c\" 'd')", text:sub(a.first, a.last))
    assert.are.equal(2, a.line)
    assert.is_true(a.array)
    assert.is_false(a.append)
    assert.are.equal("(", text:sub(a.open, a.open))
    assert.are.equal(")", text:sub(a.close, a.close))
    assert.are.same({ "a", "b c", "d" }, values(a.items))
    assert.are.same({ "a", "\"b c\"", "'d'" },
      { text:sub(a.items[1].first, a.items[1].last), text:sub(a.items[2].first, a.items[2].last),
        text:sub(a.items[3].first, a.items[3].last) })
    assert.is_false(a.items[1].quoted)
    assert.is_true(a.items[2].quoted)
  end)

  it("should read multi-line arrays with comments inside and after", function()
    local text = "MODULES=(\n  ext4 # root\n  # (not this)\n  nvidia)   # gpu\nX=1\n"
    local r = assert(core.scan.shell(text))
    local a = find(r, "MODULES")[1]
    assert.are.same({ "ext4", "nvidia" }, values(a.items))
    assert.are.same({ 2, 4 }, { a.items[1].line, a.items[2].line })
    assert.are.equal(1, #find(r, "X"))
    assert.are.equal(5, find(r, "X")[1].line)
  end)

  it("should mark += as append", function()
    local r = assert(core.scan.shell("MODULES+=(vfio)\nforce_drivers+=\" a b \"\n"))
    assert.is_true(r[1].append)
    assert.is_true(r[2].append)
    assert.are.same({ "a", "b" }, values(r[2].items))
    assert.are.equal(" a b ", r[2].value)
    assert.are.equal('"', r[2].quote)
  end)

  it("should split a scalar's words with offsets into the quoted string", function()
    local text = 'MODULES="i915  vfio-pci"\n'
    local r = assert(core.scan.shell(text))
    local a = r[1]
    assert.is_false(a.array)
    assert.are.equal("i915  vfio-pci", a.value)
    assert.are.same({ "i915", "vfio-pci" }, values(a.items))
    assert.are.equal("vfio-pci", text:sub(a.items[2].first, a.items[2].last))
  end)

  it("should follow bash quoting: escapes in double quotes, literal single quotes, continuations", function()
    local text = [[A="x\"y\$z\q"
B='a\b'
C=a\ b
D="one \
two"
E=$'t\tu'
]]
    local r = assert(core.scan.shell(text))
    assert.are.equal('x"y$z\\q', find(r, "A")[1].value)
    assert.is_false(find(r, "A")[1].dynamic)
    assert.are.equal("a\\b", find(r, "B")[1].value)
    assert.are.equal("a b", find(r, "C")[1].value)
    assert.are.equal("one two", find(r, "D")[1].value)
    assert.are.equal("t\tu", find(r, "E")[1].value)
    assert.is_true(find(r, "E")[1].dynamic)
  end)

  it("should flag $, backticks and globs as dynamic", function()
    local r = assert(core.scan.shell("A=$X\nB=\"${Y:-1} z\"\nC=(`ls` k)\nD=(nvidia?)\nE=(plain)\nF=\"$(echo ')')\"\n"))
    for _, n in ipairs({ "A", "B", "C", "D", "F" }) do
      assert.is_true(find(r, n)[1].dynamic, n)
    end
    assert.is_false(find(r, "E")[1].dynamic)
    assert.are.equal("$(echo ')')", find(r, "F")[1].value)
  end)

  it("should skip commands, functions, if-blocks and here-documents", function()
    local text = [[
source /etc/foo
if [ -e /x ]; then
  MODULES=(in_if)
fi
f() { MODULES=(in_func); }
for m in a b; do MODULES+=("$m"); done
X=1 somecommand
cat <<EOF
MODULES=(in_heredoc)
EOF
true && MODULES+=(after_and)
MODULES=(real)
]]
    local r = assert(core.scan.shell(text))
    local m = find(r, "MODULES")
    assert.are.equal(1, #m)
    assert.are.same({ "real" }, values(m[1].items))
    assert.are.equal(0, #find(r, "X"))
    assert.is_table(r.skipped)
    assert.is_true(#r.skipped > 0)
  end)

  it("should keep assignments separated by ; and several on one line", function()
    local r = assert(core.scan.shell("A=1; B=(x y) C=z\n"))
    assert.are.same({ "A", "B", "C" }, { r[1].name, r[2].name, r[3].name })
  end)

  local bad = {
    { "MODULES=(a b\nc\n", 1, "unterminated array" },
    { "X=1\n\nMODULES=(\n  vfio\n", 3, "unterminated array" },
    { "A=1\nB='abc\n\n", 2, "unterminated ' quote" },
    { "A=1\nB=\"abc\\\"\n\n", 2, "unterminated \" quote" },
    { "A=(a\n\"b\n)\n", 2, "unterminated \" quote" },
    { "A=$(echo\n", 1, "unterminated $(" },
  }
  for i, c in ipairs(bad) do
    it(("should report %q at line %d (case %d)"):format(c[3], c[2], i), function()
      local r, msg, line = core.scan.shell(c[1])
      assert.is_nil(r)
      assert.are.equal(c[2], line)
      assert.truthy(msg:find(c[3], 1, true), msg)
    end)
  end

  -- bash is the oracle: the items of every static array equal what bash reads
  local oracle = {
    "MODULES=(a b c)",
    "MODULES=(\n  'x y'  # c\n  \"q\\\"r\"\n  e\\ f\n)",
    "MODULES=(a\\\nb c)",
    "MODULES=(\"a\"'b'c d)",
    "MODULES=(# only a comment\n)",
    "MODULES=(a#b c)",
    "MODULES=(\"\" x)",
  }
  for i, text in ipairs(oracle) do
    it(("should read arrays as bash does (case %d)"):format(i), function()
      local dir = H.tmpdir()
      finally(function() H.rm(dir) end)
      H.writefile(dir .. "/c.conf", text .. "\n")
      local r = assert(core.scan.shell(text .. "\n"))
      assert.are.same(H.bash_array({ dir .. "/c.conf" }, "MODULES"), values(find(r, "MODULES")[1].items))
    end)
  end
end)
