# The password file, in mosquitto's spirit: one `user:hash` per line, `#`
# comments and blank lines ignored. The hash is
#   $pbkdf2-sha256$<iterations>$<salt, base64>$<derived key, base64>
# (the iteration count and salt per entry, so they can change one user at a
# time; docs/security.md). parse() takes the file's text (the runtime reads
# it); make() writes a line (`edgebroker passwd`, gateway/passwd.py).
import binascii

from edge.auth.pbkdf2 import equal, pbkdf2, verify  # noqa: F401 (verify, equal: for callers)

SCHEME = "pbkdf2-sha256"
MAX_ITERATIONS = 10000000  # a typo's 10^9 must not stall every login
MIN_SALT = 8  # bytes (RFC 8018 §4.1: at least 64 bits)


def check_user(name):
    """A user name the file can hold; ValueError with the reason."""
    if not name:
        raise ValueError("empty user name")
    for c in ":\n\r\0":
        if c in name:
            raise ValueError("user name must not contain ':', a newline or NUL")
    if name[0] == "#" or name != name.strip():
        raise ValueError("user name must not start with '#' or with or end in spaces")


def make(user, password, salt, n):
    """The file's line (no newline) for user with password (bytes), n
    iterations."""
    check_user(user)
    dk = pbkdf2(password, salt, n)
    return "%s:$%s$%d$%s$%s" % (user, SCHEME, n, binascii.b2a_base64(salt).decode().strip(),
                                binascii.b2a_base64(dk).decode().strip())


def parse(text):
    """{user: (iterations, salt, key)} from the file's text; ValueError
    ("line N: ...") on the first bad line. Never quotes a hash."""
    users = {}
    n = 0
    for line in text.split("\n"):
        n += 1
        line = line.strip()
        if not line or line[0] == "#":
            continue
        user, sep, h = line.partition(":")
        if not sep:
            raise ValueError("line %d: no ':' between user and hash" % n)
        check_user(user)
        if user in users:
            raise ValueError("line %d: user %s twice" % (n, user))
        parts = h.split("$")
        if len(parts) != 5 or parts[0] or parts[1] != SCHEME:
            raise ValueError("line %d: not a $%s$ hash (write it with `edgebroker passwd`)" % (n, SCHEME))
        try:
            it = int(parts[2])
            salt = binascii.a2b_base64(parts[3])
            dk = binascii.a2b_base64(parts[4])
        except ValueError:  # binascii.Error is a ValueError on both runtimes
            raise ValueError("line %d: bad iteration count or base64" % n)
        if not 1 <= it <= MAX_ITERATIONS or len(salt) < MIN_SALT or len(dk) < 16:
            raise ValueError("line %d: iterations 1..%d, a salt of %d+ bytes and a key of 16+ bytes"
                             % (n, MAX_ITERATIONS, MIN_SALT))
        users[user] = (it, salt, dk)
    return users
