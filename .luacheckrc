-- luacheck: the Lua sources, CLI and examples strictly; specs allow test-style leftovers
-- (multiple returns captured for one assertion, fixtures named for readability).
std = "lua54"
max_line_length = 150
files["spec/"] = { std = "+busted", max_line_length = 220, ignore = { "211", "213", "311", "314", "331" }, globals = { "_" } }
exclude_files = { "build*/**", "fuzz/**", "contrib/**" }
