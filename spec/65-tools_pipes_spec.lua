-- The shell tools the tests boot and build with run under `set -o pipefail`. There a pipe into
-- `grep -q` is a race: grep exits at its first match, the writer then dies of SIGPIPE (or fails
-- with EPIPE where SIGPIPE is ignored) and pipefail reports the pipeline as failed, so a match
-- reads as "no match" whenever the input is larger than a pipe buffer. boot-probe missed a
-- probe that had run that way. The tools feed grep -q through a here-string or a process
-- substitution instead.
local h = require "helpers"

local function pipefail_scripts()
  local list = {}
  for f in h.sh("ls tools/* .ci/run"):gmatch("[^\n]+") do
    local fh = io.open(f, "rb")
    local text = fh and fh:read("a") or ""
    if fh then fh:close() end
    if text:match("^#![^\n]*bash") and text:match("set %-[a-z]*o pipefail") then
      list[#list + 1] = { path = f, text = text }
    end
  end
  return list
end

describe("tools run under pipefail", function()
  it("finds the scripts it checks", function()
    local names = {}
    for _, s in ipairs(pipefail_scripts()) do names[s.path] = true end
    assert.is_true(names["tools/boot-probe"])
    assert.is_true(names["tools/boot-follow"])
  end)

  it("never pipe into grep -q", function()
    local bad = {}
    for _, s in ipairs(pipefail_scripts()) do
      local n = 0
      for line in (s.text .. "\n"):gmatch("([^\n]*)\n") do
        n = n + 1
        local code = line:gsub("^%s*#.*", "")
        if code:match("|%s*grep%s+%-[A-Za-z]*q") then bad[#bad + 1] = s.path .. ":" .. n .. ": " .. line end
      end
    end
    assert.are.same({}, bad)
  end)

  it("the race is real: bash reports a matched grep -q as failed under pipefail", function()
    -- what the rule above guards against, shown on bash itself with a log larger than a pipe buffer
    local out = h.sh([[bash -c 'set -o pipefail; trap "" PIPE; f=$(mktemp); seq 1 200000 >"$f"
      n=0; for _ in 1 2 3 4 5; do tr -d "\r" <"$f" 2>/dev/null | grep -q "^1$" || n=$((n+1)); done
      m=0; for _ in 1 2 3 4 5; do grep -q "^1$" < <(tr -d "\r" <"$f" 2>/dev/null) || m=$((m+1)); done
      rm -f "$f"; echo "$n $m"']])
    local piped, substituted = out:match("(%d+) (%d+)")
    assert.is_true(tonumber(piped) > 0, "the pipe never lost a match: " .. out)
    assert.are.equal("0", substituted)
  end)
end)
