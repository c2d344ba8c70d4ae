-- core.scan.yaml: the booster.yaml subset scanner, checked against PyYAML (the oracle
-- reads every input; scalar values, flow lists and error lines must agree).
local h = require "helpers"
local core = require "vfioinit.core"

local PY = "/usr/bin/python3"
local ORACLE = h.project .. "/spec/fixtures/booster/oracle.py"
local have_py = select(2, h.sh(PY .. " -c 'import yaml' 2>/dev/null"))
local py_it = have_py and it or pending

local function unhex(s)
  if s == "-" then return "" end
  return (s:gsub("%x%x", function(x) return string.char(tonumber(x, 16)) end))
end

-- Run the oracle over many texts at once: returns, per text, {err=line} or an
-- ordered list of {key=, kind=, value=}.
local function oracle(texts)
  local dir = h.tmpdir()
  local paths = {}
  for i, t in ipairs(texts) do
    paths[i] = dir .. "/" .. i .. ".yaml"
    local f = assert(io.open(paths[i], "wb")); f:write(t); f:close()
  end
  local args = {}
  for i, p in ipairs(paths) do args[i] = h.q(p) end
  local out, ok = h.sh(PY .. " " .. h.q(ORACLE) .. " scan " .. table.concat(args, " ") .. " 2>&1")
  h.rm(dir)
  assert(ok, out)
  local res, cur = {}, nil
  for line in out:gmatch("([^\n]*)\n") do
    local p = line:match("^== (.*)$")
    if p then
      cur = {}
      res[tonumber(p:match("/(%d+)%.yaml$"))] = cur
    else
      local l = line:match("^ERR (%d+)$")
      if l then cur.err = tonumber(l)
      else
        local k, kind, v = line:match("^(%S+) (%u) (%S+)$")
        assert(k, line)
        cur[#cur + 1] = { key = unhex(k), kind = kind, value = unhex(v) }
      end
    end
  end
  return res
end

-- Compare one scan with the oracle's reading; returns true or false, why.
local function agrees(text, got, want)
  if want.err then return false, "PyYAML refuses it (line " .. want.err .. ")" end
  if #got ~= #want then return false, ("%d keys, PyYAML %d"):format(#got, #want) end
  for i, e in ipairs(got) do
    local w = want[i]
    if e.key ~= w.key then return false, ("key %q, PyYAML %q"):format(e.key, w.key) end
    if e.style == "plain" or e.style == "single" or e.style == "double" then
      if w.kind ~= "S" or e.value ~= w.value then
        return false, ("%s: %q, PyYAML %q"):format(e.key, tostring(e.value), w.value)
      end
    elseif e.style == "empty" then
      if w.kind ~= "S" or w.value ~= "" then return false, e.key .. ": empty, PyYAML not" end
    elseif e.style == "flow" and e.items then
      if w.kind ~= "L" or table.concat(e.items, "\31") ~= w.value then
        return false, ("%s: [%s], PyYAML %q"):format(e.key, table.concat(e.items, ","), w.value)
      end
    end
    -- offsets: the entry starts with its key at column 0, the value span is inside it
    if e.first < 1 or e.last > #text or e.first > e.last then return false, e.key .. ": bad first/last" end
    local bom = e.first == 4 and text:sub(1, 3) == "\239\187\191"
    if e.first ~= 1 and not bom and text:sub(e.first - 1, e.first - 1) ~= "\n" then return false, e.key .. ": first not at line start" end
    if e.value_first and (e.value_first <= e.colon or e.value_last > e.last) then
      return false, e.key .. ": value span outside the entry"
    end
    if text:sub(e.colon, e.colon) ~= ":" then return false, e.key .. ": colon offset" end
  end
  return true
end

-- Real-world shapes of booster.yaml (docs/manpage.md sample, Arch wiki, bug reports)
-- plus YAML corners the scanner must read exactly like a YAML parser.
local VALID = {
  { "corpus", nil },  -- filled from the shared corpus below
  { "manpage sample", [[
network:
  interfaces: enp0s31f2,2e:1d:61:30:a3:63
  dhcp: on
  # either dhcp above or static configuration below can be used
  ip: 10.0.2.15/24
  gateway: 10.0.2.255
  dns_servers: 192.168.1.1,8.8.8.8
universal: false
modules: -*,hid_apple,kernel/sound/usb/,kernel/fs/btrfs/btrfs.ko,kernel/lib/crc4.ko.xz
compression: zstd
mount_timeout: 5m6s
strip: true
extra_files: vim,/usr/share/vim/vim82/,fsck,fsck.ext4
vconsole: true
enable_lvm: true
enable_mdraid: true
]] },
  { "empty file", "" },
  { "only comments", "# booster config\n\n# nothing here\n" },
  { "document start", "---\nmodules_force_load: amdgpu\n" },
  { "document start with comment", "--- # booster\nuniversal: true\n" },
  { "no trailing newline", "compression: zstd\nmodules_force_load: nvidia,nvidia_modeset" },
  { "CRLF line ends", "compression: zstd\r\nmodules_force_load: i915\r\n" },
  { "trailing comment", "modules_force_load: amdgpu # for early KMS\nstrip: true\n" },
  { "hash without space is text", "extra_files: a#b,c\n" },
  { "single quoted", "modules_force_load: 'vfio,vfio_pci'\n" },
  { "single quote escape", "mount_timeout: 'it''s 5s'\n" },
  { "double quoted", "modules_force_load: \"vfio,vfio-pci\"\n" },
  { "double quoted escapes", "a: \"tab\\tnl\\nq\\\"bs\\\\u\\u00e9x\\x41\"\n" },
  { "double quoted folded", "a: \"one\n  two\n\n  three\"\nb: c\n" },
  { "double escaped line break", "a: \"abc\\\n   def\"\n" },
  { "single quoted folded", "a: 'one\n   two'\n" },
  { "quoted empty", "a: ''\nb: \"\"\n" },
  { "empty value", "modules_force_load:\nstrip: true\n" },
  { "empty value with comment", "modules_force_load: # none yet\nstrip: true\n" },
  { "empty value last line", "strip: true\nmodules_force_load:" },
  { "plain continuation", "extra_files: busybox,\n  fsck,fsck.ext4\nstrip: true\n" },
  { "plain continuation blank line", "a: one\n  two\n\n  three\n" },
  { "nested network", "network:\n  dhcp: true\n  interfaces: eth0\nmodules_force_load: vfio\n" },
  { "nested with blank and comment", "network:\n  dhcp: true\n\n  # static\n  # ip: 1.2.3.4\nstrip: false\n" },
  { "block sequence indented", "x:\n  - a\n  - b\ny: z\n" },
  { "block sequence at column 0", "x:\n- a\n- b\ny: z\n" },
  { "flow sequence", "x: [a, 'b', \"c\"]\n" },
  { "flow sequence multi-line", "x: [a,\n  b, c]\ny: d\n" },
  { "flow sequence trailing comma", "x: [a, b, ]\n" },
  { "flow sequence empty", "x: []\n" },
  { "flow mapping", "x: {a: 1, b: 2}\ny: z\n" },
  { "flow nested", "x: [a, [b, c]]\n" },
  { "block scalar literal", "x: |\n  line one\n  # not a comment\ny: z\n" },
  { "block scalar folded", "x: >-\n  a\n  b\ny: z\n" },
  { "plain value continued with a dash", "a: b\n  - c\n" },
  { "spaces before colon", "a  : b\n" },
  { "quoted key", "\"a b\": c\n'd': e\n" },
  { "key with dash", "enable-x: true\n-y: 1\n" },
  { "colon inside value", "a: http://example.com:8080/x\n" },
  { "url-like key value", "a: b:c\n" },
  { "utf-8", "a: héllo wörld\n" },
  { "byte order mark", "\239\187\191a: b\n" },
  { "value with leading dash", "modules: -*,ext4\n" },
  { "booster.init.yaml shape", [[
moduledependencies:
    vfio_pci:
        - vfio
        - vfio_pci_core
modulesforceload:
    - vfio
    - vfio_iommu_type1
    - vfio_pci
modprobeoptions:
    vfio_pci: ids=10de:1b80
kernel: 6.1.0-18-amd64
mounttimeout: 180
]] },
}

-- Bad input: the error line, and whether PyYAML (more lenient than go-yaml here) accepts it.
local BAD = {
  { "tab indentation", "network:\n\tdhcp: on\n", 2 },
  { "tab indentation of a key", "\tmodules: x\n", 1 },
  { "unterminated double quote", "a: b\nmodules_force_load: \"vfio,\nstrip: true\n", 2 },
  { "unterminated single quote", "a: 'x\n", 1 },
  { "not key: value", "universal: false\njust some words\n", 2 },
  { "key without space after colon", "a:b\n", 1 },
  { "duplicate key", "strip: true\nmodules: a\nstrip: false\n", 3, pyyaml_ok = true },
  { "mapping value in plain", "a: b: c\n", 1 },
  { "top-level sequence", "- a\n- b\n", 1 },
  { "unterminated flow", "a: [x, y\nb: c\n", 1 },
  { "bad escape", "a: \"x\\q\"\n", 1 },
  { "text after quoted", "a: 'x' y\n", 1 },
  { "indented first line", "  a: b\n", 1, pyyaml_ok = true },
  { "second document", "a: b\n---\nc: d\n", 2, pyyaml_ok = true },
  { "anchor", "a: &x b\n", 1, pyyaml_ok = true },
  { "control character", "a: b\1c\n", 1 },
  { "NUL byte (binary)", "a: b\n\0\0\0\0", 2 },
  { "invalid UTF-8", "a: b\n\255\254\n", 2 },
  { "mapping inside a plain value", "a: b\n  c: d\n", 2 },
  { "tab after colon", "strip: true\na:\tb\n", 2 },
  { "tab on a blank line", "a: b\n\t\nc: d\n", 2 },
  { "indented line after quoted", "a: 'b'\n  c\n", 2 },
  { "empty flow entry", "a: [x,,y]\n", 1 },
}

describe("yaml_scan()", function()
  setup(function()
    VALID[1][2] = assert(h.readfile(h.corpus .. "/booster/booster.yaml"))
  end)

  it("raises on a non-string argument", function()
    assert.has_error(function() core.scan.yaml({}) end)
    assert.has_error(function() core.scan.yaml() end)
  end)

  it("returns entries with key, line, offsets, value and style", function()
    local text = "# c\nmodules: -*,ext4\nmodules_force_load: 'amdgpu' # x\nnetwork:\n  dhcp: on\nx:\n"
    local r = assert(core.scan.yaml(text))
    assert.are.equal(4, #r)
    local m = r[1]
    assert.are.same({ "modules", 2, 5, 20, 12, 14, 20, "-*,ext4", "plain" },
      { m.key, m.line, m.first, m.last, m.colon, m.value_first, m.value_last, m.value, m.style })
    local f = r[2]
    assert.are.equal("single", f.style)
    assert.are.equal("'amdgpu'", text:sub(f.value_first, f.value_last))
    assert.are.equal("modules_force_load: 'amdgpu' # x", text:sub(f.first, f.last))
    assert.are.equal("block", r[3].style)
    assert.are.equal("network:\n  dhcp: on", text:sub(r[3].first, r[3].last))
    assert.are.equal("dhcp: on", text:sub(r[3].value_first, r[3].value_last))
    assert.is_nil(r[3].value)
    assert.are.equal("empty", r[4].style)
    assert.is_nil(r[4].value_first)
  end)

  py_it("reads every valid shape like PyYAML (" .. #VALID .. " inputs)", function()
    local texts = {}
    for i, c in ipairs(VALID) do texts[i] = c[2] end
    local want = oracle(texts)
    for i, c in ipairs(VALID) do
      local got, msg, line = core.scan.yaml(c[2])
      assert(got, ("%s: %s (line %s)"):format(c[1], tostring(msg), tostring(line)))
      local ok, why = agrees(c[2], got, want[i])
      assert(ok, c[1] .. ": " .. tostring(why))
    end
  end)

  py_it("agrees with PyYAML on 300 generated documents", function()
    -- entries of real-world shapes, combined at random (fixed seed)
    local pool = {
      "modules_force_load: %s\n", "modules_force_load: '%s'\n", "modules_force_load: \"%s\"\n",
      "modules: %s # comment\n", "extra_files: %s\n  ,more\n", "compression: %s\n",
      "network:\n  dhcp: on\n  interfaces: %s\n", "strip:\n", "list: [%s, 'x y']\n",
      "seq:\n- %s\n- b\n", "\n# %s\n", "universal: |\n  %s\n", "quoted: 'it''s %s'\n",
      "dq: \"a\\t%s\\u00e9\"\n", "folded: \"%s\n  next\"\n",
    }
    local words = { "vfio", "vfio-pci,vfio_iommu_type1", "amdgpu,nvidia", "-*,ext4", "a b c", "x:y", "http://h:1/" }
    local rng = 12345
    local function rand(n) rng = (rng * 1103515245 + 12345) % 2147483648; return rng % n + 1 end
    local texts = {}
    for i = 1, 300 do
      local used, parts = {}, {}
      if rand(4) == 1 then parts[#parts + 1] = "---\n" end
      for _ = 1, rand(6) do
        local k = rand(#pool)
        local e = pool[k]:format(words[rand(#words)])
        local key = e:match("^([%w_]+):")
        if not (key and used[key]) then
          if key then used[key] = true end
          parts[#parts + 1] = e
        end
      end
      texts[i] = table.concat(parts)
    end
    local want = oracle(texts)
    for i, t in ipairs(texts) do
      local got, msg, line = core.scan.yaml(t)
      assert(got, ("%q: %s (line %s)"):format(t, tostring(msg), tostring(line)))
      local ok, why = agrees(t, got, want[i])
      assert(ok, ("%q: %s"):format(t, tostring(why)))
    end
  end)

  py_it("replacing one value span leaves every other key as PyYAML reads it", function()
    local texts, edited = {}, {}
    for i, c in ipairs(VALID) do
      local r = assert(core.scan.yaml(c[2]))
      texts[#texts + 1] = c[2]
      local t = c[2]
      for j = #r, 1, -1 do
        local e = r[j]
        if e.value_first and e.style ~= "block" then
          t = t:sub(1, e.value_first - 1) .. "REPLACED" .. t:sub(e.value_last + 1)
        end
      end
      edited[i] = t
      texts[#texts + 1] = t
    end
    local want = oracle(texts)
    for i, c in ipairs(VALID) do
      local before, after = want[2 * i - 1], want[2 * i]
      assert(not after.err, c[1] .. ": edited text does not parse: " .. edited[i])
      assert.are.equal(#before, #after, c[1])
      for j, b in ipairs(before) do
        local a = after[j]
        assert.are.equal(b.key, a.key, c[1])
        if a.value ~= "REPLACED" then assert.are.same(b, a, c[1]) end
      end
    end
  end)

  local bad_oracle
  local function bad_want(i)
    if not bad_oracle then
      local texts = {}
      for j, c in ipairs(BAD) do texts[j] = c[2] end
      bad_oracle = oracle(texts)
    end
    return bad_oracle[i]
  end
  for i, c in ipairs(BAD) do
    py_it("refuses " .. c[1] .. " with the line (" .. c[3] .. ")", function()
      local r, msg, line = core.scan.yaml(c[2])
      assert.is_nil(r)
      assert.are.equal("string", type(msg))
      assert.are.equal(c[3], line, msg)
      if not c.pyyaml_ok then
        assert.truthy(bad_want(i).err, c[1] .. ": PyYAML accepts it")
      end
    end)
  end

  it("reads a tab inside a plain value like go-yaml (booster's parser; PyYAML refuses it)", function()
    local r = assert(core.scan.yaml("a: b\tc\t# comment\n"))
    assert.are.equal("b\tc", r[1].value)
  end)

  it("names the duplicated key and its first line", function()
    local _, msg = core.scan.yaml("strip: true\nmodules: a\nstrip: false\n")
    assert.are.equal("duplicate key 'strip' (first on line 1)", msg)
  end)

  it("survives arbitrary bytes without crashing", function()
    local rng = 7
    for _ = 1, 2000 do
      local t = {}
      for k = 1, rng % 60 + 1 do
        rng = (rng * 1103515245 + 12345) % 2147483648
        t[k] = string.char(({ 10, 32, 58, 45, 39, 34, 91, 93, 123, 125, 35, 9, 97, 98, 92, 124, 13 })[rng % 17 + 1])
      end
      local s = table.concat(t)
      local r, msg, line = core.scan.yaml(s)
      if r == nil then
        assert.are.equal("string", type(msg))
        assert.are.equal("number", type(line))
      end
    end
  end)
end)
