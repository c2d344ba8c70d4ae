-- The CLI's documentation, rendered from cli.lua's tables (OPTIONS, COMMANDS, EXIT,
-- ENVIRONMENT, EXAMPLES, STREAMS): `--help` text and the roff man page vfioinit(1). One
-- source for both, so an option cannot be in one and missing from the other.
local M = {}

-- "--root DIR", "--generator NAME", "-h, --help"
local function label(opt)
  return (opt.short and (opt.short .. ", ") or "") .. opt[1] .. (opt.arg and (" " .. opt.arg) or "")
end

-- The synopsis's option words: those every command takes, [--root DIR] [--json].
local function synopsis_words(cli)
  local words = {}
  for _, opt in ipairs(cli.OPTIONS) do
    if not opt.commands then
      words[#words + 1] = "[" .. opt[1] .. (opt.arg and (" " .. opt.arg) or "") .. "]" .. (opt.list and "..." or "")
    end
  end
  return words
end

-- The options `command` takes besides those of the synopsis: "--generator, --kernel, ...";
-- with command nil, those of the synopsis (every command takes them).
local function command_options(cli, command)
  local list = {}
  for _, opt in ipairs(cli.OPTIONS) do
    if (command == nil) == (opt.commands == nil) and (command == nil or cli.takes(opt, command)) then
      list[#list + 1] = opt[1]
    end
  end
  return table.concat(list, ", ")
end

-- Words of `text` in lines of at most `width` columns, each line after the first indented.
local function wrap(text, width, indent)
  local lines, line = {}, ""
  for word in text:gmatch("%S+") do
    if line ~= "" and #line + 1 + #word > width then
      lines[#lines + 1] = line
      line = word
    else
      line = line == "" and word or (line .. " " .. word)
    end
  end
  lines[#lines + 1] = line
  return table.concat(lines, "\n" .. indent)
end

-- Rows of "  NAME  description" with the descriptions aligned at column `col`.
local function rows(list, col)
  local out = {}
  for _, r in ipairs(list) do
    local name, text = r[1], r[2]
    local pad = #name + 2 < col - 1 and (" "):rep(col - 2 - #name) or ("\n" .. (" "):rep(col))
    out[#out + 1] = "  " .. name .. pad .. wrap(text, 80 - col, (" "):rep(col)) .. "\n"
  end
  return table.concat(out)
end

-- An option's help, its {values} replaced by the names it stands for (cli.lua's `values`).
local function help_of(opt, names)
  return (opt.help:gsub("{values}", function() return table.concat(names[opt.values], ", ") end))
end

--- help(cli, names) -> the text `vfioinit --help` prints; names: { generators = {...} }.
function M.help(cli, names)
  local opts = {}
  for _, opt in ipairs(cli.OPTIONS) do opts[#opts + 1] = { label(opt), help_of(opt, names) } end
  local examples = {}
  for _, e in ipairs(cli.EXAMPLES) do
    examples[#examples + 1] = "  " .. e[1] .. "\n      " .. wrap(e[2], 74, "      ") .. "\n"
  end
  local commands = {}
  for _, c in ipairs(cli.COMMANDS) do
    local takes = command_options(cli, c[1])
    commands[#commands + 1] = rows({ c }, 16)
      .. (takes ~= "" and ((" "):rep(16) .. wrap("options: " .. takes, 64, (" "):rep(16)) .. "\n") or "")
  end
  local synopsis = table.concat(synopsis_words(cli), " ")
  return "usage: vfioinit " .. synopsis .. " COMMAND [OPTION]..."
    .. "\n       vfioinit --version | --help\n"
    .. "\ncommands (each also takes " .. command_options(cli, nil):gsub(", ([^,]*)$", " and %1")
    .. "):\n" .. table.concat(commands)
    .. "\noptions:\n" .. rows(opts, 28)
    .. "\nexit status:\n" .. rows(cli.EXIT, 6)
    .. "\nenvironment:\n" .. rows(cli.ENVIRONMENT, 26)
    .. "\noutput: " .. wrap(cli.STREAMS, 72, "  ") .. "\n"
    .. "\nexamples:\n" .. table.concat(examples)
end

-- roff-escape plain text: backslashes, hyphens (so they are not typeset as dashes), and a
-- leading . or ' (which would start a request).
local function esc(s)
  s = s:gsub("\\", "\\e"):gsub("%-", "\\-")
  return (s:gsub("^([.'])", "\\&%1"))
end

local function man_label(opt)
  return (opt.short and ("\\fB" .. esc(opt.short) .. "\\fR, ") or "") .. "\\fB" .. esc(opt[1]) .. "\\fR"
    .. (opt.arg and (" \\fI" .. esc(opt.arg) .. "\\fR") or "")
end

local function man_tp(out, tag, text)
  out[#out + 1] = ".TP\n" .. tag .. "\n" .. esc(text)
end

-- The man page's FILES: what vfioinit writes, each path inside root (--root). NN, <tool>
-- and * stand for what varies; a path ending in / is a directory and what is under it.
local FILES = {
  { "/var/lib/vfioinit/", "vfioinit's state: manifest (every file apply changed or created, which revert "
    .. "reads), backups/ (each file's content before vfioinit first changed it) and verified (the images "
    .. "read and found complete, so an unchanged one is not read again). revert removes it." },
  { "/etc/modprobe.d/vfioinit.conf", "with --ids or --softdeps: options vfio-pci ids= and softdeps that "
    .. "load vfio-pci before the GPU drivers; put into every image." },
  { "/etc/mkinitcpio.conf /etc/mkinitcpio.conf.d/*.conf", "mkinitcpio: MODULES (and HOOKS: modconf with "
    .. "--ids, vfioinit-bind with --device) of every config the presets build with, or of the config a "
    .. "preset names." },
  { "/etc/dracut.conf.d/NN-vfioinit.conf", "dracut: force_drivers, in a drop-in named to sort before "
    .. "any file that force-loads a GPU driver." },
  { "/etc/initramfs-tools/modules", "initramfs-tools: the modules loaded early." },
  { "/etc/booster.yaml", "booster: modules_force_load." },
  { "/etc/initcpio/install/vfioinit-bind /etc/initcpio/hooks/vfioinit-bind", "--device, mkinitcpio: "
    .. "the hook that has vfio-pci claim the devices by address before udev." },
  { "/usr/lib/dracut/modules.d/90vfioinit-bind/ /etc/dracut.conf.d/90-vfioinit-bind.conf",
    "--device, dracut: the module doing the same, and the drop-in that adds it." },
  { "/etc/initramfs-tools/scripts/init-top/00-vfioinit-bind", "--device, initramfs-tools: the script "
    .. "doing the same." },
  { "/etc/default/grub.d/vfioinit.cfg /etc/default/grub", "--cmdline, GRUB: the drop-in where "
    .. "grub-mkconfig reads drop-ins, else GRUB_CMDLINE_LINUX_DEFAULT; grub.cfg is then regenerated." },
  { "/etc/kernel/cmdline", "--cmdline: the command line kernel-install and the UKI generators use." },
  { "/etc/cmdline.d/vfioinit.conf", "--cmdline, mkinitcpio building UKIs." },
  { "/etc/dracut.conf.d/99-vfioinit-cmdline.conf", "--cmdline, dracut building UKIs." },
  { "/etc/vfioinit/<tool>.cmdline", "--cmdline where grubby or kernelstub edits the boot entries: a "
    .. "record of the operations apply runs through the tool, which revert inverts." },
  { "/etc/vfioinit/<target>.base", "--cmdline, where vfioinit created /etc/kernel/cmdline or "
    .. "/etc/cmdline.d/vfioinit.conf: the command line the new file started from, which tells the "
    .. "words that were there before vfioinit's; revert removes it with the file." },
  { "IMAGE.vfioinit-prev", "while an image is rebuilt: the previous one, put back when the rebuild fails "
    .. "or times out or the new image lacks a module." },
  { "FILE.vfioinit-edited", "revert --force: the content of a file edited since vfioinit wrote it." },
}

local SEE_ALSO = { "dracut(8)", "mkinitcpio(8)", "update-initramfs(8)", "booster(1)", "modprobe.d(5)",
  "kernel-install(8)", "bootctl(1)", "grub-mkconfig(8)", "grubby(8)" }

--- man(cli, names) -> the roff source of vfioinit(1).
function M.man(cli, names)
  local out = { '.TH VFIOINIT 1 "" "vfioinit" "User Commands"', ".SH NAME",
    "vfioinit \\- put the VFIO modules into every initramfs, before the GPU drivers",
    ".SH SYNOPSIS", ".B vfioinit" }
  for _, w in ipairs(synopsis_words(cli)) do
    out[#out + 1] = w:gsub("^%[(%S+) ?(%S*)%]", function(flag, arg)
      return "[\\fB" .. esc(flag) .. "\\fR" .. (arg ~= "" and (" \\fI" .. esc(arg) .. "\\fR") or "") .. "]"
    end):gsub("%.%.%.$", "\\&...")
  end
  out[#out + 1] = "\\fICOMMAND\\fR [\\fIOPTION\\fR]\\&...\n.br\n.B vfioinit\n\\fB\\-\\-version\\fR | \\fB\\-\\-help\\fR"
  out[#out + 1] = ".SH DESCRIPTION\n" .. esc("vfioinit puts the VFIO kernel modules into a Linux machine's "
    .. "initramfs, ordered before the GPU drivers, so that vfio-pci claims a passthrough device before its "
    .. "native driver does. It edits the configuration of the generators it finds ("
    .. table.concat(names.generators, ", ") .. ") through a plan with a unified diff, writes atomically with backups, "
    .. "rebuilds only stale images with the generator's own command and reads every image back to verify it.")
  out[#out + 1] = ".SH COMMANDS"
  for _, c in ipairs(cli.COMMANDS) do
    man_tp(out, ".B " .. c[1], c[2])
    local takes = command_options(cli, c[1])
    -- \% : an option is not hyphenated at a line's end
    if takes ~= "" then
      out[#out] = out[#out] .. "\n.br\nOptions: " .. takes:gsub("[^, ]+", function(o) return "\\%\\fB" .. esc(o) .. "\\fR" end)
    end
  end
  out[#out + 1] = ".SH OPTIONS"
  for _, opt in ipairs(cli.OPTIONS) do man_tp(out, man_label(opt), help_of(opt, names)) end
  out[#out + 1] = ".SH EXIT STATUS"
  for _, e in ipairs(cli.EXIT) do man_tp(out, ".B " .. e[1], e[2]) end
  out[#out + 1] = ".SH ENVIRONMENT"
  for _, e in ipairs(cli.ENVIRONMENT) do man_tp(out, ".B " .. esc(e[1]), e[2]) end
  out[#out + 1] = ".SH FILES\n" .. esc("Paths are inside the root vfioinit configures (--root). Every file "
    .. "vfioinit writes goes through the plan, its diff and its backup, and revert restores or removes it.")
  for _, f in ipairs(FILES) do
    local paths = {}
    for p in f[1]:gmatch("%S+") do paths[#paths + 1] = "\\fI" .. esc(p) .. "\\fR" end
    man_tp(out, table.concat(paths, ", "), f[2])
  end
  out[#out + 1] = ".SH OUTPUT\n" .. esc(cli.STREAMS)
  out[#out + 1] = ".SH EXAMPLES"
  for _, e in ipairs(cli.EXAMPLES) do out[#out + 1] = ".PP\n" .. esc(e[2]) .. ":\n.PP\n.RS\n.B " .. esc(e[1]) .. "\n.RE" end
  local refs = {}
  for _, r in ipairs(SEE_ALSO) do
    local name, sec = r:match("^(.-)%((%d)%)$")
    refs[#refs + 1] = "\\%\\fB" .. esc(name) .. "\\fR(" .. sec .. ")"  -- \\%: never hyphenated
  end
  out[#out + 1] = ".SH SEE ALSO\n" .. table.concat(refs, ", ") .. "\n.PP\n"
    .. esc("The public contract (Lua API, CLI, exit status, JSON output) and the README: "
    .. "https://github.com/vfioinit/vfioinit")
  return table.concat(out, "\n") .. "\n"
end

return M
