-- The parsers the fuzz harnesses drive (fuzz/lua_parser.h), checked against their oracle,
-- and the harness machinery itself (tools/fuzz --selftest).
local h = require "helpers"
local modprobe = require "vfioinit.modprobe"
local vfioinit = require "vfioinit"

-- modprobe --show-config for the .conf files of `dir`, minus what it prints for an empty
-- directory (kernel command line options, comments), as a sorted list of lines; and the
-- line numbers kmod reported as "ignoring bad line".
local function kmod_view(dir)
  local function show(d)
    local out = h.sh("modprobe -C " .. h.q(d) .. " --show-config 2>&1")
    local set, bad = {}, {}
    for l in out:gmatch("[^\n]+") do
      local n = l:match(" line (%d+): ignoring bad line")
      if n then bad[#bad + 1] = tonumber(n)
      elseif not l:match("^#") and not l:match("^libkmod:") then set[l] = true end
    end
    return set, bad
  end
  local empty = h.tmpdir()
  local base = show(empty)
  h.rm(empty)
  local set, bad = show(dir)
  local list = {}
  for l in pairs(set) do if not base[l] then list[#list + 1] = l end end
  table.sort(list)
  return list, bad
end

-- Our directives in --show-config's shape (module names with `_`, as kmod prints them).
local function our_view(directives)
  local norm = function(m) return (m:gsub("-", "_")) end
  local list = {}
  for _, d in ipairs(directives) do
    local args = table.concat(d.args, " ")
    if d.cmd == "blacklist" then list[#list + 1] = "blacklist " .. norm(d.module)
    elseif d.cmd == "alias" then list[#list + 1] = ("alias %s %s"):format(d.name, norm(d.module))
    elseif d.cmd == "softdep" then  -- kmod prints "pre: a bpost: c" (no space before post:)
      local s = "softdep " .. norm(d.module)
      if #d.pre > 0 then s = s .. " pre: " .. table.concat(d.pre, " ") end
      if #d.post > 0 then s = s .. (#d.pre > 0 and "" or " ") .. "post: " .. table.concat(d.post, " ") end
      list[#list + 1] = s
    else list[#list + 1] = ("%s %s %s"):format(d.cmd, norm(d.module), args) end
  end
  table.sort(list)
  return list
end

describe("modprobe.parse", function()
  local dir
  before_each(function() dir = h.tmpdir() end)
  after_each(function() h.rm(dir) end)

  -- continuation, escapes, a continued comment, softdep words before pre:, bad lines
  local TRICKY = table.concat({
    "# a comment continues \\", "blacklist hidden_by_the_comment",
    "blacklist  snd-pcsp", "options vfio-pci ids=10de:1b80,\\", "10de:10f0 disable_vga=1",
    "softdep nouveau junk pre: vfio-pci  post: x y", "install foo /bin/echo a\\\\b \\$x",
    "alias pci:v000010DEd* vfio-pci", "bogus line", "options lonely", "remove bar /bin/true",
    "\tblacklist tabbed", "" }, "\n")

  it("reads modprobe.d the way modprobe does (modprobe --show-config is the oracle)", function()
    h.writefile(dir .. "/a.conf", TRICKY)
    local want, kmod_bad = kmod_view(dir)
    local list, skipped = modprobe.parse(TRICKY, true)
    assert.are.same(want, our_view(list))
    local bad = {}
    for i, s in ipairs(skipped) do bad[i] = tonumber(s:match("^(%d+): ")) end
    assert.are.same(kmod_bad, bad)
  end)

  it("reads this system's own modprobe.d files like modprobe does", function()
    local files = h.sh("ls /lib/modprobe.d/*.conf /etc/modprobe.d/*.conf 2>/dev/null")
    local n = 0
    for f in files:gmatch("[^\n]+") do
      local text = assert(h.readfile(f))
      h.writefile(dir .. "/" .. f:match("[^/]+$"), text)
      local list = assert(modprobe.parse(text))  -- strict: stock files have no bad line
      n = n + #list
    end
    if n == 0 then return pending("no modprobe.d files on this machine") end
    local all = {}
    for f in h.sh("ls " .. h.q(dir)):gmatch("[^\n]+") do
      for _, d in ipairs(assert(modprobe.parse(h.readfile(dir .. "/" .. f)))) do all[#all + 1] = d end
    end
    assert.are.same((kmod_view(dir)), our_view(all))
  end)

  it("reads back the file vfioinit writes", function()
    local text = modprobe.content({ "10de:1b80", "10de:10f0" }, { "nouveau", "snd_hda_intel" })
    h.writefile(dir .. "/vfioinit.conf", text)
    assert.are.same((kmod_view(dir)), our_view(assert(modprobe.parse(text))))
  end)

  it("returns nil and 'LINE: reason' for the first line modprobe would ignore", function()
    local list, err = modprobe.parse(TRICKY)
    assert.is_nil(list)
    h.writefile(dir .. "/a.conf", TRICKY)
    local _, kmod_bad = kmod_view(dir)
    assert.are.equal(kmod_bad[1], tonumber(err:match("^(%d+): unknown command 'bogus'")), err)
    -- a continued line is named by its first line
    list, err = modprobe.parse("\n\nblacklist \\\n\n")
    assert.is_nil(list)
    assert.truthy(err:match("^3: blacklist needs a module$"), err)
  end)

  it("never raises on hostile input", function()
    for _, s in ipairs({ "", "\\", "\\\\\\", ("\\"):rep(100001), "#\\", "options\0x y\0", "\n\n\n",
                         ("softdep a pre: "):rep(5000), ("a\\\n"):rep(3000) }) do
      local ok, list, err = pcall(modprobe.parse, s)
      assert.is_true(ok, list)
      assert.is_true(type(list) == "table" or (list == nil and type(err) == "string"))
    end
  end)
end)

describe("modprobe.conflicts with continued lines", function()
  local r
  before_each(function()
    r = h.make_root({ os = { ID = "debian", VERSION_ID = '"12"' },
      corpus = { ["/etc/initramfs-tools/modules"] = "initramfs-tools/modules" },
      exec = { "/usr/sbin/update-initramfs", "/etc/kernel/postinst.d/initramfs-tools" } })
    h.install_kernel(r, "cloud")
  end)
  after_each(function() h.rm(r) end)

  it("sees a blacklist split over two lines, and ignores one inside a continued comment", function()
    h.writefile(r .. "/etc/modprobe.d/gpu.conf", "# old: \\\nblacklist vfio-pci\nblacklist \\\n  vfio-pci\n")
    local p, err = vfioinit.plan({ root = r, ids = "1af4:1000" })
    assert.is_nil(p)
    assert.truthy(err:match("^/etc/modprobe%.d/gpu%.conf:3: blacklists"), err)
  end)
end)

describe("grub.edit_default (fuzz/grub_vars.c)", function()
  local grub = require "vfioinit.boot.loaders.grub"
  local L = "GRUB_CMDLINE_LINUX"
  local D = "GRUB_CMDLINE_LINUX_DEFAULT"

  it("ends on every input with changes or nil and a message naming the file, never raising", function()
    local inputs = { "", "\r", "\0", "$", D .. "=", D .. '="', D .. "=$" .. L, D .. '="$' .. D .. '"',
      L .. '="vfio-pci.ids=1"\n' .. D .. '="vfio-pci.ids=2 $' .. L .. ' vfio-pci.ids=3 $' .. L .. '"\n',
      D .. '="${' .. L .. '"\n', D .. '="a$' .. L .. '"\n', (D .. '+=" $' .. D .. '"\n'):rep(64),
      D .. '="x"\n' .. (D .. '="' .. ("$" .. D .. " "):rep(300) .. '"\n'):rep(3),
      L .. "='x=\"a'\n" .. D .. "='b\" vfio-pci.ids=1'\n", D .. '="intel_iommu=on -- intel_iommu=off"\r\n' }
    for _, text in ipairs(inputs) do
      local t0 = os.clock()
      local ok, list, err = pcall(grub.edit_default, text)
      assert.is_true(ok, list)
      assert.is_true(os.clock() - t0 < 5, text)
      assert.is_true(type(list) == "table" or (list == nil and type(err) == "string"), text)
      if list == nil then assert.matches("^/etc/default/grub", err) end
    end
  end)
end)

describe("tools/fuzz --selftest", function()
  it("reports a harness whose parser raises as a crash", function()
    if not (h.sh("command -v clang") or ""):match("clang") then return pending("clang not installed") end
    -- the fuzzer carries clang's ASan runtime: not tools/test's preloaded gcc one
    local out, ok = h.sh("env -u LD_PRELOAD -u ASAN_OPTIONS FUZZ_BUILD="
      .. h.q(h.project .. "/build-fuzz-selftest") .. " tools/fuzz --selftest 2>&1")
    assert.is_true(ok, out)
    assert.truthy(out:match("fuzz selftest: a raising parser is reported as a crash "
      .. "%(fuzz manifest_parse: %d+ execs in %d+ s, [1-9]%d* crashes, artifact "), out)
  end)
end)
