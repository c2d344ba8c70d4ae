-- vfioinit.state is five modules, one concern each (lua/vfioinit/state/): `require
-- "vfioinit.state"` gives every export of them, each name owned by one module, and the
-- manifest codec does no I/O (a round trip with every core.fs call failing).
local state = require "vfioinit.state"
local core = require "vfioinit.core"

local PARTS = { "lock", "manifest", "store", "journal", "revert" }

describe("vfioinit.state's modules", function()
  it("state re-exports each module's names, each name owned by one module", function()
    local owner, count = {}, 0
    for _, name in ipairs(PARTS) do
      local m = require("vfioinit.state." .. name)
      assert.are.equal("table", type(m))
      for k, v in pairs(m) do
        assert.is_nil(owner[k], ("%s is exported by %s and %s"):format(k, tostring(owner[k]), name))
        owner[k] = name
        count = count + 1
        assert.are.equal(v, state[k], k)
      end
    end
    local n = 0
    for _ in pairs(state) do n = n + 1 end
    assert.are.equal(count, n)
    for _, api in ipairs({ "with_lock", "parse_manifest", "serialize", "load", "save", "journal", "finish",
      "sweep", "tidy", "missing_dirs", "revert", "MANIFEST", "FINGERPRINTS", "LOCK_TIMEOUT" }) do
      assert.is_not_nil(owner[api], api)
    end
  end)

  it("the manifest codec reads and writes nothing", function()
    local manifest = require "vfioinit.state.manifest"
    local saved = {}
    for k, f in pairs(core.fs) do
      saved[k] = f
      core.fs[k] = function() error("core.fs." .. k .. " called by the codec") end
    end
    local ok, err = pcall(function()
      local list = { { kind = "saved", generator = "mkinitcpio", path = "/etc/mkinitcpio.conf",
        backup = manifest.BACKUPS .. "/1-_etc_mkinitcpio.conf", mode = 420, last = ("a"):rep(64), next = "-",
        flags = { edited = true } },
        { kind = "created", generator = "modprobe", path = "/etc/modprobe.d/vfio\tinit.conf", last = "absent",
          next = ("b"):rep(64), flags = {} } }
      local text = manifest.serialize(list)
      local back = assert(manifest.parse_manifest(text))
      assert.are.same(list, back)
      assert.is_nil(manifest.parse_manifest(text:sub(1, -2)))
    end)
    for k, f in pairs(saved) do core.fs[k] = f end
    assert(ok, err)
  end)
end)
