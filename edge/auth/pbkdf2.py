# PBKDF2-HMAC-SHA256 (RFC 8018 §5.2, HMAC per RFC 2104). CPython has it in
# hashlib.pbkdf2_hmac (OpenSSL); MicroPython has only hashlib.sha256, with
# no copy(), so the same algorithm is written out here: the key's inner and
# outer pads are computed once, each HMAC hashes pad + message, and the
# iterates are XORed as big integers (one int op per iteration, not 32 byte
# ops). tests/core/test_auth.py checks both against RFC 7914 §11's vectors.
import hashlib

_BLOCK = 64  # SHA-256's block size (RFC 2104's B)
_DIGEST = 32  # SHA-256's output (RFC 2104's L)


def pads(key):
    """HMAC-SHA256's (inner, outer) pads of key (RFC 2104 §2)."""
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    key = key + bytes(_BLOCK - len(key))
    return bytes(c ^ 0x36 for c in key), bytes(c ^ 0x5C for c in key)


def hmac(ipad, opad, msg):
    h = hashlib.sha256(ipad)
    h.update(msg)
    o = hashlib.sha256(opad)
    o.update(h.digest())
    return o.digest()


def pbkdf2_pure(password, salt, iterations, dklen=_DIGEST):
    """RFC 8018 §5.2 over hashlib.sha256 alone (MicroPython)."""
    ipad, opad = pads(password)
    out = b""
    i = 1
    while len(out) < dklen:
        u = hmac(ipad, opad, salt + i.to_bytes(4, "big"))  # U_1 = PRF(P, S || INT(i))
        acc = int.from_bytes(u, "big")
        for _ in range(iterations - 1):
            u = hmac(ipad, opad, u)  # U_j = PRF(P, U_{j-1})
            acc ^= int.from_bytes(u, "big")
        out += acc.to_bytes(_DIGEST, "big")
        i += 1
    return out[:dklen]


def pbkdf2(password, salt, iterations, dklen=_DIGEST):
    """PBKDF2-HMAC-SHA256 of bytes password and salt: hashlib's where it
    exists (CPython), else pbkdf2_pure."""
    f = getattr(hashlib, "pbkdf2_hmac", None)
    if f is not None:
        return f("sha256", password, salt, iterations, dklen)
    return pbkdf2_pure(password, salt, iterations, dklen)
