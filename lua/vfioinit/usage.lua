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

--- help(cli) -> the text `vfioinit --help` prints.
function M.help(cli)
  local opts = {}
  for _, opt in ipairs(cli.OPTIONS) do opts[#opts + 1] = { label(opt), opt.help } end
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

--- man(cli) -> the roff source of vfioinit(1).
function M.man(cli)
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
    .. "native driver does. It edits the configuration of the generators it finds (mkinitcpio, dracut, "
    .. "initramfs-tools, booster) through a plan with a unified diff, writes atomically with backups, "
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
  for _, opt in ipairs(cli.OPTIONS) do man_tp(out, man_label(opt), opt.help) end
  out[#out + 1] = ".SH EXIT STATUS"
  for _, e in ipairs(cli.EXIT) do man_tp(out, ".B " .. e[1], e[2]) end
  out[#out + 1] = ".SH ENVIRONMENT"
  for _, e in ipairs(cli.ENVIRONMENT) do man_tp(out, ".B " .. esc(e[1]), e[2]) end
  out[#out + 1] = ".SH OUTPUT\n" .. esc(cli.STREAMS)
  out[#out + 1] = ".SH EXAMPLES"
  for _, e in ipairs(cli.EXAMPLES) do out[#out + 1] = ".PP\n" .. esc(e[2]) .. ":\n.PP\n.RS\n.B " .. esc(e[1]) .. "\n.RE" end
  out[#out + 1] = ".SH SEE ALSO\n" .. esc("docs/CONTRACT.md (the public contract: Lua API, CLI, exit codes, "
    .. "JSON shapes) and README.md in the vfioinit sources, https://github.com/vfioinit/vfioinit")
  return table.concat(out, "\n") .. "\n"
end

return M
