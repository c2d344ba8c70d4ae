-- regex.c: PCRE2 with string.find's shape.
local core = require "vfioinit.core"

describe("re_find()", function()
  it("should return start and end like string.find", function()
    assert.are.same({ 5, 7 }, { core.re_find("b+", "aaaabbbcc") })
    assert.are.same({ string.find("aaaabbbcc", "b+") }, { core.re_find("b+", "aaaabbbcc") })
  end)

  it("should return captures after the positions", function()
    assert.are.same({ 1, 23, "MODULES", "vfio vfio_pci" },
      { core.re_find("^(\\w+)=\\((.*)\\)", "MODULES=(vfio vfio_pci)") })
  end)

  it("should return false for a group that did not take part", function()
    assert.are.same({ 1, 1, false, "b" }, { core.re_find("(a)?(b)", "b") })
  end)

  it("should match an empty string", function()
    assert.are.same({ 1, 0 }, { core.re_find("", "abc") })
    assert.are.same({ 4, 3 }, { core.re_find("$", "abc") })
  end)

  it("should honour init, including negative init", function()
    assert.are.same({ 4, 4 }, { core.re_find("a", "abca", 2) })
    assert.are.same({ 4, 4 }, { core.re_find("a", "abca", -1) })
    assert.are.same({ 1, 1 }, { core.re_find("a", "abca", -100) })
    assert.are.same({ 5, 4 }, { core.re_find("", "abca", 5) })
    assert.is_nil(core.re_find("", "abca", 6))
    assert.is_nil(core.re_find("a", "abca", 5))
  end)

  it("should treat ^ as the subject start, not init", function()
    assert.is_nil(core.re_find("^b", "abc", 2))
    assert.are.same({ 2, 2 }, { core.re_find("\\Gb", "abc", 2) })
  end)

  it("should return nil when nothing matches", function()
    local n = select("#", core.re_find("x", "abc"))
    assert.are.equal(1, n)
    assert.is_nil(core.re_find("x", "abc"))
  end)

  it("should work bytewise (no UTF) and with NUL bytes", function()
    assert.are.same({ 1, 1 }, { core.re_find(".", "\233t\233") })
    assert.are.same({ 2, 3, "\0b" }, { core.re_find("(\\x00b)", "a\0bc") })
  end)

  it("should use PCRE2 features: classes, lookahead, alternation, flags", function()
    assert.are.same({ 1, 4, "vfio" }, { core.re_find("(?i)(VFIO)(?=_pci)", "vfio_pci") })
    assert.are.same({ 3, 11 }, { core.re_find("[0-9a-f]{4}:[0-9a-f]{4}", "x 1002:67df y") })
    assert.are.same({ 3, 8, "dracut" }, { core.re_find("\\b(mkinitcpio|dracut)\\b", "a dracut b") })
  end)

  it("should give the same results from the cache", function()
    for _ = 1, 3 do
      assert.are.same({ 2, 3, "bc" }, { core.re_find("(b.)", "abcd") })
    end
    collectgarbage()
    assert.are.same({ 2, 3, "bc" }, { core.re_find("(b.)", "abcd") })
  end)

  it("should raise on a bad pattern with PCRE2's message and offset", function()
    assert.has_error(function() core.re_find("a(b", "ab") end,
      "bad pattern 'a(b': missing closing parenthesis at offset 3")
    local ok, err = pcall(core.re_find, "[z-a]", "x")
    assert.is_false(ok)
    assert.matches("bad pattern '%[z%-a%]': .*range out of order.* at offset %d+", err)
  end)

  it("should raise on bad arguments", function()
    assert.has_error(function() core.re_find() end)
    assert.has_error(function() core.re_find("a") end)
    assert.has_error(function() core.re_find({}, "a") end)
    assert.has_error(function() core.re_find("a", "a", "x") end)
  end)
end)
