# One broker per data directory (issue #15): two would append to one store
# and serve one set of sessions twice. The lock is <dir>/lock, taken at
# start whether persistence is on or not, holding the owner's pid.
#
# CPython holds an flock on it (lock_cpython.py). MicroPython has no fcntl,
# so here it is a record checked at start: on the unix port a holder whose
# process still runs (/proc/<pid>) blocks the start; a record left by a
# process that died (kill -9) or by a board's reset (a board has no /proc
# and runs one broker) is taken over, and the log says so. Check-then-write
# is not atomic (MicroPython has no O_EXCL): the record stops a second
# broker started by mistake, not two started in the same instant.

from edge.errors import ConfigError

NAME = "lock"


def held(d, pid):
    """The error of a start on a directory another broker holds."""
    return ConfigError("store.dir", "data directory %s is in use by edgebroker pid %s (%s/%s): stop that "
                       "broker, or give this one another directory" % (d, pid, d, NAME))


def _first_int(path):
    # the pid a lock record or /proc/<pid>/stat starts with; None: none
    try:
        with open(path) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _running(pid):
    # /proc/<pid>/stat exists and its state (after the name's ")") is not
    # Z: a zombie has died, its parent just has not reaped it yet
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def check(d, log, me):
    """Raise held() if d's lock record names a running process other than
    me (CPython runs it too, under its flock: a MicroPython broker holds no
    flock); log a stale one. The record's path."""
    path = d + "/" + NAME
    holder = _first_int(path)
    if holder is not None:
        # holder == me: a record from an earlier run that had this pid (a
        # container's pid 1), never another process
        if holder != me and _running(holder):
            raise held(d, holder)
        log(30, "store: %s left by pid %d, which is not running: taken over" % (path, holder))
    return path


def acquire(d, log):
    """Take d's lock or raise held(); the record's path (removing it
    releases the lock: edge/runtime/main.py, once this module is gone)."""
    me = _first_int("/proc/self/stat") or 0  # the unix port has no getpid; 0: a board
    path = check(d, log, me)
    with open(path, "w") as f:
        f.write("%d\n" % me)
    return path
