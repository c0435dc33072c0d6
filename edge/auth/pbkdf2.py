# PBKDF2-HMAC-SHA256 (RFC 8018 §5.2, HMAC per RFC 2104) and the password
# check. CPython has it in hashlib.pbkdf2_hmac (OpenSSL); MicroPython has
# only hashlib.sha256, with no copy(), so the same algorithm is written out
# here: the key's inner and outer pads are computed once, each HMAC hashes
# pad + message, and the iterates are XORed as big integers (one int op per
# iteration, not 32 byte ops). tests/core/test_auth.py checks both against
# RFC 7914 §11's vectors and each other.
# (Few names: each new one is a qstr a board keeps for good; docs/security.md.)
import hashlib

from edge.compat import const

_BLOCK = const(64)  # SHA-256's block size (RFC 2104's B)
_DIGEST = const(32)  # SHA-256's output (RFC 2104's L)


def pbkdf2_pure(password, salt, n, size=_DIGEST):
    """RFC 8018 §5.2 over hashlib.sha256 alone (MicroPython): n
    iterations, size bytes out."""
    sha = hashlib.sha256
    if len(password) > _BLOCK:
        password = sha(password).digest()
    key = password + bytes(_BLOCK - len(password))
    ipad = bytes(c ^ 0x36 for c in key)  # RFC 2104 §2
    opad = bytes(c ^ 0x5C for c in key)
    out = b""
    i = 1
    while len(out) < size:
        u = salt + i.to_bytes(4, "big")  # U_1 = PRF(P, S || INT(i))
        acc = 0
        for _ in range(n):
            h = sha(ipad)
            h.update(u)
            h2 = sha(opad)
            h2.update(h.digest())
            u = h2.digest()  # U_j = PRF(P, U_{j-1})
            acc ^= int.from_bytes(u, "big")
        out += acc.to_bytes(_DIGEST, "big")
        i += 1
    return out[:size]


def pbkdf2(password, salt, n, size=_DIGEST):
    """PBKDF2-HMAC-SHA256 of bytes password and salt: hashlib's where it
    exists (CPython), else pbkdf2_pure."""
    try:
        f = hashlib.pbkdf2_hmac
    except AttributeError:  # MicroPython
        return pbkdf2_pure(password, salt, n, size)
    return f("sha256", password, salt, n, size)


def equal(a, b):
    """a == b for bytes, in a time that does not depend on where they differ
    (no early exit: a guess learns nothing from the reply's timing)."""
    d = len(a) ^ len(b)
    for i in range(min(len(a), len(b))):
        d |= a[i] ^ b[i]
    return d == 0


def verify(entry, password):
    """True if password (bytes) is entry's, (iterations, salt, key)."""
    return equal(pbkdf2(password, entry[1], entry[0], len(entry[2])), entry[2])
