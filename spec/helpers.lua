-- Shared spec helpers: temp roots, file I/O outside the code under test, shell oracles.
local M = {}

M.project = os.getenv("PWD")
M.shared = os.getenv("VFIOINIT_SHARED") or (M.project .. "/../shared")
M.corpus = M.shared .. "/corpus"

-- Run a shell command, return its stdout (trailing newline kept), success flag, exit code.
function M.sh(cmd)
  local p = assert(io.popen(cmd, "r"))
  local out = p:read("a")
  local ok, _, code = p:close()
  return out, ok, code
end

function M.q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

function M.tmpdir()
  local out = M.sh("mktemp -d /tmp/vfioinit-spec.XXXXXX")
  return (out:gsub("%s+$", ""))
end

function M.rm(path) M.sh("rm -rf " .. M.q(path)) end

function M.readfile(path)
  local f = io.open(path, "rb"); if not f then return nil end
  local s = f:read("a"); f:close(); return s
end

-- Write a file under a host path, creating parent dirs.
function M.writefile(path, content, mode)
  M.sh("mkdir -p " .. M.q(path:match("^(.*)/[^/]*$")))
  local f = assert(io.open(path, "wb")); f:write(content); f:close()
  if mode then M.sh(("chmod %o %s"):format(mode, M.q(path))) end
end

function M.copy_corpus(rel, root, dest)
  M.writefile(root .. dest, assert(M.readfile(M.corpus .. "/" .. rel), rel))
end

-- A hash of every file's path, mode, mtime and content under dir: equal before/after means nothing changed.
function M.tree_hash(dir)
  return (M.sh("cd " .. M.q(dir) .. " && find . -printf '%p %m %T@ %s\\n' | sort && find . -type f -print0 | sort -z | xargs -0 -r sha256sum"))
end

-- bash as the oracle: source files in order and print an array's elements one per line.
function M.bash_array(files, var)
  local src = {}
  for _, f in ipairs(files) do src[#src + 1] = "source " .. M.q(f) end
  local script = table.concat(src, "; ") .. ("; for x in \"${%s[@]}\"; do printf '%%s\\n' \"$x\"; done"):format(var)
  local out, ok = M.sh("bash -c " .. M.q(script) .. " 2>&1")
  assert(ok, out)
  local t = {}
  for l in out:gmatch("([^\n]*)\n") do t[#t + 1] = l end
  return t
end

-- Where the real Debian kernel fixtures live (downloaded and unpacked by tools/fetch-kernel).
function M.cache_dir()
  return os.getenv("VFIOINIT_CACHE") or (os.getenv("HOME") .. "/.cache/vfioinit")
end

return M
