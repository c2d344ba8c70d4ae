-- initramfs-tools generator: /etc/initramfs-tools/modules. Oracle: sh reads the file
-- the way initramfs-tools does (hook-functions' add_modules_from_file writes conf/modules,
-- scripts/functions' load_modules runs modprobe per line) and prints each modprobe call.
local h = require "helpers"
local util = require "vfioinit.util"
local itools = require "vfioinit.generators.initramfs_tools"

local VFIO = { "vfio", "vfio_iommu_type1", "vfio_pci" }
local VFIO_OLD = { "vfio", "vfio_iommu_type1", "vfio_pci", "vfio_virqfd" }
local GPU = util.gpu_set()

-- add_modules_from_file + force_load (initramfs-tools 0.142 hook-functions), then
-- load_modules (scripts/functions): one output line per `modprobe $m`.
local ORACLE = [=[
for f in "$@"; do
  echo "== $f"
  conf=$(mktemp)
  grep '^[^#]' "$f" | while read -r module args; do
    [ -n "$module" ] || continue
    echo "${module}" "${args}" >>"$conf"
  done
  while read -r m; do
    [ -z "$m" ] && continue
    com=$(printf "%.1s" "${m}")
    [ "$com" = "#" ] && continue
    set -- $m
    echo "$*"
  done <"$conf"
  rm -f "$conf"
done
]=]

local function oracle(texts)
  local dir = h.tmpdir()
  local args = {}
  for i, t in ipairs(texts) do
    local p = dir .. "/" .. i
    local f = assert(io.open(p, "wb")); f:write(t); f:close()
    args[i] = h.q(p)
  end
  local out, ok = h.sh("sh -c " .. h.q(ORACLE) .. " sh " .. table.concat(args, " ") .. " 2>&1")
  h.rm(dir)
  assert(ok, out)
  local res, cur = {}, nil
  for line in out:gmatch("([^\n]*)\n") do
    local n = line:match("^== .*/(%d+)$")
    if n then cur = {}; res[tonumber(n)] = cur
    else cur[#cur + 1] = line end
  end
  return res
end

local function lines(text)
  local t = {}
  for l in (text:gsub("\n$", "") .. "\n"):gmatch("([^\n]*)\n") do t[#t + 1] = l end
  if text == "" then t = {} end
  return t
end

local function first_word(s) return s:match("^(%S+)") end

-- The oracle's reading of `after` satisfies the contract, given the reading of `before`.
local function check(want, before_calls, after_calls)
  local wanted = util.set(want)
  local pos, first_gpu = {}, nil
  for i, call in ipairs(after_calls) do
    local n = util.norm(first_word(call))
    if wanted[n] then
      assert.is_nil(pos[n], "modprobe " .. n .. " twice")
      pos[n] = i
    end
    if GPU[n] and not first_gpu then first_gpu = i end
  end
  for _, w in ipairs(want) do
    assert.truthy(pos[w], "no modprobe " .. w)
    if first_gpu then assert.truthy(pos[w] < first_gpu, w .. " loads after a GPU driver") end
  end
  -- the first line of a wanted module keeps its arguments (it is the one that took effect)
  local seen = {}
  for _, call in ipairs(before_calls) do
    local n = util.norm(first_word(call))
    if wanted[n] and not seen[n] then
      seen[n] = true
      assert.are.equal(call, after_calls[pos[n]])
    end
  end
  -- every other modprobe call stays, in order, with its arguments
  local function others(calls)
    local t = {}
    for _, c in ipairs(calls) do if not wanted[util.norm(first_word(c))] then t[#t + 1] = c end end
    return table.concat(t, "\n")
  end
  assert.are.equal(others(before_calls), others(after_calls))
end

local CORPUS = assert(h.readfile(h.corpus .. "/initramfs-tools/modules"))

-- { name, before, want }
local CASES = {
  { "Debian's shipped file (comments only)", CORPUS, VFIO },
  { "empty file", "", VFIO },
  { "no trailing newline", "raid1\nsd_mod", VFIO },
  { "amdgpu listed for early KMS", CORPUS .. "amdgpu\n", VFIO },
  { "nvidia stack with comments", "# NVIDIA early KMS\nnvidia\nnvidia_modeset\nnvidia_uvm\nnvidia_drm modeset=1\n", VFIO },
  { "vfio_pci with ids after i915 is moved with its ids", "i915\nvfio_pci ids=10de:1b80,10de:10f0\n", VFIO },
  { "dash spelling before the GPU is kept", "vfio\nvfio-pci ids=1002:67df\nvfio_iommu_type1\nradeon\n", VFIO },
  { "duplicates: the first line wins, later ones go", "vfio\nvfio_pci ids=10de:1b80\nvfio-pci\nvfio_iommu_type1\nvfio\nnouveau\n", VFIO },
  { "already configured", "vfio\nvfio_iommu_type1\nvfio_pci ids=10de:1b80\namdgpu\n", VFIO },
  { "indented comment naming a GPU is not a GPU line", "  # amdgpu\nsd_mod\n", VFIO },
  { "tab-separated arguments", "vfio_pci\tids=10de:1b80\tdisable_vga=1\nxe\n", VFIO },
  { "indented GPU line counts (read strips blanks)", "raid1\n  amdgpu\n", VFIO },
  { "commented-out VFIO lines are added again", "# vfio\n# vfio_pci ids=10de:1b80\ni915 enable_guc=3\n", VFIO },
  { "old kernel wants vfio_virqfd", "vfio\nvfio_iommu_type1\nvfio_pci\nnvidia\n", VFIO_OLD },
  { "VFIO split around the GPU", "vfio\namdgpu\nvfio_iommu_type1\nvfio_pci ids=1002:73bf\nradeon\n", VFIO },
  { "blank lines, trailing comment on a GPU line", "\n\nlz4\n\nradeon # legacy card\n\n", VFIO },
  { "CRLF-free file with params everywhere", "dm_mod\nnvme poll_queues=4\nvfio_iommu_type1 allow_unsafe_interrupts=1\n", VFIO },
}

describe("initramfs-tools edit_text()", function()
  local results
  local function result(i)
    if not results then
      local texts = {}
      for j, c in ipairs(CASES) do
        texts[2 * j - 1] = c[2]
        texts[2 * j] = assert(itools.edit_text(c[2], c[3]))
      end
      results = oracle(texts)
    end
    return results[2 * i - 1], results[2 * i]
  end

  for i, c in ipairs(CASES) do
    it(c[1], function()
      local before, want = c[2], c[3]
      local after = assert(itools.edit_text(before, want))
      local bcalls, acalls = result(i)
      check(want, bcalls, acalls)
      -- idempotent
      assert.are.equal(after, itools.edit_text(after, want))
      -- minimal diff: every line not naming a wanted module is byte-identical, in order,
      -- and every kept VFIO line is byte-identical to a line of before
      local wanted = util.set(want)
      local function rest(text)
        local t, vf = {}, {}
        for _, l in ipairs(lines(text)) do
          local m = l:match("^[ \t]*([^ \t]+)")
          if m and m:sub(1, 1) ~= "#" and wanted[util.norm(m)] then vf[#vf + 1] = l else t[#t + 1] = l end
        end
        return table.concat(t, "\n"), vf
      end
      local brest, bvf = rest(before)
      local arest, avf = rest(after)
      assert.are.equal(brest, arest)
      local had = util.set(bvf)
      for _, l in ipairs(avf) do
        local m = util.norm(l:match("^[ \t]*([^ \t]+)"))
        assert.truthy(had[l] or l == m, "changed line: " .. l)
      end
      assert.are.equal("\n", after:sub(-1))
    end)
  end

  it("returns the same text when nothing is wanted", function()
    assert.are.equal("amdgpu\nraid1", itools.edit_text("amdgpu\nraid1", {}))
  end)

  it("inserts right before the first GPU line, in want order", function()
    assert.are.equal("# x\nraid1\nvfio\nvfio_iommu_type1\nvfio_pci ids=10de:1b80\namdgpu\n",
      itools.edit_text("# x\nraid1\namdgpu\nvfio_pci ids=10de:1b80\n", VFIO))
  end)

  it("refuses a binary file with the line of the NUL byte", function()
    local r, msg, line = itools.edit_text("vfio\nraid1\n\0\1\2", VFIO)
    assert.is_nil(r)
    assert.truthy(msg:find("binary", 1, true))
    assert.are.equal(3, line)
  end)
end)

describe("initramfs-tools edits()", function()
  local root
  local function ctx()
    local c = { root = root, modules = VFIO, gpu = GPU, kernels = {} }
    function c.read(path) return h.readfile(root .. path) end
    function c.dir(path)
      local out, ok = h.sh("ls -1A " .. h.q(root .. path) .. " 2>/dev/null")
      if not ok then return nil end
      local t = {}
      for n in out:gmatch("[^\n]+") do t[#t + 1] = n end
      table.sort(t)
      return t
    end
    function c.exists(path) return h.readfile(root .. path) ~= nil end
    return c
  end
  before_each(function() root = h.tmpdir() end)
  after_each(function() h.rm(root) end)

  it("edits the shipped file, and a second run changes nothing", function()
    h.copy_corpus("initramfs-tools/modules", root, "/etc/initramfs-tools/modules")
    local list = assert(itools.edits(ctx()))
    assert.are.equal(1, #list)
    assert.are.equal("/etc/initramfs-tools/modules", list[1].path)
    assert.are.equal(CORPUS, list[1].before)
    assert.are.equal(CORPUS .. "vfio\nvfio_iommu_type1\nvfio_pci\n", list[1].after)
    h.writefile(root .. list[1].path, list[1].after)
    local again = assert(itools.edits(ctx()))
    assert.are.equal(again[1].before, again[1].after)
  end)

  it("creates the file when it is missing (before = nil)", function()
    local list = assert(itools.edits(ctx()))
    assert.is_nil(list[1].before)
    assert.are.equal("vfio\nvfio_iommu_type1\nvfio_pci\n", list[1].after)
  end)

  it("reports PATH:LINE: reason for a binary file", function()
    h.writefile(root .. "/etc/initramfs-tools/modules", "raid1\n\0\0")
    local r, err = itools.edits(ctx())
    assert.is_nil(r)
    assert.are.equal("/etc/initramfs-tools/modules:2: binary file (NUL byte), not a module list", err)
  end)

  it("passes a read error through", function()
    local c = ctx()
    function c.read() return nil, "/etc/initramfs-tools/modules: is a directory, expected a file" end
    local r, err = itools.edits(c)
    assert.is_nil(r)
    assert.are.equal("/etc/initramfs-tools/modules: is a directory, expected a file", err)
  end)
end)

describe("initramfs-tools images", function()
  it("uses /boot/initrd.img-<kver> and update-initramfs -u (-c when the image is missing)", function()
    local root = h.tmpdir()
    finally(function() h.rm(root) end)
    h.writefile(root .. "/boot/initrd.img-6.1.0-18-amd64", "x")
    local c = { root = root, exists = function(p) return h.readfile(root .. p) ~= nil end }
    assert.are.equal("/boot/initrd.img-6.1.0-18-amd64", itools.image_path(c, "6.1.0-18-amd64"))
    assert.are.same({
      { argv = { "update-initramfs", "-u", "-k", "6.1.0-18-amd64" }, kernels = { "6.1.0-18-amd64" } },
      { argv = { "update-initramfs", "-c", "-k", "6.12.9-amd64" }, kernels = { "6.12.9-amd64" } },
    }, itools.rebuild_argv(c, { "6.1.0-18-amd64", "6.12.9-amd64" }))
  end)

  it("wants conf/modules and reads it like load_modules", function()
    assert.are.same({ "conf/modules" }, itools.image_want)
    -- force_load writes "module args" (a trailing blank when args are empty)
    local conf = "vfio \nvfio_iommu_type1 \nvfio_pci ids=10de:1b80\n# comment \n\namdgpu \n"
    assert.are.same({ vfio = true, vfio_iommu_type1 = true, vfio_pci = true, amdgpu = true },
      itools.early_modules({ ["conf/modules"] = conf }))
    assert.are.same({}, itools.early_modules({}))
  end)

  it("declares how detect finds it", function()
    assert.are.equal("initramfs-tools", itools.name)
    assert.are.equal("update-initramfs", itools.command)
    assert.are.same({ "/etc/kernel/postinst.d/initramfs-tools" }, itools.active_evidence)
    assert.truthy(util.set(itools.distro_default).debian and util.set(itools.distro_default).ubuntu)
  end)
end)
