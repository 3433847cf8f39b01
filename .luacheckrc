-- luacheck configuration: `make lint` runs luacheck over lua/, bin/luasip,
-- examples/, spec/ and bench/.
std = "lua54"
max_line_length = 120
codes = true

-- scripts run by bin/luasip (and the runner itself) read their arguments
-- from the `arg` global
files["bin/luasip"] = { read_globals = { "arg" } }
files["examples"] = { read_globals = { "arg" } }
files["bench"] = { read_globals = { "arg" } }

-- busted's globals (describe, it, assert.*, finally, ...)
-- (callbacks in specs often take arguments they do not look at)
files["spec"] = { std = "+busted", unused_args = false }

-- scratch space of the specs (sanitizer trees, logs)
exclude_files = { "spec/tmp/**" }
