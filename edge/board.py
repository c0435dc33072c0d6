# What a board's firmware/boot.py and firmware/main.py share (docs/firmware.md):
# the "board" section of its config.json (Wi-Fi, watchdog, safe mode, the
# profile it was built from) and the boot counter behind safe mode. Not part
# of edge/config.py's schema: the broker's boot never imports this module, so
# it costs a board's heap nothing once main.py has started the broker;
# split() takes the section out before edge.config.load() sees the rest.
# `edgebroker deploy` validates config.json with the same two.
from edge.errors import ConfigError

# key -> (kind, default, lo, hi); "str": lo/hi bound the length
KEYS = {
    "profile": ("str", "", 0, 64),  # firmware/profiles/<name>.json it started from
    "heap_bytes": ("int", 0, 0, None),  # the heap the profile is sized for; 0: unknown
    "wifi_ssid": ("str", "", 0, 32),  # "": no Wi-Fi (none on the board, or set up elsewhere)
    "wifi_password": ("str", "", 0, 64),
    "hostname": ("str", "", 0, 32),
    "wifi_attempts": ("int", 6, 1, 100),  # back-off 1, 2, 4, ... 30 s between them
    "wifi_timeout_ms": ("int", 10000, 1000, 120000),  # per attempt
    "wdt_ms": ("int", 0, 0, 3600000),  # machine.WDT timeout while the broker runs; 0: off
    # main.py's starts in a row that never ran the broker for STABLE_MS
    # before safe mode
    "safe_mode_boots": ("int", 3, 1, 100),
}
SECTION = "board"
COUNTER = "boot.count"  # on the board's flash, next to config.json
STABLE_MS = 30000  # a broker up this long ends a boot loop


def split(raw):
    """(board section with defaults, the rest for edge.config.load()) from a
    parsed config.json; ConfigError names a bad key."""
    if not isinstance(raw, dict):
        raise ConfigError("config", "must be a JSON object of sections")
    rest = {}
    for k in raw:
        if k != SECTION:
            rest[k] = raw[k]
    got = raw.get(SECTION) or {}
    if not isinstance(got, dict):
        raise ConfigError(SECTION, "must be an object")
    out = {}
    for key in KEYS:
        out[key] = KEYS[key][1]
    for key in got:
        if key not in KEYS:
            raise ConfigError(SECTION + "." + key, "unknown key (known: %s)" % ", ".join(sorted(KEYS)))
        kind, _, lo, hi = KEYS[key]
        v = got[key]
        if kind == "int":
            if type(v) is not int or v < lo or (hi is not None and v > hi):
                raise ConfigError(SECTION + "." + key, "must be an integer %d..%s, got %r" % (lo, hi or "", v))
        elif not isinstance(v, str) or not lo <= len(v) <= hi:
            raise ConfigError(SECTION + "." + key, "must be a string of %d..%d characters" % (lo, hi))
        out[key] = v
    return out, rest


def read(path="config.json"):
    """split() of the board's config file; a missing file is an empty config
    (the profile's defaults were not deployed: the board's own defaults)."""
    from edge.config import parse_json

    try:
        with open(path, "rb") as f:
            text = f.read()
    except OSError:
        return split({})
    return split(parse_json(text, path))


def boots(path=COUNTER):
    """Starts in a row that did not reach a stable broker (0: none)."""
    try:
        with open(path) as f:
            return int(f.read() or 0)
    except (OSError, ValueError):
        return 0


def count_boot(path=COUNTER):
    """One more start not yet stable; returns how many there are now."""
    n = boots(path) + 1
    with open(path, "w") as f:
        f.write(str(n))
    return n


def stable(path=COUNTER):
    """The broker ran long enough: the boot loop, if any, is over."""
    import os

    try:
        os.remove(path)
    except OSError:
        pass  # no counter: nothing to reset
