-- The trial (issue 27) piece by piece: the record, the GRUB entry and grubenv, the BLS entry
-- and systemd-boot's counter names (type #1 .conf and type #2 UKI .efi), the staged configuration, the partial revert that drops
-- a trial alone, what `commit` takes as evidence, and the CLI's options. The boots themselves
-- are spec/99-trial_proof_spec.lua.
local h = require "helpers"
local core = require "vfioinit.core"
local state = require "vfioinit.state"
local record = require "vfioinit.trial.record"
local grub = require "vfioinit.trial.grub"
local bls = require "vfioinit.trial.bls"
local uki = require "vfioinit.trial.uki"
local stage = require "vfioinit.trial.stage"
local trial = require "vfioinit.trial"
local bootcfg = require "vfioinit.boot.cfg"
local context = require "vfioinit.context"

local KVER = "6.1.0-57-cloud-amd64"
local CFG = h.readfile(h.project .. "/spec/fixtures/boot/debian12-grub.cfg")

local function sample()
  return { id = "0a1b2c3d", kernel = KVER, generator = "initramfs-tools", loader = "grub",
    image = "/boot/initrd.img-" .. KVER .. ".vfioinit-trial", entry = grub.SCRIPT, grubenv = "/boot/grub/grubenv",
    next_entry = grub.ID, grubenv_was = "-", grubenv_created = "yes", cmdline = "ro quiet vfioinit.trial=0a1b2c3d",
    default = "grub: Debian GNU/Linux",
    opts = { ids = { "1af4:1000" }, devices = { "0000:00:05.0" }, force = true, cmdline = true } }
end

describe("trial record", function()
  it("reads back what it wrote, options included; a changed byte or a foreign line is refused with the file and line", function()
    local rec = sample()
    local text = record.serialize(rec)
    local back = assert(record.parse(text))
    for _, k in ipairs({ "id", "kernel", "image", "cmdline", "default", "grubenv_was" }) do
      assert.are.equal(rec[k], back[k], k)
    end
    assert.are.same(rec.opts, back.opts)
    local bad = text:gsub("0a1b2c3d", "0a1b2c3e", 1)
    local r, err = record.parse(bad)
    assert.is_nil(r)
    assert.matches(record.PATH .. ":1: damaged", err, 1, true)
    local body = text:match("^(.*\n)end ") .. "color blue\n"
    r, err = record.parse(body .. "end " .. core.hash.sha256(body) .. "\n")
    assert.is_nil(r)
    assert.matches(record.PATH .. ":%d+: unknown line", err)
  end)

  it("a recorded trial holds back a plain apply, and so does a damaged record", function()
    local root = h.tmpdir()
    finally(function() h.rm(root) end)
    assert.is_nil(trial.blocks(root))
    h.writefile(root .. record.PATH, record.serialize(sample()))
    assert.matches("a trial is pending (0a1b2c3d)", trial.blocks(root), 1, true)
    h.writefile(root .. record.PATH, "vfioinit-trial 1\nid x\n")
    assert.matches(record.PATH .. ":1: damaged", trial.blocks(root), 1, true)
  end)

  it("owns only its own entries", function()
    assert.is_true(record.owns_entry(grub.ID))
    assert.is_true(record.owns_entry("vfioinit-trial-" .. KVER .. "+0-1.conf"))
    assert.is_false(record.owns_entry("gnulinux-simple-x"))
    assert.is_false(record.owns_entry("debian-" .. KVER .. ".conf"))
  end)
end)

describe("trial GRUB entry", function()
  local t = { id = "0a1b2c3d", kernel = KVER, title = "Debian GNU/Linux (vfioinit trial 0a1b2c3d)",
    cmdline = 'root=UUID=0b1c ro console=ttyS0 quiet "dyndbg=file x +p" vfioinit.trial=0a1b2c3d panic=5',
    initrd = "/boot/initrd.img-" .. KVER .. ".vfioinit-trial" }

  it("is the default entry's body with the trial's initrd and command line, as grub-mkconfig prints it through sh", function()
    local text = assert(grub.entry(CFG, "/boot/grub/grub.cfg", "Debian GNU/Linux", t))
    local dir = h.tmpdir()
    finally(function() h.rm(dir) end)
    h.writefile(dir .. "/42", grub.script(t, text), 493)
    local printed, ok = h.sh("sh " .. h.q(dir .. "/42"))
    assert.is_true(ok, printed)
    -- what GRUB reads: the entry, by id, loads the trial image with the trial's line
    local cfg = bootcfg.grub(CFG .. printed)
    local e = cfg.entries[#cfg.entries]
    assert.are.equal(grub.ID, e.id)
    assert.are.same({ t.initrd }, e.initrd)
    assert.are.equal("/boot/vmlinuz-" .. KVER, e.linux)
    assert.are.equal(t.cmdline, e.cmdline)
    -- the body of the default entry (modules, root search) is kept, line for line
    for _, l in ipairs({ "insmod ext2", "search --no-floppy --fs-uuid --set=root" }) do
      assert.truthy(printed:find(l, 1, true), l)
    end
    assert.truthy(printed:find("save_env " .. grub.VAR, 1, true))
  end)

  it("is refused for a title grub.cfg does not have", function()
    local text, err = grub.entry(CFG, "/boot/grub/grub.cfg", "No such entry", t)
    assert.is_nil(text)
    assert.matches("/boot/grub/grub.cfg: no entry", err, 1, true)
  end)

  it("needs a header that honours next_entry whatever GRUB_DEFAULT is", function()
    local root = h.tmpdir()
    finally(function() h.rm(root) end)
    local ctx = context.new({ root = root })
    assert.matches("00_header: missing", select(2, grub.check_header(ctx)), 1, true)
    -- GRUB 1.99's header: next_entry only for GRUB_DEFAULT=saved
    h.writefile(root .. grub.HEADER, 'if [ "x${GRUB_DEFAULT}" = "xsaved" ]; then cat <<EOF\nset default="\\${saved_entry}"\nEOF\nfi\n')
    assert.matches("does not set `default` from grubenv's next_entry", select(2, grub.check_header(ctx)), 1, true)
    h.writefile(root .. grub.HEADER, 'cat <<EOF\nif [ "\\${next_entry}" ] ; then\n   set default="\\${next_entry}"\nfi\nEOF\n')
    assert.is_true(grub.check_header(ctx))
  end)

  it("grubenv: a 1024-byte block with next_entry set, other variables kept, ours taken back", function()
    local old = "# GRUB Environment Block\nsaved_entry=gnulinux-x\n"
    old = old .. ("#"):rep(1024 - #old)
    local new = assert(grub.grubenv_set(old, { next_entry = grub.ID }, "/boot/grub/grubenv"))
    assert.are.equal(1024, #new)
    assert.are.same({ saved_entry = "gnulinux-x", next_entry = grub.ID }, bootcfg.grubenv(new))
    local back = assert(grub.grubenv_set(new, { next_entry = false }, "/boot/grub/grubenv"))
    assert.are.equal(old, back)
    local r, err = grub.grubenv_set("saved_entry=x\n", {}, "/boot/grub/grubenv")
    assert.is_nil(r)
    assert.matches("/boot/grub/grubenv:1: not a GRUB environment block", err, 1, true)
  end)

  it("grubenv tells a pending trial from one GRUB booted last and one it started again after", function()
    local rec = sample()
    assert.are.equal("pending", grub.state(rec, { next_entry = grub.ID }))
    assert.are.equal("started", grub.state(rec, { next_entry = "", [grub.VAR] = rec.id }))
    assert.are.equal("later", grub.state(rec, { next_entry = "", [grub.VAR] = rec.id .. ":later" }))
    assert.are.equal("gone", grub.state(rec, { next_entry = "" }))
  end)
end)

describe("trial BLS entry", function()
  local ENTRY = "title      Debian GNU/Linux 12 (bookworm)\nversion    " .. KVER .. "\nsort-key   debian\n"
    .. "options    console=ttyS0 root=/dev/vda\nlinux      /debian/" .. KVER .. "/linux\n"
    .. "initrd     /debian/" .. KVER .. "/initrd.img-" .. KVER .. "\n"

  it("copies the default entry with the trial's initrd, options and a sort key that systemd-boot orders first", function()
    local text = bls.entry(ENTRY, { id = "0a1b2c3d", cmdline = "console=ttyS0 root=/dev/vda vfioinit.trial=0a1b2c3d",
      initrd = "/debian/" .. KVER .. "/initrd.img-" .. KVER .. ".vfioinit-trial" })
    local e = assert(bootcfg.bls(text))
    assert.are.equal("console=ttyS0 root=/dev/vda vfioinit.trial=0a1b2c3d", e.options)
    assert.are.same({ "/debian/" .. KVER .. "/initrd.img-" .. KVER .. ".vfioinit-trial" }, e.initrd)
    assert.are.equal("/debian/" .. KVER .. "/linux", e.linux)
    assert.are.equal(bls.SORT_KEY, e["sort-key"])
    -- strcmp order, as systemd-boot 252 compares sort keys: the trial's before Debian's
    assert.is_true(bls.SORT_KEY < "debian")
  end)

  it("reads systemd-boot's counter names: +1 pending, +0-1 started, none good", function()
    local root = h.tmpdir()
    finally(function() h.rm(root) end)
    local ctx = context.new({ root = root })
    local dir = "/boot/efi/loader/entries"
    local base = bls.base(dir, KVER)
    assert.is_nil(bls.find(ctx, base))
    for name, want in pairs({ ["+1"] = "pending", ["+0-1"] = "started", [""] = "good" }) do
      h.rm(root .. dir)
      h.writefile(root .. base .. name .. ".conf", ENTRY)
      h.writefile(root .. dir .. "/debian-" .. KVER .. ".conf", ENTRY)
      local path, st = bls.find(ctx, base)
      assert.are.equal(base .. name .. ".conf", path)
      assert.are.equal(want, st, name)
    end
  end)

  it("is refused where loader.conf's default, or an earlier sort key, decides instead", function()
    local root = h.tmpdir()
    finally(function() h.rm(root) end)
    local ctx = context.new({ root = root })
    h.writefile(root .. "/boot/efi/loader/entries/a.conf", ENTRY)
    h.writefile(root .. "/boot/efi/loader/loader.conf", "timeout 0\ndefault @saved\n")
    assert.matches("/boot/efi/loader/loader.conf:2: `default @saved`", select(2, bls.check(ctx, {})), 1, true)
    h.writefile(root .. "/boot/efi/loader/loader.conf", "timeout 0\n")
    local early = { { path = "/boot/efi/loader/entries/a.conf", name = "a.conf",
      e = assert(bootcfg.bls(ENTRY:gsub("sort%-key   debian", "sort-key   0aaa"))) } }
    assert.matches("a.conf:3: sort-key 0aaa sorts before", select(2, bls.check(ctx, early)), 1, true)
    early[1].e = assert(bootcfg.bls(ENTRY))
    assert.is_true(bls.check(ctx, early))
  end)
end)

describe("trial UKI (systemd-boot type #2 entry)", function()
  local DEFAULT = "/efi/EFI/Linux/arch-" .. KVER .. ".efi"

  it("is named after the default UKI, in EFI/Linux/ only; its counter names read as the BLS entry's", function()
    local base = assert(uki.base(DEFAULT))
    assert.are.equal("/efi/EFI/Linux/arch-" .. KVER .. "-vfioinit-trial", base)
    local r, err = uki.base("/boot/efi/EFI/debian/linux.efi")
    assert.is_nil(r)
    assert.matches("/boot/efi/EFI/debian/linux.efi: a trial UKI is a systemd-boot type #2 entry", err, 1, true)
    local root = h.tmpdir()
    finally(function() h.rm(root) end)
    local ctx = context.new({ root = root })
    h.writefile(root .. DEFAULT, "MZ")
    -- what the loader does not read as the entry: a .conf of the name, the UKI being built
    h.writefile(root .. base .. "+1.conf", "title x\n")
    h.writefile(root .. base .. "+1.efi" .. uki.PART, "MZ")
    assert.is_nil(uki.find(ctx, base))
    for name, want in pairs({ ["+1"] = "pending", ["+0-1"] = "started", [""] = "good" }) do
      h.sh("rm -f " .. h.q(root .. base) .. "*.efi")
      h.writefile(root .. base .. name .. ".efi", "MZ")
      local path, st = uki.find(ctx, base)
      assert.are.equal(base .. name .. ".efi", path)
      assert.are.equal(want, st, name)
      -- boot chains leave the trial's UKI out, whatever its counter says
      assert.is_true(record.owns_entry(path:match("[^/]+$")))
    end
    assert.is_false(record.owns_entry(DEFAULT:match("[^/]+$")))
  end)

  it("carries an os-release whose IMAGE_ID sorts it first and whose title names the trial (bash reads it)", function()
    local osrel = 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\nID=debian\n'
      .. "IMAGE_ID=debian-cloud\n"
    local dir = h.tmpdir()
    finally(function() h.rm(dir) end)
    h.writefile(dir .. "/os-release", uki.osrel(osrel, "0a1b2c3d"))
    local out = h.sh(". " .. h.q(dir .. "/os-release") .. ' && printf "%s|%s|%s" "$ID" "$IMAGE_ID" "$PRETTY_NAME"')
    assert.are.equal("debian|" .. bls.SORT_KEY .. "|Debian GNU/Linux 12 (bookworm) (vfioinit trial 0a1b2c3d)", out)
    -- systemd-boot 252 compares type #2 sort keys (IMAGE_ID, else ID) by strcmp: the trial's first
    assert.is_true(bls.SORT_KEY < "debian")
  end)

  it("is built by mkinitcpio -U from the staged configuration, or dracut --uefi (its .osrel replaced after the build)", function()
    local root = h.tmpdir()
    finally(function() h.rm(root) end)
    h.writefile(root .. "/etc/mkinitcpio.conf", "MODULES=()\nHOOKS=(base udev)\n")
    h.writefile(root .. "/etc/dracut.conf", "")
    local ctx = context.new({ root = root })
    local out = "/efi/EFI/Linux/arch-" .. KVER .. "-vfioinit-trial+1.efi" .. uki.PART
    local spec = { cmdline = "root=/dev/vda vfioinit.trial=0a1b2c3d", osrel = "ID=debian\nIMAGE_ID=x\n" }
    local changes = { { generator = "mkinitcpio", path = "/etc/mkinitcpio.conf", after = "MODULES=(vfio)\nHOOKS=(base udev)\n" } }
    local s = assert(stage.plan(ctx, { name = "mkinitcpio" }, changes, KVER, out, spec))
    assert.are.same({ "mkinitcpio", "-c", stage.STAGE .. "/mkinitcpio.conf", "-k", KVER, "-U", out,
      "--cmdline", stage.STAGE .. "/cmdline", "--osrelease", stage.STAGE .. "/os-release" }, s.argv)
    local staged = {}
    for _, f in ipairs(s.files) do staged[f.path] = f.after end
    assert.are.equal(spec.cmdline .. "\n", staged[stage.STAGE .. "/cmdline"])
    assert.are.equal(spec.osrel, staged[stage.STAGE .. "/os-release"])
    assert.are.equal(changes[1].after, staged[stage.STAGE .. "/mkinitcpio.conf"])
    -- dracut: the copy of its configuration, read by bash as dracut sources it (dracut.conf,
    -- then dracut.conf.d/*.conf in name order), says uefi and the trial's command line
    h.writefile(root .. "/etc/dracut.conf.d/50-uki.conf", "uefi=yes\nkernel_cmdline=\"console=ttyS0\"\n")
    local word = [[dyndbg="file x +p" it's]]
    spec.cmdline = "root=/dev/vda " .. word .. " vfioinit.trial=0a1b2c3d"
    s = assert(stage.plan(ctx, { name = "dracut" }, {}, KVER, out, spec))
    assert.are.same({ "dracut", "--conf", stage.STAGE .. "/dracut.conf", "--confdir", stage.STAGE .. "/dracut.conf.d",
      "--uefi", "--force", out, KVER }, s.argv)
    assert.are.equal(stage.STAGE .. "/os-release", s.osrel)
    for _, f in ipairs(s.files) do h.writefile(root .. f.path, f.after) end
    local said = h.sh("bash -c " .. h.q(("cd %s && . ./dracut.conf && for f in dracut.conf.d/*.conf; do . \"$f\"; done; "
      .. 'printf "%%s|%%s" "$uefi" "$kernel_cmdline"'):format(h.q(root .. stage.STAGE))))
    assert.are.equal("yes|" .. spec.cmdline, said)
    assert.are.equal(spec.osrel, h.readfile(root .. s.osrel))
    -- dracut signs what it builds with uefi_secureboot_key: a .osrel put in after would void it
    h.writefile(root .. "/etc/dracut.conf.d/60-sb.conf", "uefi_secureboot_key=/etc/sb/db.key\nuefi_secureboot_cert=/etc/sb/db.crt\n")
    local r, err = stage.plan(ctx, { name = "dracut" }, {}, KVER, out, spec)
    assert.is_nil(r)
    assert.matches("/etc/dracut.conf.d/60-sb.conf: uefi_secureboot_key: dracut signs the UKI", err, 1, true)
    -- initramfs-tools builds no UKI
    r, err = stage.plan(ctx, { name = "initramfs-tools" }, {}, KVER, out, spec)
    assert.is_nil(r)
    assert.matches("/efi/EFI/Linux/arch-" .. KVER .. "-vfioinit-trial+1.efi: a trial UKI needs an os-release", err, 1, true)
  end)
end)

describe("trial staging", function()
  local function root_with_confdir()
    local root = h.tmpdir()
    h.writefile(root .. "/etc/initramfs-tools/initramfs.conf", "MODULES=most\n")
    h.writefile(root .. "/etc/initramfs-tools/modules", "# modules\n")
    h.writefile(root .. "/etc/initramfs-tools/hooks/user-hook", "#!/bin/sh\n", 493)
    return root
  end

  it("initramfs-tools: a copy of the configuration with the plan's edits, the modprobe.d file through a hook of its own", function()
    local root = root_with_confdir()
    finally(function() h.rm(root) end)
    local ctx = context.new({ root = root })
    local gen = require("vfioinit.generators").new():get("initramfs-tools")
    local changes = {
      { generator = "initramfs-tools", path = "/etc/initramfs-tools/modules", before = "# modules\n", after = "# modules\nvfio\n" },
      { generator = "modprobe", path = "/etc/modprobe.d/vfioinit.conf", after = "options vfio-pci ids=1af4:1000\n" },
      { generator = "cmdline", path = "/etc/default/grub.d/vfioinit.cfg", after = "X\n" },
    }
    local s = assert(stage.plan(ctx, gen, changes, KVER, "/boot/initrd.img-" .. KVER .. ".vfioinit-trial"))
    assert.are.same({ "mkinitramfs", "-d", stage.STAGE .. "/initramfs-tools", "-o",
      "/boot/initrd.img-" .. KVER .. ".vfioinit-trial", KVER }, s.argv)
    local by = {}
    for _, f in ipairs(s.files) do by[f.path] = f end
    local conf = stage.STAGE .. "/initramfs-tools"
    assert.are.equal("# modules\nvfio\n", by[conf .. "/modules"].after)
    assert.are.equal("MODULES=most\n", by[conf .. "/initramfs.conf"].after)
    assert.are.equal(493, by[conf .. "/hooks/user-hook"].mode)
    assert.are.equal("options vfio-pci ids=1af4:1000\n", by[stage.MODPROBE].after)
    -- the hook, run the way mkinitramfs runs hooks, copies the staged file into the image
    local dest = h.tmpdir()
    finally(function() h.rm(dest) end)
    h.writefile(root .. stage.MODPROBE, by[stage.MODPROBE].after)
    local hook = by[conf .. "/hooks/zz-vfioinit-trial"].after:gsub(stage.MODPROBE, root .. stage.MODPROBE)
    h.writefile(dest .. "/hook", hook, 493)
    local out, ok = h.sh("DESTDIR=" .. h.q(dest .. "/img") .. " sh " .. h.q(dest .. "/hook"))
    assert.is_true(ok, out)
    assert.are.equal(by[stage.MODPROBE].after, h.readfile(dest .. "/img/etc/modprobe.d/vfioinit.conf"))
    -- nothing of root's configuration is in the plan of files to write
    for p in pairs(by) do assert.are.equal(stage.STAGE, p:sub(1, #stage.STAGE), p) end
  end)

  it("refuses what a staged build cannot read: a generator file outside its configuration", function()
    local root = root_with_confdir()
    finally(function() h.rm(root) end)
    local ctx = context.new({ root = root })
    local gen = require("vfioinit.generators").new():get("dracut")
    local s, err = stage.plan(ctx, gen, { { generator = "dracut", path = "/usr/lib/dracut/modules.d/90vfioinit-bind/module-setup.sh",
      after = "x" } }, KVER, "/boot/x")
    assert.is_nil(s)
    assert.matches("/usr/lib/dracut/modules.d/90vfioinit-bind/module-setup.sh: dracut keeps this file outside", err, 1, true)
    -- a generator of one's own without trial_stage
    s, err = stage.plan(ctx, { name = "mkinitfs" }, {}, KVER, "/boot/x")
    assert.is_nil(s)
    assert.matches("mkinitfs: no staged build for a trial image", err, 1, true)
  end)

  it("booster: the modprobe.d options go on the trial's command line as booster's init reads them", function()
    local gen = require("vfioinit.generators").new():get("booster")
    local mp = { generator = "modprobe", path = "/etc/modprobe.d/vfioinit.conf",
      after = "# x\noptions vfio-pci ids=1af4:1000,10de:1b80 \\\n  disable_vga=1\nsoftdep nouveau pre: vfio-pci\n" }
    local words = assert(stage.cmdline_words(gen, { mp }))
    -- booster's init/cmdline.go: a key with a dot is <module>.<param>, the module name normalized
    local params = {}
    for _, w in ipairs(words) do
      local mod, param = w:match("^([^.=]+)%.(.+)$")
      params[#params + 1] = mod:gsub("-", "_") .. " " .. param
    end
    -- modprobe, the other reader, gives the same options for vfio_pci
    local root = h.tmpdir()
    finally(function() h.rm(root) end)
    h.writefile(root .. "/etc/modprobe.d/vfioinit.conf", mp.after)
    local shown = h.sh("modprobe -C " .. h.q(root .. "/etc/modprobe.d") .. " --showconfig 2>/dev/null | grep '^options vfio_pci '")
    local want = {}
    for a in shown:gsub("^options vfio_pci ", ""):gmatch("%S+") do want[#want + 1] = "vfio_pci " .. a end
    assert.are.same(want, params)
    assert.are.same({}, assert(stage.cmdline_words(require("vfioinit.generators").new():get("dracut"), { mp })))
    -- an option without a value is not a module parameter booster's init takes
    local r, err = stage.cmdline_words(gen, { { path = mp.path, after = "options vfio-pci nointxmask\n" } })
    assert.is_nil(r)
    assert.matches("/etc/modprobe.d/vfioinit.conf:1: `nointxmask` has no value", err, 1, true)
  end)

  it("mkinitcpio: the staged modprobe.d file goes in by --include SRC:DEST, refused where mkinitcpio has none", function()
    local root = h.tmpdir()
    finally(function() h.rm(root) end)
    local ctx = context.new({ root = root })
    local gen = require("vfioinit.generators").new():get("mkinitcpio")
    local mp = { { generator = "modprobe", path = "/etc/modprobe.d/vfioinit.conf", after = "options vfio-pci ids=1af4:1000\n" } }
    -- mkinitcpio 38's option table (no include), then 41's
    h.writefile(root .. "/usr/bin/mkinitcpio", "_opt_long=('add:' 'addhooks:' 'config:' 'generate:')\n")
    local s, err = stage.plan(ctx, gen, mp, KVER, "/boot/x")
    assert.is_nil(s)
    assert.matches("/usr/bin/mkinitcpio: this mkinitcpio has no --include", err, 1, true)
    h.writefile(root .. "/usr/bin/mkinitcpio", "_opt_long=('add:' 'addhooks:' 'include:' 'config:' 'generate:')\n")
    s = assert(stage.plan(ctx, gen, mp, KVER, "/boot/x"))
    assert.are.equal("--include " .. stage.MODPROBE .. ":/etc/modprobe.d/vfioinit.conf", table.concat(s.argv, " ", #s.argv - 1))
    local staged
    for _, f in ipairs(s.files) do if f.path == stage.MODPROBE then staged = f.after end end
    assert.are.equal(mp[1].after, staged)
  end)
end)

describe("dropping a trial alone (state.revert only=)", function()
  it("reverts the trial's files and keeps every other record, byte for byte", function()
    local root = h.tmpdir()
    finally(function() h.rm(root) end)
    h.writefile(root .. "/etc/initramfs-tools/modules", "# mine\n")
    assert(state.journal(root, {
      { generator = "initramfs-tools", path = "/etc/initramfs-tools/modules", before = "# mine\n", after = "# mine\nvfio\n" },
      { generator = "trial", path = "/etc/vfioinit/trial/record", after = "r\n" } }))
    h.writefile(root .. "/etc/initramfs-tools/modules", "# mine\nvfio\n")
    h.writefile(root .. "/etc/vfioinit/trial/record", "r\n")
    assert(state.finish(root))
    local list = assert(state.revert(root, { only = function(e) return e.generator == "trial" end }))
    local actions = {}
    for _, e in ipairs(list) do actions[e.path] = e.action end
    assert.are.equal("removed", actions["/etc/vfioinit/trial/record"])
    assert.is_nil(actions["/etc/initramfs-tools/modules"])
    assert.is_nil(core.fs.stat(root, "/etc/vfioinit"), "the trial's directories went with it")
    assert.are.equal("# mine\nvfio\n", h.readfile(root .. "/etc/initramfs-tools/modules"))
    -- the full revert still has the rest, and its original
    local files = {}
    for _, e in ipairs(assert(state.load(root))) do if e.kind ~= "dir" then files[#files + 1] = e.path end end
    assert.are.same({ "/etc/initramfs-tools/modules" }, files)
    assert(state.revert(root, {}))
    assert.are.equal("# mine\n", h.readfile(root .. "/etc/initramfs-tools/modules"))
  end)
end)

describe("trial evidence", function()
  local function root_with(rec, grubenv)
    local root = h.tmpdir()
    h.writefile(root .. record.PATH, record.serialize(rec))
    if grubenv then h.writefile(root .. rec.grubenv, assert(grub.grubenv_set(nil, grubenv, rec.grubenv))) end
    return root
  end

  it("GRUB: the last boot was the trial's (booted), or GRUB started again since (failed); a live kernel decides by its marker", function()
    local rec = sample()
    local root = root_with(rec, { next_entry = "", [grub.VAR] = rec.id })
    finally(function() h.rm(root) end)
    local ev = trial.evidence(root, assert(record.load(root)))
    assert.are.equal("booted", ev.state)
    assert.is_true(ev.booted)
    -- the same root seen as the running system: its kernel decides
    local live = h.tmpdir()
    finally(function() h.rm(live) end)
    h.writefile(live .. "/proc/cmdline", "BOOT_IMAGE=/boot/vmlinuz ro quiet\n")
    ev = trial.evidence(root, rec, { sysfs = live })
    assert.are.equal("failed", ev.state)
    h.writefile(live .. "/proc/cmdline", "BOOT_IMAGE=/boot/vmlinuz ro vfioinit.trial=" .. rec.id .. " quiet\n")
    ev = trial.evidence(root, rec, { sysfs = live })
    assert.are.equal("running", ev.state)
    h.writefile(root .. rec.grubenv, assert(grub.grubenv_set(nil, { next_entry = "", [grub.VAR] = rec.id .. ":later" }, "x")))
    ev = trial.evidence(root, rec)
    assert.are.equal("failed", ev.state)
    assert.is_false(ev.booted)
  end)

  it("systemd-boot: only a counter systemd-bless-boot removed is a good boot seen from the root", function()
    local rec = sample()
    rec.loader, rec.entry = "bls", bls.base("/boot/efi/loader/entries", KVER)
    local root = root_with(rec)
    finally(function() h.rm(root) end)
    h.writefile(root .. rec.entry .. "+0-1.conf", "title x\n")
    assert.are.equal("started", trial.evidence(root, rec).state)
    h.sh("mv " .. h.q(root .. rec.entry .. "+0-1.conf") .. " " .. h.q(root .. rec.entry .. ".conf"))
    assert.are.equal("booted", trial.evidence(root, rec).state)
  end)
  it("a UKI: the trial UKI's counter decides as a BLS entry's does", function()
    local rec = sample()
    rec.loader, rec.entry = "uki", assert(uki.base("/efi/EFI/Linux/arch-" .. KVER .. ".efi"))
    rec.image = rec.entry .. "+1.efi"
    local root = root_with(rec)
    finally(function() h.rm(root) end)
    assert.are.equal("unknown", trial.evidence(root, rec).state)
    h.writefile(root .. rec.entry .. "+1.efi", "MZ")
    assert.are.equal("pending", trial.evidence(root, rec).state)
    h.sh("mv " .. h.q(root .. rec.entry .. "+1.efi") .. " " .. h.q(root .. rec.entry .. "+0-1.efi"))
    assert.are.equal("started", trial.evidence(root, rec).state)
    h.sh("mv " .. h.q(root .. rec.entry .. "+0-1.efi") .. " " .. h.q(root .. rec.entry .. ".efi"))
    assert.are.equal("booted", trial.evidence(root, rec).state)
  end)
end)

describe("trial CLI", function()
  it("--trial-cmdline needs --trial; commit needs a trial", function()
    local code, _, err = h.cli("apply --trial-cmdline panic=5")
    assert.are.equal(1, code)
    assert.matches("--trial-cmdline applies to apply only with --trial", err, 1, true)
    local root = h.tmpdir()
    finally(function() h.rm(root) end)
    local out
    code, out = h.cli("--root " .. h.q(root) .. " --json commit")
    assert.are.equal(1, code)
    assert.matches("no trial to commit", h.pyjson(out, "d['error']"), 1, true)
  end)

  it("a trial takes no signing key: its own images would boot unsigned", function()
    local root = h.tmpdir()
    finally(function() h.rm(root) end)
    local rep, err = require("vfioinit").update_initramfs({ root = root, trial = true, sign = { key = "/k", cert = "/c" } })
    assert.is_nil(rep)
    assert.matches("trial=true takes no sign=", err, 1, true)
  end)
end)

describe("booster trial with --ids (the booster stand-in, chrooted)", function()
  local root_it = h.chroot_it(it, pending)
  local APPLETS = "sh cat echo printf mkdir mktemp find cpio mv rm sleep"
  -- booster's `build` options (generator/main.go BuildCommand): those taking a value, then flags
  local VALUE = { ["--init-binary"] = true, ["--compression"] = true, ["--kernel-version"] = true,
    ["--modules-dir"] = true, ["--config"] = true, ["--crypttab"] = true }
  local FLAG = { ["--force"] = true, ["-f"] = true, ["--universal"] = true, ["--strip"] = true }

  -- one line of the stand-in's log, read the way booster's go-flags parser reads it
  local function booster_args(line)
    local w = {}
    for x in line:gmatch("%S+") do w[#w + 1] = x end
    assert.are.equal("build", w[1], line)
    local o, i = { positional = {} }, 2
    while w[i] do
      if VALUE[w[i]] then o[w[i]] = w[i + 1]; i = i + 2
      elseif FLAG[w[i]] then o[w[i]] = true; i = i + 1
      else assert(w[i]:sub(1, 1) ~= "-", "booster has no option " .. w[i]); o.positional[#o.positional + 1] = w[i]; i = i + 1 end
    end
    return o
  end

  -- the YAML keys booster reads, by PyYAML: modules_force_load (parseCommaList) and extra_files
  local function booster_yaml(path)
    local out, ok = h.sh("/usr/bin/python3 -c " .. h.q("import sys, yaml\n"
      .. "d = yaml.load(open(sys.argv[1]), Loader=yaml.BaseLoader) or {}\n"
      .. "for k in ('modules_force_load', 'extra_files', 'compression'):\n"
      .. "    print(','.join(x.strip() for x in d.get(k, '').split(',') if x.strip()))\n") .. " " .. h.q(path) .. " 2>&1")
    assert(ok, out)
    local mfl, extra, comp = out:match("^(.-)\n(.-)\n(.-)\n$")
    local function list(s) local t = {}; for x in s:gmatch("[^,]+") do t[#t + 1] = x end; return t end
    return { modules_force_load = list(mfl), extra_files = list(extra), compression = comp }
  end

  root_it("builds the trial image through --config with the VFIO modules; the ids go on the trial's command line", function()
    local root = h.make_root({ os = { ID = "arch" }, files = {
      ["/etc/booster.yaml"] = "compression: zstd\nmodules_force_load: amdgpu\n",
      ["/usr/share/libalpm/hooks/90-booster-install.hook"] = "[Trigger]\n" } })
    finally(function() h.rm(root) end)
    h.install_kernel(root, "cloud", KVER)
    h.sh("mkdir -p " .. h.q(root .. "/bin") .. " " .. h.q(root .. "/usr/bin") .. " " .. h.q(root .. "/tmp"))
    h.sh("cp " .. h.q(h.static_busybox()) .. " " .. h.q(root .. "/bin/busybox"))
    h.sh("cd " .. h.q(root .. "/bin") .. " && for a in " .. APPLETS .. "; do ln -s busybox $a; done")
    h.sh("cp " .. h.q(h.project .. "/spec/fixtures/standin-booster") .. " " .. h.q(root .. "/usr/bin/booster"))
    local image = "/boot/booster-" .. KVER .. ".img"
    h.writefile(root .. "/boot/vmlinuz-" .. KVER, "kernel")
    h.booster_image(root, KVER, image)
    h.writefile(root .. "/boot/loader/entries/arch.conf", ("title Arch Linux\nlinux /vmlinuz-%s\ninitrd /booster-%s.img\n"
      .. "options root=/dev/vda rw\n"):format(KVER, KVER))
    local before = { yaml = h.readfile(root .. "/etc/booster.yaml"), image = h.readfile(root .. image) }

    local code, out, err = h.cli("--root " .. h.q(root) .. " --ids 1af4:1000 --json apply --trial")
    assert.are.equal(0, code, out .. err)
    local rec = assert(record.load(root))
    -- the default image, booster.yaml and modprobe.d stay as they were
    assert.are.equal(before.image, h.readfile(root .. image))
    assert.are.equal(before.yaml, h.readfile(root .. "/etc/booster.yaml"))
    assert.is_nil(h.readfile(root .. "/etc/modprobe.d/vfioinit.conf"))

    -- what booster was asked: one build of the trial image, with a config of its own
    local log = assert(h.readfile(root .. "/var/log/standin-booster.argv"))
    assert.are.equal(1, select(2, log:gsub("\n", "")))
    local a = booster_args(log:match("^[^\n]*"))
    assert.are.same({ rec.image }, a.positional)
    assert.are.equal(KVER, a["--kernel-version"])
    assert.are_not.equal("/etc/booster.yaml", a["--config"])
    local conf = booster_yaml(root .. a["--config"])
    local force = {}
    for _, m in ipairs(conf.modules_force_load) do force[m] = true end
    for _, m in ipairs({ "vfio", "vfio_iommu_type1", "vfio_pci", "amdgpu" }) do assert.is_true(force[m], m) end
    assert.are.equal("zstd", conf.compression)
    -- every extra file booster would copy is there (booster fails on a missing one)
    for _, f in ipairs(conf.extra_files) do assert.truthy(core.fs.stat(root, f), f) end

    -- the trial entry: booster's init takes vfio-pci's ids from its command line
    local entry = assert(bls.find(context.new({ root = root }), rec.entry))
    local e = bootcfg.bls(assert(h.readfile(root .. entry)))
    local words = {}
    for w in e.options:gmatch("%S+") do words[w] = true end
    assert.is_true(words["vfio-pci.ids=1af4:1000"], e.options)
    assert.is_true(words["vfioinit.trial=" .. rec.id], e.options)
    assert.are.same({ "/booster-" .. KVER .. ".img.vfioinit-trial" }, e.initrd)

    code, out, err = h.cli("--root " .. h.q(root) .. " revert")
    assert.are.equal(0, code, out .. err)
    assert.is_nil(h.readfile(root .. rec.image))
    assert.is_nil(bls.find(context.new({ root = root }), rec.entry))
    assert.is_false(record.load(root))
    assert.are.equal(before.image, h.readfile(root .. image))
    assert.are.equal(before.yaml, h.readfile(root .. "/etc/booster.yaml"))
  end)
end)
