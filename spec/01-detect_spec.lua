-- vfioinit.detect on synthetic roots of each generator family, built from the corpus.
local h = require "helpers"
local vfioinit = require "vfioinit"

local function gens(inv)
  local t = {}
  for _, g in ipairs(inv.generators) do t[g.name] = g end
  return t
end

local ARCH = { ID = "arch", NAME = '"Arch Linux"' }
local FEDORA = { ID = "fedora", VERSION_ID = "40", NAME = "Fedora" }
local DEBIAN = { ID = "debian", VERSION_ID = '"12"', NAME = '"Debian GNU/Linux"' }
local MINT = { ID = "linuxmint", ID_LIKE = '"ubuntu debian"', VERSION_ID = '"21.3"' }

local roots = {}
local function root(spec)
  local r = h.make_root(spec)
  roots[#roots + 1] = r
  return r
end

describe("detect()", function()
  teardown(function() for _, r in ipairs(roots) do h.rm(r) end end)

  it("reads os-release, falling back to /usr/lib/os-release", function()
    local r = root({ os = MINT })
    local inv = assert(vfioinit.detect({ root = r }))
    assert.are.equal("linuxmint", inv.distro.id)
    assert.are.same({ "ubuntu", "debian" }, inv.distro.id_like)
    assert.are.equal("21.3", inv.distro.version_id)
    local r2 = root({ files = { ["/usr/lib/os-release"] = "ID=fedora\nVERSION_ID=40\n" } })
    assert.are.equal("fedora", assert(vfioinit.detect({ root = r2 })).distro.id)
  end)

  it("finds mkinitcpio active on an Arch-like root through its kernel-install plugin and pacman hook", function()
    local r = root({ os = ARCH, corpus = { ["/etc/mkinitcpio.conf"] = "mkinitcpio/mkinitcpio.conf" },
      exec = { "/usr/bin/mkinitcpio", "/usr/lib/kernel/install.d/50-mkinitcpio.install" },
      files = { ["/usr/share/libalpm/hooks/90-mkinitcpio-install.hook"] = "[Trigger]\n" } })
    local inv = assert(vfioinit.detect({ root = r }))
    local g = gens(inv)
    assert.are.equal("mkinitcpio", inv.active)
    assert.is_true(g.mkinitcpio.installed and g.mkinitcpio.active)
    assert.are.equal("/usr/bin/mkinitcpio", g.mkinitcpio.command)
    assert.are.equal("/etc/mkinitcpio.conf", g.mkinitcpio.config)
    local ev = table.concat(g.mkinitcpio.evidence, "\n")
    assert.truthy(ev:find("50-mkinitcpio.install", 1, true))
    assert.truthy(ev:find("90-mkinitcpio-install.hook", 1, true))
    assert.is_false(g.dracut.installed)
    assert.is_false(g.booster.active)
  end)

  it("finds dracut active on a Fedora-like root, by distribution default when no hook is there", function()
    local r = root({ os = FEDORA, corpus = { ["/etc/dracut.conf"] = "dracut/dracut.conf" },
      exec = { "/usr/bin/dracut" } })
    local inv = assert(vfioinit.detect({ root = r }))
    assert.are.equal("dracut", inv.active)
    assert.truthy(table.concat(gens(inv).dracut.evidence, "\n"):find("distribution default", 1, true))
  end)

  it("finds initramfs-tools active on a Debian-like root through /etc/kernel/postinst.d", function()
    local r = root({ os = DEBIAN,
      corpus = { ["/etc/initramfs-tools/modules"] = "initramfs-tools/modules",
                 ["/etc/initramfs-tools/initramfs.conf"] = "initramfs-tools/initramfs.conf" },
      exec = { "/usr/sbin/update-initramfs", "/etc/kernel/postinst.d/initramfs-tools" } })
    local inv = assert(vfioinit.detect({ root = r }))
    assert.are.equal("initramfs-tools", inv.active)
    assert.are.equal("/usr/sbin/update-initramfs", gens(inv)["initramfs-tools"].command)
  end)

  it("prefers the hook over the distribution default when both generators are installed", function()
    -- Debian with dracut installed: dracut's postinst hook builds the images, not initramfs-tools
    local r = root({ os = DEBIAN, corpus = { ["/etc/dracut.conf"] = "dracut/dracut.conf",
                                             ["/etc/initramfs-tools/modules"] = "initramfs-tools/modules" },
      exec = { "/usr/bin/dracut", "/usr/sbin/update-initramfs", "/etc/kernel/postinst.d/dracut" } })
    local inv = assert(vfioinit.detect({ root = r }))
    local g = gens(inv)
    assert.are.equal("dracut", inv.active)
    assert.is_true(g["initramfs-tools"].installed)
    assert.is_false(g["initramfs-tools"].active)
  end)

  it("finds booster on an Arch root whose only hook is booster's", function()
    local r = root({ os = ARCH, corpus = { ["/etc/booster.yaml"] = "booster/booster.yaml" },
      exec = { "/usr/bin/booster" },
      files = { ["/usr/share/libalpm/hooks/90-booster-install.hook"] = "[Trigger]\n" } })
    local inv = assert(vfioinit.detect({ root = r }))
    assert.are.equal("booster", inv.active)
    assert.is_false(gens(inv).mkinitcpio.installed)
  end)

  it("honours an /etc/kernel/install.d mask of a kernel-install plugin", function()
    local r = root({ os = ARCH, exec = { "/usr/bin/mkinitcpio", "/usr/bin/dracut",
      "/usr/lib/kernel/install.d/50-mkinitcpio.install", "/usr/lib/kernel/install.d/50-dracut.install" } })
    h.sh("mkdir -p " .. h.q(r .. "/etc/kernel/install.d") .. " && ln -s /dev/null " .. h.q(r .. "/etc/kernel/install.d/50-dracut.install"))
    local inv = assert(vfioinit.detect({ root = r }))
    assert.are.equal("mkinitcpio", inv.active)
    assert.is_false(gens(inv).dracut.active)
  end)

  it("reports nothing active on a root without generators", function()
    local r = root({ os = DEBIAN })
    local inv = assert(vfioinit.detect({ root = r }))
    assert.is_nil(inv.active)
    for _, g in ipairs(inv.generators) do assert.is_false(g.installed) end
    assert.are.equal(4, #inv.generators)
  end)

  it("lists kernels from /lib/modules and /usr/lib/modules, sorted by version, skipping empty leftovers", function()
    local r = root({ os = DEBIAN, files = {
      ["/lib/modules/6.1.0-9-amd64/modules.dep"] = "",
      ["/usr/lib/modules/6.10.2-arch1-1/modules.order"] = "",
      ["/lib/modules/6.1.0-10-amd64/modules.dep"] = "",
      ["/lib/modules/5.10.0-1-amd64/.keep"] = "" } })
    local inv = assert(vfioinit.detect({ root = r }))
    assert.are.same({ "6.1.0-9-amd64", "6.1.0-10-amd64", "6.10.2-arch1-1" }, inv.kernels)
  end)

  it("finds the real kernel of a root", function()
    local r = root({ os = DEBIAN })
    local kver = h.install_kernel(r, "cloud")
    assert.are.same({ kver }, assert(vfioinit.detect({ root = r })).kernels)
  end)

  it("resolves an absolute /lib symlink inside root (merged /usr)", function()
    local r = root({ os = DEBIAN, files = { ["/usr/lib/modules/6.1.0-1-amd64/modules.dep"] = "" } })
    h.sh("ln -s /usr/lib " .. h.q(r .. "/lib"))
    assert.are.same({ "6.1.0-1-amd64" }, assert(vfioinit.detect({ root = r })).kernels)
  end)

  it("fails with the path for a missing root and raises on misuse", function()
    local inv, err = vfioinit.detect({ root = "/nonexistent/vfioinit-root" })
    assert.is_nil(inv)
    assert.truthy(err:find("/nonexistent/vfioinit-root", 1, true) or err:find("No such file", 1, true), err)
    assert.has_error(function() vfioinit.detect("x") end)
    assert.has_error(function() vfioinit.detect({ root = 5 }) end)
  end)

  it("detect_initramfs_systems gives the set of installed generators", function()
    local r = root({ os = DEBIAN, exec = { "/usr/bin/dracut", "/usr/sbin/update-initramfs" } })
    assert.are.same({ dracut = true, ["initramfs-tools"] = true }, assert(vfioinit.detect_initramfs_systems({ root = r })))
  end)
end)
