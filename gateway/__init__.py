# edgebroker gateway: the CPython-only side (CLI, TOML config, logging).
# Imports edge/, never the reverse.
