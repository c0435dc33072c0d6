# CPython (the gateway): [auth]'s files read again on SIGHUP, between two
# callbacks of the event loop, as mosquitto reloads its password and ACL
# files. A file with an error keeps the rules in force, logged.
import asyncio
import signal

from edge.errors import ConfigError
from edge.runtime.auth import load


def watch(settings, broker, log):
    """settings: what edge/runtime/auth.py's start() returned."""
    paths, anon = settings[:2], settings[2]

    def reload():
        try:
            users, acl = load(paths)
        except ConfigError as e:
            log(40, "auth: reload failed, previous files kept: %s" % e)
            return
        g = broker.auth
        g.reload(users, acl, anon, broker.sessions.values())
        log(20, "auth: reloaded (%s users, ACL file %s)" % (
            "no" if users is None else len(users), paths[1] or "none"))

    try:
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, reload)
    except (NotImplementedError, RuntimeError, ValueError) as e:
        log(30, "auth: no reload on SIGHUP here (%s)" % e)
