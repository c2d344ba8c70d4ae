-- vfio-pci built into the kernel (Ubuntu's kernels): it never reads modprobe.d, so device
-- ids work only as vfio-pci.ids= on the kernel command line. Without --cmdline that is an
-- error (exit 1) naming --cmdline; with it the ids go on the command line; status names
-- the kernels that need it. The kernel trees are a real Debian kernel's, with the VFIO
-- modules moved into modules.builtin and depmod run again (as a kernel built with
-- CONFIG_VFIO=y, CONFIG_VFIO_PCI=y ships them).
local h = require "helpers"
local v = require "vfioinit"

local BUILTIN = { "vfio/vfio.ko", "vfio/vfio_iommu_type1.ko", "vfio/vfio_virqfd.ko", "vfio/pci/vfio-pci-core.ko",
  "vfio/pci/vfio-pci.ko" }

-- Move the VFIO modules of a module tree into modules.builtin. The tree is hard-linked to
-- the shared kernel cache (helpers.install_kernel): modules.builtin is replaced by an
-- edited copy, never appended to in place, so nothing writes through the link into the cache.
local function build_in(moddir)
  for _, m in ipairs(BUILTIN) do
    local rel = "kernel/drivers/" .. m
    local out, ok = h.sh(("cd %s && rm -f %s %s.xz %s.zst && cp modules.builtin b.tmp && echo %s >> b.tmp && mv b.tmp modules.builtin && grep -v -x -F %s modules.order > o.tmp; "
      .. "mv o.tmp modules.order"):format(h.q(moddir), rel, rel, rel, rel, rel))
    assert(ok, out)
  end
end

local BUILTIN_KVER = "6.1.0-99-builtin"

-- A Debian-like root with GRUB's tools; kernels: the builtin one, and optionally the
-- real (modular) one.
local function root_with(modular_too)
  local root = h.make_root({ os = { ID = "ubuntu", ID_LIKE = "debian" }, files = {
    ["/etc/initramfs-tools/modules"] = "",
    ["/etc/default/grub"] = 'GRUB_CMDLINE_LINUX_DEFAULT="quiet splash"\n',
    ["/usr/sbin/grub-mkconfig"] = "#!/bin/sh\nfor x in ${sysconfdir}/default/grub.d/*.cfg ; do . \"$x\"; done\n" },
    exec = { "/usr/sbin/update-initramfs", "/usr/sbin/update-grub" } })
  h.install_kernel(root, "cloud", BUILTIN_KVER, build_in)
  local modular
  if modular_too then modular = h.install_kernel(root, "cloud") end
  return root, modular
end

describe("vfio-pci built into a kernel", function()
  it("makes the tree the spec meant: libkmod sees vfio_pci built in (the premise), the kernel cache untouched", function()
    local dir, kver = h.real_kernel("cloud")
    local cached = dir .. "/lib/modules/" .. kver .. "/modules.builtin"
    local before = h.readfile(cached)
    local root = root_with(false)
    finally(function() h.rm(root) end)
    assert.are.equal(before, h.readfile(cached))
    local out = h.sh("modprobe -d " .. h.q(root) .. " -S " .. BUILTIN_KVER .. " --show-depends vfio-pci 2>&1")
    assert.matches("builtin vfio_pci", out, 1, true)
  end)

  it("refuses --ids without --cmdline: exit 1, one line naming the kernel and --cmdline, nothing written", function()
    local root = root_with(false)
    finally(function() h.rm(root) end)
    local before = h.tree_hash(root)
    for _, cmd in ipairs({ "plan", "apply" }) do
      local code, out, err = h.cli("--root " .. h.q(root) .. " --ids 1af4:1000 " .. cmd)
      assert.are.equal(1, code, cmd .. ": " .. out .. err)
      assert.matches("^vfioinit: /lib/modules/" .. BUILTIN_KVER:gsub("%-", "%%-") .. "/modules.builtin: vfio%-pci is built into kernel", err)
      assert.matches("--cmdline", err, 1, true)
      assert.are.equal(1, select(2, err:gsub("\n", "")), err)
    end
    local none, rerr, report = v.update_initramfs({ root = root, ids = "1af4:1000" })
    assert.is_nil(none)
    assert.is_false(report.ok)
    assert.matches("run again with --cmdline", rerr, 1, true)
    assert.are.equal(before, h.tree_hash(root))
  end)

  it("needs nothing on the command line without ids", function()
    local root = root_with(false)
    finally(function() h.rm(root) end)
    assert.is_not_nil(v.plan({ root = root }))
  end)

  it("with --cmdline puts the ids on the kernel command line and says the options line does nothing there", function()
    local root = root_with(true)
    finally(function() h.rm(root) end)
    local r = v.update_initramfs({ root = root, ids = "1af4:1000", cmdline = true, rebuild = false })
    assert.is_true(r.ok, r.error)
    local out = h.sh("bash -c " .. h.q((". %s/etc/default/grub; for x in %s/etc/default/grub.d/*.cfg; do . \"$x\"; done; "
      .. "echo \"$GRUB_CMDLINE_LINUX $GRUB_CMDLINE_LINUX_DEFAULT\""):format(root, root)))
    assert.matches("%f[%S]vfio%-pci%.ids=1af4:1000%f[%s]", out)
    local warned = false
    for _, w in ipairs(r.warnings) do
      if w:find(BUILTIN_KVER, 1, true) and w:find("does nothing", 1, true) then warned = true end
    end
    assert.is_true(warned, table.concat(r.warnings, "\n"))
  end)

  it("status names the kernels that need the command line (text and --json)", function()
    local root, modular = root_with(true)
    finally(function() h.rm(root) end)
    local code, out, err = h.cli("--root " .. h.q(root) .. " status")
    assert.are.equal(0, code, err)
    assert.matches(BUILTIN_KVER .. ": vfio-pci is built in: device ids need the kernel command line (--cmdline)", out, 1, true)
    assert.is_nil(out:find(modular .. ": vfio-pci is built in", 1, true))
    code, out, err = h.cli("--root " .. h.q(root) .. " --json status")
    assert.are.equal(0, code, err)
    assert.are.equal("['" .. BUILTIN_KVER .. "']", h.pyjson(out, "d['builtin_vfio_pci']"))
    -- with ids and without --cmdline, the config line says why
    code, out = h.cli("--root " .. h.q(root) .. " --ids 1af4:1000 status")
    assert.are.equal(0, code)
    assert.matches("config: /lib/modules/" .. BUILTIN_KVER .. "/modules.builtin: vfio-pci is built into kernel", out, 1, true)
  end)
end)
