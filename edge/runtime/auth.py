# [auth] at start (and, on CPython, on SIGHUP): reads the password and ACL
# files, builds the broker's Guard (edge/auth/guard.py) and sets it as
# Broker.auth / Broker.acl. Imported by main.py only when [auth] sets
# something or the bind is not loopback: a board without auth pays nothing.
from edge.errors import ConfigError


def loopback(host):
    """host is this machine's own (auth.allow_anonymous's default)."""
    return host == "localhost" or host.startswith("127.") or host == "::1"


def _read(path, key):
    try:
        with open(path) as f:
            return f.read()
    except OSError as e:
        raise ConfigError(key, "cannot read %s: %s" % (path, e))


def load(settings):
    """(users, acl) from settings' files (None for one not set); raises
    ConfigError naming the key and the file's line."""
    users = acl = None
    path = settings["password_file"]
    if path:
        from edge.auth.passwords import parse

        try:
            users = parse(_read(path, "auth.password_file"))
        except ValueError as e:
            raise ConfigError("auth.password_file", "%s: %s" % (path, e))
    path = settings["acl_file"]
    if path:
        from edge.auth.acl import parse

        try:
            acl = parse(_read(path, "auth.acl_file").split("\n"))
        except ValueError as e:
            raise ConfigError("auth.acl_file", "%s: %s" % (path, e))
    return users, acl


def start(cfg, broker, log):
    """Set broker.auth from cfg; returns reload() (None when auth is off)."""
    a = cfg["auth"]
    bind = cfg["broker"]["bind"]
    settings = {"password_file": a["password_file"], "acl_file": a["acl_file"]}
    anon = a["allow_anonymous"]
    if anon is None:
        anon = loopback(bind)  # safe by default: anonymous only on loopback
    if not settings["password_file"] and not loopback(bind):
        if anon:
            log(30, "auth: %s is not loopback and no auth.password_file is set: anyone who reaches "
                    "the port may connect (docs/security.md)" % bind)
        else:
            log(30, "auth: %s is not loopback and no auth.password_file is set: clients without a user "
                    "name are refused, any user name is let in (set auth.allow_anonymous or a "
                    "password file; docs/security.md)" % bind)
    if not settings["password_file"] and not settings["acl_file"] and anon:
        return None  # nothing to check
    users, acl = load(settings)
    from edge.auth.guard import Guard

    lim = broker.limits.max_connections
    g = Guard(users, acl, anon, broker.conns, 4096 if lim > 1024 else 2 * lim + 8)
    broker.auth = g
    broker.acl = g if acl is not None else None
    log(20, "auth: %s, %s, anonymous clients %s" % (
        "%d users" % len(users) if users is not None else "no password file",
        "ACL file %s" % settings["acl_file"] if acl is not None else "no ACL file",
        "allowed" if anon else "refused"))

    def reload():
        # the files again (SIGHUP): a bad file keeps the old rules, logged
        try:
            users, acl = load(settings)
        except ConfigError as e:
            log(40, "auth: reload failed, previous files kept: %s" % e)
            return
        g.reload(users, acl, anon)
        broker.acl = g if acl is not None else None
        g.renew(broker.sessions.values())
        log(20, "auth: reloaded (%s, %s)" % (
            "%d users" % len(users) if users is not None else "no password file",
            "ACL file" if acl is not None else "no ACL file"))

    return reload


def on_sighup(reload, log):
    """CPython: reload() on SIGHUP, between callbacks of the event loop."""
    import asyncio
    import signal

    try:
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, reload)
    except (NotImplementedError, RuntimeError, ValueError) as e:
        log(30, "auth: no reload on SIGHUP here (%s)" % e)
