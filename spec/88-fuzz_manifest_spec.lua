-- state.parse_manifest, the pure half of state.load that fuzz/manifest_parse.c drives.
-- (Stand-in split from load; the state rewrite owns the format.)
local h = require "helpers"
local state = require "vfioinit.state"
local vfioinit = require "vfioinit"

describe("state.parse_manifest", function()
  it("reads the manifest a real apply wrote as load does, and names a bad line", function()
    local r = h.make_root({ os = { ID = "arch" }, corpus = { ["/etc/mkinitcpio.conf"] = "mkinitcpio/mkinitcpio.conf" },
      exec = { "/usr/bin/mkinitcpio" } })
    finally(function() h.rm(r) end)
    assert.is_true(assert(vfioinit.plan({ root = r })):apply())
    local text = assert(h.readfile(r .. state.MANIFEST))
    local list = assert(state.parse_manifest(text))
    assert.are.same({ state.load(r) }, { list, select(2, state.parse_manifest(text)) })
    local bad = text .. "saved\tx\n"
    local nlines = select(2, bad:gsub("\n", ""))
    local l2, err = state.parse_manifest(bad)
    assert.is_nil(l2)
    assert.are.equal(nlines .. ": unreadable manifest line", err)
  end)
end)
