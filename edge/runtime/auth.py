# [auth] at start: reads the password and ACL files, builds the broker's
# Guard (edge/auth/guard.py) and sets it as Broker.auth.
# Imported by main.py only when [auth] sets something or the bind may not be
# loopback, and dropped after the start on a board: one without auth pays
# nothing. The reload on SIGHUP is CPython's (auth_cpython.py).
from edge.errors import ConfigError


def loopback(host):
    """host is this machine's own (auth.allow_anonymous's default)."""
    return host == "localhost" or host.startswith("127.") or host == "::1"


def load(paths):
    """(users, acl) from the files (password_file, acl_file), None for one
    not set; raises ConfigError naming the key and the file's line."""
    out = [None, None]
    for i in range(2):
        path = paths[i]
        if not path:
            continue
        key = ("auth.password_file", "auth.acl_file")[i]
        try:
            with open(path) as f:
                text = f.read()
        except OSError as e:
            raise ConfigError(key, "cannot read %s: %s" % (path, e))
        try:
            if i:
                from edge.auth.acl import parse

                out[i] = parse(text.split("\n"))
            else:
                from edge.auth.passwords import parse

                out[i] = parse(text)
        except ValueError as e:
            raise ConfigError(key, "%s: %s" % (path, e))
        text = None
    return out


def start(cfg, broker, log):
    """Set broker.auth from cfg. Returns (password_file, acl_file,
    anonymous) for a reload, or None when there is nothing to check."""
    a = cfg["auth"]
    bind = cfg["broker"]["bind"]
    t = cfg.get("tls")
    if t and t["certfile"] and t["bind"] and loopback(bind):
        bind = t["bind"]  # the TLS listener's address counts as much (docs/security.md "TLS")
    paths = (a["password_file"], a["acl_file"])
    anon = a["allow_anonymous"]
    if anon is None:
        anon = loopback(bind)  # safe by default: anonymous only on loopback
    if not paths[0] and not loopback(bind):
        log(30, "auth: %s is not loopback and no auth.password_file is set: %s (docs/security.md)" % (
            bind, "anyone who reaches the port may connect" if anon else
            "clients without a user name are refused, any user name is let in"))
    if not paths[0] and not paths[1] and anon:
        return None  # nothing to check
    users, acl = load(paths)
    from edge.auth.guard import Guard

    n = broker.limits.max_connections
    g = Guard(users, acl, anon, broker.conns, 4096 if n > 1024 else 2 * n + 8)
    broker.auth = g
    log(20, "auth: %s users, ACL file %s, anonymous clients %s" % (
        "no" if users is None else len(users), paths[1] or "none", "allowed" if anon else "refused"))
    return paths + (anon,)
