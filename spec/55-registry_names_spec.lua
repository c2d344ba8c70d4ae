-- Lists of generator and boot-loader names come from the registries
-- (lua/vfioinit/generators/init.lua, lua/vfioinit/boot/init.lua): --help and the man page
-- are rendered from an instance's registries, so a generator registered with
-- vfioinit.register_generator, or a command-line target with register_bootloader, shows up
-- there (the completion, which reads --help, is spec/53-completion_spec.lua's); every list
-- still written by hand (the Ansible module's choices and cmdline text, CONTRACT, README,
-- the rockspecs' descriptions, INTERNALS' table of plugin orders) must equal its registry.
local h = require "helpers"
local cli = require "vfioinit.cli"

local ANSIBLE = h.project .. "/contrib/ansible/ansible_collections/vfioinit/vfioinit/plugins/modules/initramfs.py"

-- The smallest generator register_generator accepts (docs/INTERNALS.md "Generator interface").
local EXTRA = [[{ name = "mygen", command = "mygen", edits = function() return {} end,
  image_path = function() return "/boot/mygen.img" end, rebuild_argv = function() return {} end }]]

local function instance()
  local v = require("vfioinit").new()
  v.register_generator(assert(load("return " .. EXTRA))())
  return v
end

-- "a, b, c" -> { "a", "b", "c" }; also backquoted words (`a`, `b`) and quoted ones ('a', 'b').
local function split(text)
  local t = {}
  for w in text:gmatch("[^,%s`'%[%]]+") do t[#t + 1] = w end
  return t
end

-- The names the --generator row of a --help text lists ("one of: ...;", wrapped).
local function help_names(text)
  local row = text:match("\n  %-%-generator NAME(.-)\n  %-")
  return split(assert(row:gsub("%s+", " "):match("one of: ([^;]*);"), text))
end

describe("generator names in --help and the man page", function()
  it("--help of an instance lists its registered generators; other instances' do not", function()
    local v = instance()
    assert.are.same(v.generator_names(), help_names(cli.usage(v)))
    assert.are.same(require("vfioinit").generator_names(), help_names(cli.usage()))
    assert.is_nil(cli.usage():find("mygen", 1, true))
  end)

  it("the man page lists the built-in generators", function()
    local man = cli.manpage():gsub("\\%-", "-")
    local row = assert(man:match("one of: ([^;]*);"))
    assert.are.same(require("vfioinit.generators").new():names(), split(row))
  end)
end)

describe("hand-written name lists equal the registries", function()
  local builtin = require("vfioinit.generators").new():names()

  it("the Ansible module's generators choices (argument_spec and DOCUMENTATION)", function()
    local src = h.readfile(ANSIBLE)
    local spec = assert(src:match("generators=dict%(([^)]*)%)"))
    assert.are.same(builtin, split(assert(spec:match("choices=(%b[])"))))
    local doc = assert(src:match("\n  generators:\n(.-)\n  %a"))
    assert.are.same(builtin, split(assert(doc:match("\n    choices: (%b[])"))))
  end)

  it("docs/CONTRACT.md's and README.md's generator lists", function()
    local contract = h.readfile(h.project .. "/docs/CONTRACT.md"):gsub("%s+", " ")
    assert.are.same(builtin, split(assert(contract:match("%*%*generator%*%*: one of (.-) %(more"))))
    local readme = h.readfile(h.project .. "/README.md"):gsub("%s+", " ")
    assert.are.same(builtin, split(assert(readme:match("It detects the generators %((.-)%)"))))
  end)

  it("the rockspecs' descriptions list the built-in generators", function()
    for _, name in ipairs({ "vfioinit-scm-0.rockspec", "vfioinit-0.1.0-1.rockspec" }) do
      local text = h.readfile(h.project .. "/" .. name):gsub("%s+", " ")
      assert.are.same(builtin, split(assert(text:match("It detects the initramfs generators %((.-)%)"), name)), name)
    end
  end)

  it("docs/INTERNALS.md's plugin orders are the built-in plugins' own", function()
    local text = h.readfile(h.project .. "/docs/INTERNALS.md")
    local row = assert(text:match("\n| `order` |[^\n]*built%-ins: ([^|\n]*)"))
    local listed, own = {}, {}
    for name, order in row:gmatch("([%w_]+) (%d+)") do listed[#listed + 1] = name .. " " .. order end
    for _, p in ipairs(require("vfioinit.boot").new():all()) do own[#own + 1] = p.name .. " " .. p.order end
    assert.are.same(own, listed)
  end)

  it("docs/CONTRACT.md's, README.md's and the Ansible module's command-line targets; the boot chain plugins", function()
    local targets = require("vfioinit.boot").new():names("cmdline")
    local contract = h.readfile(h.project .. "/docs/CONTRACT.md"):gsub("%s+", " ")
    assert.are.same(targets, split(assert(contract:match("%*%*targets%*%*: in their declared order (.-) %(the last"))))
    assert.are.same(require("vfioinit.boot").new():names("chains"),
      split(assert(contract:match("are the %*%*boot%-loader plugins%*%* (.-), in their declared order"))))
    local readme = h.readfile(h.project .. "/README.md"):gsub("%s+", " ")
    assert.are.same(targets, split(assert(readme:match("through each target found %((.-)%)"))))
    local doc = h.readfile(ANSIBLE):gsub("%s+", " ")
    local list = {}
    for n in assert(doc:match("%(targets (C%(.-%))%)")):gmatch("C%(([%w_-]+)%)") do list[#list + 1] = n end
    assert.are.same(targets, list)
  end)
end)

describe("command-line target names in --help and the man page", function()
  -- the "(targets: a, b, c)" of the --cmdline row (--help: up to the next option's row;
  -- the man page: its paragraph), wrapped
  local function targets_of(text)
    local row = assert(text:match("\n  %-%-cmdline(.-)\n  %-") or text:match("\n\\fB\\%-\\%-cmdline\\fR\n(.-)\n%."), text)
    return split(assert(row:gsub("%s+", " "):match("%(targets: ([^)]*)%)"), row))
  end

  it("--help of an instance lists its registered targets; other instances' do not", function()
    local v = require("vfioinit").new()
    v.register_bootloader({ name = "mytarget", order = 55, detect = function() return false end,
      edits = function() return {} end, reads = { "bls" } })
    assert.are.same(v.bootloader_names("cmdline"), targets_of(cli.usage(v)))
    assert.truthy(cli.usage(v):find("mytarget", 1, true))
    assert.is_nil(cli.usage():find("mytarget", 1, true))
    assert.are.same(require("vfioinit").bootloader_names("cmdline"), targets_of(cli.usage()))
  end)

  it("the man page lists the built-in targets", function()
    assert.are.same(require("vfioinit.boot").new():names("cmdline"), targets_of(cli.manpage()))
  end)
end)
