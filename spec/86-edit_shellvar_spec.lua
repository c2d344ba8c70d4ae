-- MODULES (and HOOKS, force_drivers) set anywhere but a plain top-level
-- assignment: vfioinit refuses with PATH:LINE and writes nothing, because
-- editing beside it could drop the user's modules from what bash ends up with.
-- Plain top-level shapes are still edited; bash sourcing the result is the oracle.
local h = require "helpers"
local vfioinit = require "vfioinit"
local mk = require "vfioinit.generators.mkinitcpio"
local dracut = require "vfioinit.generators.dracut"

local VFIO = { vfio = true, vfio_iommu_type1 = true, vfio_pci = true }
local GPU = { amdgpu = true, radeon = true, nouveau = true, nvidia = true, nvidia_modeset = true,
  nvidia_uvm = true, nvidia_drm = true, i915 = true, xe = true }
local corpus = assert(h.readfile(h.corpus .. "/mkinitcpio/mkinitcpio.conf"))
local BIN = (os.getenv("VFIOINIT_LUA_CMD") and h.lua .. " " or "") .. h.project .. "/bin/vfioinit"

local function norm(v) return (v:gsub("%?$", ""):gsub("-", "_")) end

-- The shipped config with its `MODULES=()` line replaced by `body`.
local function with_modules(body)
  return (corpus:gsub("\nMODULES=%(%)\n", "\n" .. body:gsub("%%", "%%%%") .. "\n", 1))
end

-- 1-based line of the first occurrence of `needle` in `text`.
local function line_of(text, needle)
  local at = assert(text:find(needle, 1, true), needle)
  return select(2, text:sub(1, at):gsub("\n", "")) + 1
end

local function arch_root(files)
  local spec = { os = { ID = "arch" }, exec = { "/usr/bin/mkinitcpio" }, files = files }
  return h.make_root(spec)
end

-- bash's verdict: every module of `before` other than VFIO is still there in
-- order, each VFIO module once, all before the first GPU driver.
local function check(before, after)
  local count, gpu_at = {}, nil
  for i, m in ipairs(after) do
    local n = norm(m)
    if GPU[n] and not gpu_at then gpu_at = i end
    if VFIO[n] then
      count[n] = (count[n] or 0) + 1
      assert.is_nil(gpu_at, ("%s after a GPU driver in {%s}"):format(m, table.concat(after, " ")))
    end
  end
  for n in pairs(VFIO) do assert.are.equal(1, count[n], table.concat(after, " ")) end
  local function others(list)
    local t = {}
    for _, m in ipairs(list) do if not VFIO[norm(m)] then t[#t + 1] = m end end
    return t
  end
  assert.are.same(others(before), others(after))
end

-- Shapes in /etc/mkinitcpio.conf. `at` = the text whose line the refusal names;
-- `why` = part of the reason; no `at`: the shape is edited and bash checks the result.
local SHAPES = {
  { "if/fi", "if [ -e /etc/hostname ]; then\n  MODULES=(nvme ext4 amdgpu)\nfi",
    at = "MODULES=(nvme", why = "MODULES is set inside an if block" },
  { "elif/else", "if false; then\n  MODULES=(i915)\nelif [ -d / ]; then\n  MODULES=(nvme amdgpu)\nelse\n  MODULES=(ext4)\nfi",
    at = "MODULES=(i915)", why = "inside an if block" },
  { "case", 'case "$(uname -m)" in\n  x86_64) MODULES=(nvme amdgpu) ;;\n  *) MODULES=(ext4) ;;\nesac',
    at = "MODULES=(nvme", why = "inside a case block" },
  { "while loop", "while false; do\n  MODULES=(nvme)\ndone", at = "MODULES=(nvme", why = "inside a while loop" },
  { "declare -a", "declare -a MODULES=(nvme ext4 amdgpu)", at = "declare", why = "MODULES is set by declare" },
  { "typeset, multi-line", "typeset -a MODULES=(\n  nvme\n  amdgpu\n)", at = "typeset", why = "set by typeset" },
  { "local-less export of the name", "MODULES=(nvme amdgpu)\nexport MODULES", at = "export", why = "declared by export" },
  { "cond && MODULES=", "[ -d / ] && MODULES=(nvme ext4 amdgpu)", at = "[ -d /", why = "MODULES is set after &&" },
  { "cond || MODULES=", "false || MODULES=(nvme ext4 amdgpu)", at = "false ||", why = "after ||" },
  { "function then call", "f() { MODULES=(nvme ext4 amdgpu); }; f", at = "f()", why = "MODULES is set in a function" },
  { "function keyword", "function setmods {\n  MODULES=(nvme amdgpu)\n}\nsetmods",
    at = "  MODULES=(nvme", why = "in a function" },
  { "{ } group", "{ MODULES=(nvme ext4 amdgpu); }", at = "{ MODULES", why = "inside a { } group" },
  { "( ) subshell", "( MODULES=(nvme ext4 amdgpu) )", at = "( MODULES", why = "inside a ( ) subshell" },
  { "background job", "MODULES=(nvme ext4 amdgpu) &", at = "MODULES=(nvme", why = "in a background job" },
  { "pipeline", "MODULES=(nvme ext4 amdgpu) | cat", at = "MODULES=(nvme", why = "in a pipeline" },
  { "source", "MODULES=(ext4)\nsource /etc/mkinitcpio-gpu.conf", at = "source",
    why = "`source /etc/mkinitcpio-gpu.conf` may set MODULES" },
  { ". ./x", "MODULES=(ext4)\n. ./x", at = ". ./x", why = "`. ./x` may set MODULES" },
  { "eval", "eval 'MODULES=(nvme ext4 amdgpu)'", at = "eval", why = "`eval` may set MODULES" },
  { "element assignment", "MODULES=(nvme ext4)\nMODULES[2]=amdgpu", at = "MODULES[2]", why = "element by element" },
  -- edited: plain top-level statements
  { "MODULES=(...) || true", "MODULES=(nvme ext4 amdgpu) || true" },
  { "MODULES and HOOKS on one line", "MODULES=(nvme amdgpu) ; HOOKS=(base udev autodetect modconf block filesystems)" },
  { "after ; on a line with a command", "true; MODULES=(nvme amdgpu)" },
  { "MODULES=(...) && a command", "MODULES=(nvme ext4 amdgpu) && true" },
  { "here-document and comment mention MODULES",
    "# source /etc/elsewhere ; eval MODULES=(x)\nMODULES=(nvme amdgpu)\ncat >/dev/null <<EOF\nMODULES=(nouveau)\nEOF" },
}

describe("mkinitcpio: MODULES outside a plain top-level assignment", function()
  for i, c in ipairs(SHAPES) do
    local name, body = c[1], c[2]
    local text = with_modules(body)
    if c.at then
      it(("should refuse with PATH:LINE and write nothing (shape %d: %s)"):format(i, name), function()
        local r = arch_root({ ["/etc/mkinitcpio.conf"] = text,
          ["/etc/mkinitcpio-gpu.conf"] = "MODULES+=(amdgpu)\n" })
        finally(function() h.rm(r) end)
        local before = h.tree_hash(r)
        local plan, err = vfioinit.plan({ root = r })
        assert.is_nil(plan)
        local prefix = ("/etc/mkinitcpio.conf:%d: "):format(line_of(text, c.at))
        assert.are.equal(prefix, err:sub(1, #prefix), err)
        assert.truthy(err:find(c.why, 1, true), err)
        assert.truthy(err:find("vfioinit edits only plain top-level assignments", 1, true), err)
        assert.is_nil(err:find("\n", 1, true), "one line")
        assert.are.equal(before, h.tree_hash(r))
      end)
    else
      it(("should edit a plain top-level shape so bash keeps every module (shape %d: %s)"):format(i, name), function()
        local r = arch_root({ ["/etc/mkinitcpio.conf"] = text })
        finally(function() h.rm(r) end)
        local conf = r .. "/etc/mkinitcpio.conf"
        local before = h.bash_array({ conf }, "MODULES")
        assert.is_true(#before > 0)
        assert.is_true(assert(vfioinit.plan({ root = r })):apply())
        check(before, h.bash_array({ conf }, "MODULES"))
        assert.are.equal(0, #assert(vfioinit.plan({ root = r })).changes, "second run changes nothing")
      end)
    end
  end

  it("should name the drop-in and line of a MODULES+= inside an if block", function()
    local dropin = "# gpu\nif [ -d /sys/module/amdgpu ]; then\n  MODULES+=(amdgpu)\nfi\n"
    local r = arch_root({ ["/etc/mkinitcpio.conf"] = with_modules("MODULES=(nvme)"),
      ["/etc/mkinitcpio.conf.d/20-gpu.conf"] = dropin })
    finally(function() h.rm(r) end)
    local before = h.tree_hash(r)
    local plan, err = vfioinit.plan({ root = r })
    assert.is_nil(plan)
    assert.are.equal("/etc/mkinitcpio.conf.d/20-gpu.conf:3: MODULES is set inside an if block", err:match("^[^;]*"))
    assert.are.equal(before, h.tree_hash(r))
  end)

  it("should refuse a declare in the file a preset's ALL_config names", function()
    local custom = with_modules("declare -a MODULES=(nvme i915)")
    local r = arch_root({ ["/etc/mkinitcpio.conf"] = corpus, ["/etc/mkinitcpio-custom.conf"] = custom,
      ["/etc/mkinitcpio.d/linux.preset"] = "ALL_config='/etc/mkinitcpio-custom.conf'\n"
        .. "ALL_kver='/boot/vmlinuz-linux'\nPRESETS=('default')\ndefault_image=\"/boot/initramfs-linux.img\"\n" })
    finally(function() h.rm(r) end)
    local before = h.tree_hash(r)
    local plan, err = vfioinit.plan({ root = r })
    assert.is_nil(plan)
    local prefix = ("/etc/mkinitcpio-custom.conf:%d: MODULES is set by declare"):format(line_of(custom, "declare"))
    assert.are.equal(prefix, err:sub(1, #prefix), err)
    assert.are.equal(before, h.tree_hash(r))
  end)

  it("should refuse HOOKS inside an if block only when it must add modconf", function()
    local text = with_modules("MODULES=(nvme amdgpu)"):gsub("\nHOOKS=%b()",
      "\nif true; then\n  HOOKS=(base udev autodetect block filesystems)\nfi", 1)
    local r = arch_root({ ["/etc/mkinitcpio.conf"] = text })
    finally(function() h.rm(r) end)
    local before = h.tree_hash(r)
    local plan, err = vfioinit.plan({ root = r, ids = { "1af4:1000" } })
    assert.is_nil(plan)
    local prefix = ("/etc/mkinitcpio.conf:%d: HOOKS is set inside an if block"):format(line_of(text, "if true; then") + 1)
    assert.are.equal(prefix, err:sub(1, #prefix), err)
    assert.are.equal(before, h.tree_hash(r))
    -- without ids HOOKS is not edited, so the plain MODULES is
    local conf = r .. "/etc/mkinitcpio.conf"
    local mods = h.bash_array({ conf }, "MODULES")
    assert.is_true(assert(vfioinit.plan({ root = r })):apply())
    check(mods, h.bash_array({ conf }, "MODULES"))
  end)

  it("should print one line naming PATH:LINE from the CLI and exit 1", function()
    local text = with_modules("[ -d / ] && MODULES=(nvme amdgpu)")
    local r = arch_root({ ["/etc/mkinitcpio.conf"] = text })
    finally(function() h.rm(r) end)
    local before = h.tree_hash(r)
    local errf = os.tmpname()
    local _, _, code = h.sh(BIN .. " --root " .. h.q(r) .. " apply --no-rebuild 2>" .. h.q(errf))
    local err = h.readfile(errf) or ""
    os.remove(errf)
    assert.are.equal(1, code)
    local want = ("vfioinit: /etc/mkinitcpio.conf:%d: MODULES is set after &&"):format(line_of(text, "[ -d /"))
    assert.are.equal(want, err:sub(1, #want), err)
    assert.are.equal(1, select(2, err:gsub("\n", "")), err)
    assert.are.equal(before, h.tree_hash(r))
  end)

  it("should refuse the same shapes in edit_text with the line", function()
    local text = "MODULES=(ext4)\nif true; then\n  MODULES=(nvme amdgpu)\nfi\n"
    local out, msg, line = mk.edit_text(text, { "vfio", "vfio_iommu_type1", "vfio_pci" })
    assert.is_nil(out)
    assert.are.equal(3, line)
    assert.truthy(msg:find("MODULES is set inside an if block", 1, true), msg)
  end)
end)

describe("dracut: force_drivers outside a plain top-level assignment", function()
  local function fedora_root(files)
    return h.make_root({ os = { ID = "fedora" }, exec = { "/usr/bin/dracut" }, files = files,
      corpus = { ["/etc/dracut.conf"] = "dracut/dracut.conf" } })
  end

  it("should refuse a force_drivers+= inside an if block of a user's drop-in", function()
    local r = fedora_root({ ["/etc/dracut.conf.d/05-gpu.conf"] =
      "# gpu first\nif [ -d / ]; then\n  force_drivers+=\" amdgpu \"\nfi\n" })
    finally(function() h.rm(r) end)
    local before = h.tree_hash(r)
    local plan, err = vfioinit.plan({ root = r })
    assert.is_nil(plan)
    assert.are.equal("/etc/dracut.conf.d/05-gpu.conf:3: force_drivers is set inside an if block", err:match("^[^;]*"))
    assert.truthy(err:find('force_drivers+=" ... "', 1, true), err)
    assert.are.equal(before, h.tree_hash(r))
  end)

  it("should refuse a drop-in that sources another file", function()
    local r = fedora_root({ ["/etc/dracut.conf.d/05-local.conf"] = "source /etc/dracut-local.conf\n",
      ["/etc/dracut-local.conf"] = "force_drivers+=\" nvidia \"\n" })
    finally(function() h.rm(r) end)
    local before = h.tree_hash(r)
    local plan, err = vfioinit.plan({ root = r })
    assert.is_nil(plan)
    local prefix = "/etc/dracut.conf.d/05-local.conf:1: `source /etc/dracut-local.conf` may set force_drivers"
    assert.are.equal(prefix, err:sub(1, #prefix), err)
    assert.are.equal(before, h.tree_hash(r))
  end)

  it("should still order a plain drop-in's GPU driver after vfio (bash)", function()
    local r = fedora_root({ ["/etc/dracut.conf.d/05-gpu.conf"] = "force_drivers+=\" amdgpu \"\n" })
    finally(function() h.rm(r) end)
    assert.is_true(assert(vfioinit.plan({ root = r })):apply())
    local files = { r .. "/etc/dracut.conf" }
    for n in h.sh("ls " .. h.q(r .. "/etc/dracut.conf.d") .. " | LC_ALL=C sort -V"):gmatch("[^\n]+") do
      files[#files + 1] = r .. "/etc/dracut.conf.d/" .. n
    end
    local words = {}
    for w in table.concat(h.bash_array(files, "force_drivers"), " "):gmatch("%S+") do words[#words + 1] = w end
    check({ "amdgpu" }, words)
  end)

  it("should refuse the shape in edit_text with the line", function()
    local out, msg, line = dracut.edit_text("x=1\nfoo && force_drivers+=\" i915 \"\n", { "vfio" })
    assert.is_nil(out)
    assert.are.equal(2, line)
    assert.truthy(msg:find("force_drivers is set after &&", 1, true), msg)
  end)
end)

describe("shell_scan(): nested assignments and commands", function()
  local core = require "vfioinit.core"
  local function nested(text)
    local r = assert(core.scan.shell(text))
    local t = {}
    for _, a in ipairs(r.nested) do t[#t + 1] = ("%s@%d %s"):format(a.name, a.line, a.why) end
    return t, r
  end
  local function top(r)
    local t = {}
    for _, a in ipairs(r) do t[#t + 1] = a.name .. "@" .. a.line end
    return t
  end
  local function cmds(r)
    local t = {}
    for _, c in ipairs(r.commands) do t[#t + 1] = c.name .. "@" .. c.line .. ":" .. table.concat(c.args, ",") end
    return t
  end

  it("should give the innermost construct, a function body first", function()
    local n, r = nested("f() {\n  if x; then\n    A=1\n  fi\n}\nwhile y; do B=2; done\nfunction g () ( C=3 )\nD=4\n")
    assert.are.same({ "A@3 in a function", "B@6 inside a while loop", "C@7 in a function" }, n)
    assert.are.same({ "D@8" }, top(r))
  end)

  it("should end a subshell's statement at its ')' and keep a background job out", function()
    local n, r = nested("( A=1 )\nB=2 &\nC=3 | cat\nD=4 >/dev/null\nE=5 && F=6 || G=7\nH=8\n")
    assert.are.same({ "A@1 inside a ( ) subshell", "B@2 in a background job", "C@3 in a pipeline",
      "D@4 with a redirection", "F@5 after &&", "G@5 after ||" }, n)
    assert.are.same({ "E@5", "H@6" }, top(r))
  end)

  it("should not take case patterns, quoted keywords or a declared array's words for commands", function()
    local n, r = nested("case $x in\n  source|eval) A=1 ;;\n  (b) B=2 ;;\nesac\n"
      .. "declare -a M=(\n  if\n  while\n)\n\"if\" x\nZ=9\n")
    assert.are.same({ "A@2 inside a case block", "B@3 inside a case block" }, n)
    assert.are.same({ "declare@5:-a,M=", "if@9:x" }, cmds(r))
    assert.are.same({ "Z@10" }, top(r))
  end)

  it("should skip here-documents and comments", function()
    local n, r = nested("cat <<-EOF\n\tsource /x\n\tif\n\tEOF\n# eval y\nA=1\n")
    assert.are.same({}, n)
    assert.are.same({ "cat@1:" }, cmds(r))
    assert.are.same({ "A@6" }, top(r))
  end)
end)
