-- The boot-loader registry (lua/vfioinit/boot/init.lua, docs/INTERNALS.md "Adding a boot
-- loader"): a plugin registered from Lua takes part in the boot chains, the command-line
-- targets, the read-back and --help; precedence is what the plugins declare; a plugin missing
-- a required field is refused, naming it.
local h = require "helpers"
local cli = require "vfioinit.cli"

-- "toy": a loader whose menu is /boot/toy.conf, one `title|kernel|initrd|options` line per
-- entry, the first the default; its command line is /etc/toy/cmdline's words, which a
-- stand-in `toy-update` copies into every entry's options.
local function toy(order, covers)
  local function entries(ctx)
    local out = {}
    for line in (ctx.read("/boot/toy.conf") or ""):gmatch("[^\n]+") do
      local t, k, i, o = line:match("^([^|]*)|([^|]*)|([^|]*)|(.*)$")
      out[#out + 1] = { title = t, linux = k, initrd = i, options = o }
    end
    return out
  end
  return {
    name = "toy", order = order, covers = covers, reads = { "toy" },
    read = function(ctx) return entries(ctx) end,
    chains = function(st, kver)
      local out = {}
      for n, e in ipairs(st.of.toy) do
        if st:names_kernel(e.linux, kver) then
          out[#out + 1] = { kernel = kver, kind = "image", path = e.linux, initramfs = e.initrd, initrds = { e.initrd },
            cmdline = e.options, cmdline_source = "/boot/toy.conf", cmdline_line = n, entry = "toy: " .. e.title,
            loader = "toy", default = n == 1 or nil, exists = st.ctx.stat(e.initrd) ~= nil }
        end
      end
      return out
    end,
    detect = function(ctx) return ctx.exists("/etc/toy/cmdline") end,
    edits = function(ctx, wants)
      local before = ctx.read("/etc/toy/cmdline")
      local add = require("vfioinit.boot.cmdline.words").missing(before, wants)
      if #add == 0 then return {} end
      return { { path = "/etc/toy/cmdline", before = before, after = before:gsub("\n$", "") .. " " .. table.concat(add, " ") .. "\n" } }
    end,
    regenerate = function() return { "toy-update" } end,
  }
end

local root, kver
local GRUB = "menuentry 'Debian' {\n linux /boot/vmlinuz-%s root=/dev/vda1\n initrd /boot/initrd.img-%s\n}\n"

local function setup()
  root = h.make_root({ os = { ID = "debian" }, files = {
    ["/etc/initramfs-tools/modules"] = "", ["/etc/default/grub"] = 'GRUB_CMDLINE_LINUX_DEFAULT="quiet"\n',
    ["/etc/toy/cmdline"] = "root=/dev/vda1\n" }, exec = { "/usr/sbin/update-initramfs", "/usr/sbin/update-grub" } })
  kver = h.install_kernel(root, "cloud")
  h.writefile(root .. "/boot/grub/grub.cfg", GRUB:format(kver, kver))
  h.writefile(root .. "/boot/toy.conf", ("Toy|/boot/vmlinuz-%s|/boot/initrd.img-%s|root=/dev/vda1 quiet\n"):format(kver, kver))
end

local function instance(plugin)
  local v = require("vfioinit").new()
  v.register_bootloader(plugin)
  return v
end

local function entries_of(list)
  local t = {}
  for _, c in ipairs(list) do t[#t + 1] = c.entry end
  return t
end

describe("a boot loader registered from Lua", function()
  before_each(setup)
  after_each(function() h.rm(root) end)

  it("lists its chains among the built-in loaders' by its declared order", function()
    local after = assert(instance(toy(35)).boot_chains({ root = root, generators = { "initramfs-tools" } }))
    assert.are.same({ "grub: Debian", "toy: Toy" }, entries_of(after))
    local before = assert(instance(toy(28)).boot_chains({ root = root, generators = { "initramfs-tools" } }))
    assert.are.same({ "toy: Toy", "grub: Debian" }, entries_of(before))
    assert.are.equal("root=/dev/vda1 quiet", before[1].cmdline)
    assert.is_true(before[1].default)
    -- another instance, the built-in one, knows nothing of it
    assert.are.same({ "grub: Debian" }, entries_of(assert(require("vfioinit").boot_chains({ root = root }))))
  end)

  it("is a --cmdline target beside grub, planned in its order, and read back from its chains", function()
    local v = instance(toy(35))
    local plan = assert(v.plan({ root = root, cmdline = true, generators = { "initramfs-tools" } }))
    local by = {}
    for _, c in ipairs(plan.changes) do if c.bootloader then by[#by + 1] = c.bootloader .. " " .. c.path end end
    assert.are.same({ "grub /etc/default/grub", "toy /etc/toy/cmdline" }, by)
    -- what the toy entry passes lacks the words: verify says so, naming the entry and its line
    local list = assert(v.verify({ root = root, cmdline = true, generators = { "initramfs-tools" } }))
    local toys = {}
    for _, r in ipairs(list) do if r.entry == "toy: Toy" then toys[#toys + 1] = r end end
    assert.are.equal(1, #toys)
    assert.is_false(toys[1].ok)
    assert.are.equal("/boot/toy.conf:1", toys[1].image)
    assert.are.same({ "intel_iommu" }, toys[1].missing)
    h.writefile(root .. "/boot/toy.conf", ("Toy|/boot/vmlinuz-%s|/boot/initrd.img-%s|root=/dev/vda1 intel_iommu=on iommu=pt\n")
      :format(kver, kver))
    list = assert(v.verify({ root = root, cmdline = true, generators = { "initramfs-tools" } }))
    for _, r in ipairs(list) do if r.entry == "toy: Toy" then assert.is_true(r.ok) end end
  end)

  it("covers what it declares: grub is then no target", function()
    local v = instance(toy(5, { grub = true }))
    local plan = assert(v.plan({ root = root, cmdline = true, generators = { "initramfs-tools" } }))
    local by = {}
    for _, c in ipairs(plan.changes) do by[#by + 1] = c.bootloader end
    assert.are.same({ "toy" }, by)
    local n = #plan.changes
    -- a condition: covered only while it holds
    v = instance(toy(5, { grub = function(ctx) return ctx.exists("/etc/toy/covers-grub") end }))
    plan = assert(v.plan({ root = root, cmdline = true, generators = { "initramfs-tools" } }))
    assert.are.equal(n + 1, #plan.changes)
    h.writefile(root .. "/etc/toy/covers-grub", "")
    plan = assert(v.plan({ root = root, cmdline = true, generators = { "initramfs-tools" } }))
    assert.are.equal(n, #plan.changes)
  end)

  it("shows up in --help's --cmdline targets, in its order", function()
    local v = instance(toy(35))
    local row = cli.usage(v):match("\n  %-%-cmdline(.-)\n  %-"):gsub("%s+", " ")
    assert.truthy(row:find("grub, toy, dracut_cmdline", 1, true), row)
    -- the built-in targets, toy between grub (order 30) and dracut_cmdline (40)
    local want = {}
    for _, n in ipairs(require("vfioinit.boot").new():names("cmdline")) do
      want[#want + 1] = n
      if n == "grub" then want[#want + 1] = "toy" end
    end
    assert.are.same(want, v.bootloader_names("cmdline"))
  end)
end)

describe("register_bootloader refuses a plugin missing a required field", function()
  local function refused(spec)
    local ok, err = pcall(require("vfioinit").new().register_bootloader, spec)
    assert.is_false(ok)
    return err
  end

  it("names the field and blames the caller", function()
    local v = require("vfioinit").new()
    local ok, err = pcall(function() v.register_bootloader({ name = "x", chains = function() return {} end }) end)
    assert.is_false(ok)
    assert.matches("39%-loaders_spec%.lua:%d+: bad argument #1 to 'register_bootloader' %(field 'order': number expected, got nil%)", err)
    assert.matches("field 'name'", refused({ order = 1, chains = function() end }))
    assert.matches("field 'chains' or 'edits' expected", refused({ name = "x", order = 1 }))
    assert.matches("field 'reads': a plugin with 'edits' needs it",
      refused({ name = "x", order = 1, edits = function() end, detect = function() end }))
    assert.matches("field 'detect'", refused({ name = "x", order = 1, edits = function() end, reads = {} }))
    assert.matches("field 'chains': function expected, got string", refused({ name = "x", order = 1, chains = "no" }))
    assert.matches("field 'covers'", refused({ name = "x", order = 1, chains = function() end, covers = { grub = 1 } }))
  end)

  it("the built-in plugins are every module of lua/vfioinit/boot/loaders/, each named after its file", function()
    local files = {}
    for n in h.sh("ls " .. h.q(h.project .. "/lua/vfioinit/boot/loaders")):gmatch("([%w_-]+)%.lua") do files[#files + 1] = n end
    local names = require("vfioinit.boot").new():names()
    table.sort(names)
    assert.are.same(files, names)
  end)
end)
