-- The spec files' names (docs/INTERNALS.md "Layout"): `NN-<module>_spec.lua`, one file per
-- number, so a number names one spec in reports, docs and commit messages.
local h = require "helpers"

describe("spec/ file names", function()
  it("are NN-<name>_spec.lua, one file per number", function()
    local by, bad, n = {}, {}, 0
    for name in h.sh("ls " .. h.project .. "/spec"):gmatch("[^\n]+") do
      if name:match("_spec%.lua$") then
        n = n + 1
        local num = name:match("^(%d%d)%-[%l%d_]+_spec%.lua$")
        if not num then
          bad[#bad + 1] = name .. ": not NN-<name>_spec.lua"
        elseif by[num] then
          bad[#bad + 1] = name .. ": number " .. num .. " is also " .. by[num]
        else
          by[num] = name
        end
      end
    end
    assert.is_true(n > 50, "found " .. n .. " spec files")
    assert.are.same({}, bad)
  end)
end)
