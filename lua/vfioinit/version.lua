-- The version vfioinit reports, alone in a module: `vfioinit --version` loads this and
-- nothing else. src/core.h's VFIOINIT_CORE_VERSION names the same (spec/51, tools/release-rock).
return "0.1.0"
