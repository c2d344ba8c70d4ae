--- vfioinit.machine: what vfioinit knows about a Linux machine, each fact stated once.
--
-- Pure data and small pure functions (no I/O: a reader is passed in where a file is
-- needed). Every other module reads these tables when it runs, not when it loads, so
-- one change here (or in a test, through this module table) reaches every consumer:
--   * FAMILIES: distributions (os-release IDs) -> default generator (detect via each
--     generator's `distro_default`), shipped policy (`match`), initrd naming (dracut);
--   * GPU: drivers the VFIO modules must load before (every generator's ordering,
--     modprobe softdeps); VFIO: the modules vfioinit puts into the image;
--   * BIN_DIRS, MODULE_DIRS, MODPROBE_DIRS: where commands, kernels and modprobe.d live;
--   * version_less: `sort -V`; pkgbase: an Arch kernel's package name; command: where a
--     command is in BIN_DIRS.
local M = {}

M.VFIO = { "vfio", "vfio_iommu_type1", "vfio_pci", "vfio_virqfd" }
M.GPU = { "amdgpu", "radeon", "nouveau", "nvidia", "nvidia_modeset", "nvidia_uvm", "nvidia_drm", "i915", "xe" }

-- Where a command is installed, in the order spawn's default PATH searches them
-- (src/spawn.c DEFAULT_PATH), so the file detect and rebuild look at is the one that runs.
M.BIN_DIRS = { "/usr/sbin", "/usr/bin", "/sbin", "/bin" }

-- The path of command `name` in BIN_DIRS (a regular file, links followed), or nil.
-- `look` is the caller's root-confined stat (ctx.stat), or a run's context: a run asks for
-- some twenty commands (every generator, loader and command-line tool detects its own), so
-- it lists each directory once (ctx.once) and stats only the name it found.
function M.command(look, name)
  local stat, ctx = look, nil
  if type(look) == "table" then stat, ctx = look.stat, look.once and look end
  for _, d in ipairs(M.BIN_DIRS) do
    local listed = not ctx or ctx.once("bin-dir " .. d, function()
      -- a merged /usr's /sbin and /bin are links to /usr's: listed there already
      local st = stat(d)
      if not st then return {} end
      if st.dev and st.ino and ctx.once(("bin-dir-id %s:%s"):format(st.dev, st.ino), function() return d end) ~= d then
        return {}
      end
      local set = {}
      for _, n in ipairs(ctx.dir(d) or {}) do set[n] = true end
      return set
    end)[name]
    if listed then
      local st = stat(d .. "/" .. name)
      if st and st.type == "file" then return d .. "/" .. name end
    end
  end
end

-- Kernel module trees (/lib/modules/<kver>), first one wins for a kver in both.
M.MODULE_DIRS = { "/lib/modules", "/usr/lib/modules" }

-- modprobe.d as kmod reads it, in kmod's precedence order (a file name in an earlier
-- dir hides the same name in a later one).
M.MODPROBE_DIRS = { "/etc/modprobe.d", "/run/modprobe.d", "/usr/local/lib/modprobe.d",
  "/lib/modprobe.d", "/usr/lib/modprobe.d" }

-- An initramfs image's name for a kernel where the family names none (%s = kver).
M.INITRD = "/boot/initramfs-%s.img"

-- Distribution families. `ids`: os-release ID / ID_LIKE values; `generator`: the
-- default when no hook decides (docs/REFERENCE.md "Detection" rule 4); `policy`: the shipped
-- policy matching these ids; `initrd`: the image name its kernel scripts and boot
-- loaders expect (%s = kver), M.INITRD when absent.
M.FAMILIES = {
  { name = "arch", policy = "arch", generator = "mkinitcpio",
    ids = { "arch", "archarm", "manjaro", "manjaro-arm", "endeavouros", "garuda", "cachyos",
            "artix", "arcolinux", "steamos" } },
  { name = "debian", policy = "debian", generator = "initramfs-tools", initrd = "/boot/initrd.img-%s",
    ids = { "debian", "ubuntu", "linuxmint", "pop", "elementary", "kali", "raspbian",
            "devuan", "zorin", "neon" } },
  { name = "fedora", policy = "fedora", generator = "dracut",
    ids = { "fedora", "rhel", "centos", "rocky", "almalinux", "ol", "nobara", "amzn" } },
  { name = "suse", policy = "opensuse", generator = "dracut", initrd = "/boot/initrd-%s",
    ids = { "opensuse", "opensuse-leap", "opensuse-tumbleweed", "opensuse-slowroll",
            "opensuse-microos", "sles", "sled", "sle-micro", "suse" } },
  { name = "void", generator = "dracut", ids = { "void" } },
}

--- ids(field, value) -> the os-release IDs of every family whose `field` is `value`
-- (a new list), e.g. ids("generator", "dracut"), ids("policy", "arch").
function M.ids(field, value)
  local out = {}
  for _, f in ipairs(M.FAMILIES) do
    if f[field] == value then
      for _, id in ipairs(f.ids) do out[#out + 1] = id end
    end
  end
  return out
end

--- distro_ids(distro) -> os-release ID, then each ID_LIKE in order (rank = index).
function M.distro_ids(distro)
  local ids = { distro and distro.id }
  for _, l in ipairs(distro and distro.id_like or {}) do ids[#ids + 1] = l end
  return ids
end

--- rank(distro, list) -> 1 when ID is in list, 2.. for the ID_LIKE entry that is, else nil.
function M.rank(distro, list)
  for i, id in ipairs(M.distro_ids(distro)) do
    for _, m in ipairs(list) do
      if id == m then return i end
    end
  end
  return nil
end

--- family(distro) -> the family of os-release ID, else of the first ID_LIKE that has one.
function M.family(distro)
  for _, id in ipairs(M.distro_ids(distro)) do
    for _, f in ipairs(M.FAMILIES) do
      if M.rank({ id = id }, f.ids) then return f end
    end
  end
  return nil
end

--- initrd(distro, kver) -> the image path the distribution names kver's initramfs.
function M.initrd(distro, kver)
  local f = M.family(distro)
  return ((f and f.initrd) or M.INITRD):format(kver)
end

--- pkgbase(read, kver) -> Arch's kernel package name from <moddir>/<kver>/pkgbase, or nil.
-- read(path) -> text|nil. Only a plain package name counts: it becomes part of a path
-- under /boot (mkinitcpio's and booster's image names), so `/` or `..` must not pass.
function M.pkgbase(read, kver)
  for _, dir in ipairs(M.MODULE_DIRS) do
    local text = read(dir .. "/" .. kver .. "/pkgbase")
    local base = text and text:match("^%s*([%w._+%-]+)%s*$")
    if base and not base:match("^%.+$") then return base end
  end
  return nil
end

---------------------------------------------------------------------------
-- sort -V (gnulib filevercmp): kernels, mkinitcpio and dracut drop-ins.

-- A character's weight: digits 0 (runs compare as numbers), letters first, `~` before
-- everything (even the end), other bytes after letters.
local function weight(c)
  if c == "" then return 0 end
  if c:match("%d") then return 0 end
  if c:match("%a") then return c:byte() end
  if c == "~" then return -1 end
  return c:byte() + 256
end

local function verrevcmp(a, b)
  local i, j = 1, 1
  while i <= #a or j <= #b do
    local first_diff = 0
    while (i <= #a and not a:sub(i, i):match("%d")) or (j <= #b and not b:sub(j, j):match("%d")) do
      local ac, bc = weight(a:sub(i, i)), weight(b:sub(j, j))
      if ac ~= bc then return ac - bc end
      i, j = i + 1, j + 1
    end
    while a:sub(i, i) == "0" do i = i + 1 end
    while b:sub(j, j) == "0" do j = j + 1 end
    while a:sub(i, i):match("%d") and b:sub(j, j):match("%d") do
      if first_diff == 0 then first_diff = a:byte(i) - b:byte(j) end
      i, j = i + 1, j + 1
    end
    if a:sub(i, i):match("%d") then return 1 end
    if b:sub(j, j):match("%d") then return -1 end
    if first_diff ~= 0 then return first_diff end
  end
  return 0
end

-- filevercmp compares without file suffixes (`.tar.gz`) first.
local function strip_suffix(s)
  local prev
  repeat
    prev = s
    s = s:gsub("%.[A-Za-z~][A-Za-z0-9~]*$", "", 1)
  until s == prev or s == ""
  return s
end

--- version_less(a, b) -> a sorts before b under `sort -V`
function M.version_less(a, b)
  if a == b then return false end
  local r = verrevcmp(strip_suffix(a), strip_suffix(b))
  if r == 0 then r = verrevcmp(a, b) end
  if r == 0 then return a < b end
  return r < 0
end

return M
