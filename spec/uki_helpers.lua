-- Real unified kernel images for the specs: the systemd EFI stub (Debian systemd-boot-efi)
-- with sections added by objcopy the way mkinitcpio v41 does it without ukify
-- (functions: uki_add_section; `--add-section NAME=FILE --change-section-vma NAME=VMA`,
-- each VMA after the stub's last section, aligned to its SectionAlignment), and an
-- initramfs made by GNU cpio from a tree the spec writes.
local h = require "helpers"

local M = {}
local q, sh = h.q, h.sh

M.STUB = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub"

-- Why UKIs cannot be made here (nil when they can).
function M.missing()
  if not io.open(M.STUB) then return M.STUB .. " missing (apt-get install systemd-boot-efi)" end
  for _, c in ipairs({ "objcopy", "objdump", "cpio", "zstd" }) do
    if not select(2, sh("command -v " .. c .. " >/dev/null 2>&1")) then return c .. " not installed" end
  end
end

-- An `it` that is pending with the reason when UKIs cannot be made (busted's `it` and
-- `pending` live in the spec file's environment, so the spec passes them).
function M.guard(it, pending)
  return function(desc, fn)
    local why = M.missing()
    if why then pending(desc .. " (" .. why .. ")") else it(desc, fn) end
  end
end

-- A newc cpio of the files {name = content} under dir/tree, compressed with `comp`
-- ("zstd", "gzip" or "none"); returns the host path of the result.
function M.initramfs(dir, files, comp, name)
  local tree = dir .. "/tree-" .. (name or "main")
  for rel, content in pairs(files) do h.writefile(tree .. "/" .. rel, content) end
  local out = dir .. "/" .. (name or "main") .. ".cpio"
  local filter = ({ zstd = " | zstd -qc", gzip = " | gzip -nc", none = "" })[comp or "zstd"]
  local o, ok = sh(("cd %s && find . | LC_ALL=C sort | cpio -o -H newc --quiet%s > %s")
    :format(q(tree), filter, q(out)))
  assert(ok, o)
  return out
end

local function hexnum(s) return tonumber(s, 16) end

-- make(dir, out, sections): objcopy the stub to host path `out` with the sections
-- {{".name", host file}, ...} in that order, as mkinitcpio v41 places them.
function M.make(out, sections)
  local p = sh("LC_ALL=C objdump -p " .. q(M.STUB))
  local align = hexnum(p:match("SectionAlignment%s+(%x+)"))
  local last = 0
  for line in sh("LC_ALL=C objdump -h " .. q(M.STUB)):gmatch("[^\n]+") do
    local size, vma = line:match("^%s*%d+%s+%S+%s+(%x+)%s+(%x+)")
    if size then last = math.max(last, hexnum(size) + hexnum(vma)) end
  end
  local function up(n) return (n + align - 1) // align * align end
  local offset = up(last)
  local args = { "objcopy", q(M.STUB), "-p" }
  for _, s in ipairs(sections) do
    args[#args + 1] = ("--add-section %s=%s --change-section-vma %s=0x%x"):format(s[1], q(s[2]), s[1], offset)
    offset = offset + up(assert(io.open(s[2])):seek("end"))
  end
  args[#args + 1] = q(out)
  local o, ok = sh(table.concat(args, " ") .. " 2>&1")
  assert(ok, o)
  return out
end

-- A UKI at host path `out` with .osrel, .cmdline (mkinitcpio writes "<line>\n\0"),
-- .uname, .linux (the bytes given, or a real kernel when the spec has one) and .initrd.
function M.uki(dir, out, opts)
  local files = {}
  local function put(name, content)
    local f = dir .. "/sec" .. name
    h.writefile(f, content)
    files[#files + 1] = { name, f }
  end
  put(".osrel", opts.osrel or 'NAME="Debian GNU/Linux"\nID=debian\n')
  if opts.cmdline then put(".cmdline", opts.cmdline .. "\n\0") end
  put(".uname", opts.uname or "6.1.0-test")
  if opts.linux then files[#files + 1] = { ".linux", opts.linux } else put(".linux", ("\0"):rep(4096)) end
  files[#files + 1] = { ".initrd", opts.initrd }
  return M.make(out, files)
end

-- The section table as objdump prints it: {name=, size=, offset=, vma=} per section.
function M.objdump(path)
  local t = {}
  for line in sh("LC_ALL=C objdump -h " .. q(path)):gmatch("[^\n]+") do
    local name, size, vma, off = line:match("^%s*%d+%s+(%S+)%s+(%x+)%s+(%x+)%s+%x+%s+(%x+)")
    if name then t[#t + 1] = { name = name, size = hexnum(size), offset = hexnum(off), vma = hexnum(vma) } end
  end
  return t
end

-- boot(dir, uki, expect[, secure]) -> the guest's command line, seconds, the probe's output:
-- `uki` (a host path) booted as the ESP's EFI/BOOT/BOOTX64.EFI under OVMF (tools/boot-probe
-- --uefi; `secure`: --secure-boot, Debian's snakeoil firmware). `expect`: the driver
-- 1af4:1000 must be bound to, or "refused" (the firmware starts no kernel).
function M.boot(dir, uki, expect, secure)
  local esp = dir .. "/esp"
  sh(("rm -rf %s && mkdir -p %s/EFI/BOOT && cp %s %s/EFI/BOOT/BOOTX64.EFI"):format(q(esp), q(esp), q(uki), q(esp)))
  local out, ok
  -- TCG on a loaded machine: the guest kernel's IO-APIC timer check through QEMU's
  -- interrupt remapping (intel-iommu) can time out and panic before any initramfs code
  -- runs; that boot says nothing about the image, so it is tried again (twice at most).
  for _ = 1, 3 do
    out, ok = sh(("env -u LD_PRELOAD tools/boot-probe --uefi %s%s --expect %s --timeout 900 2>&1")
      :format(q(esp), secure and " --secure-boot" or "", expect))
    if ok or not out:find("timer doesn't work through Interrupt-remapped IO-APIC", 1, true) then break end
    io.stderr:write("\n[uefi boot: the guest's timer check panicked under TCG; booting again]\n")
  end
  local keep = {}
  for l in out:gmatch("[^\n]+") do
    if l:match("^PROBE ") or l:match("^RESULT ") or l:match("^CMDLINE ") or l:match("refused the image") then keep[#keep + 1] = l end
  end
  io.stderr:write(("\n[uefi%s boot %s, expect %s]\n  %s\n"):format(secure and " secure" or "", uki:match("[^/]+$"), expect,
    table.concat(keep, "\n  ")))
  assert(ok, "boot-probe --uefi did not see " .. (expect == "refused" and "the firmware refuse the image"
    or ("1af4:1000 bound to " .. expect)) .. ":\n" .. out)
  return out:match("\nCMDLINE ([^\n]*)"), tonumber(out:match("total=([%d.]+)s") or out:match("boot=([%d.]+)s")), out
end

return M
