# Certificates for the TLS tests (the uplink's, docs/uplink.md "TLS"; the
# broker's [tls] listeners, test_26_tls.py; issue #21 point 3),
# made at test time with the openssl CLI into a directory of the test's:
# nothing secret is checked in. EC P-256 keys (fast to make, spoken by
# RabbitMQ's Erlang TLS, CPython's OpenSSL and MicroPython's mbedTLS).
#
#   ca.pem / ca.key          the CA RabbitMQ's certificate chains to
#   server.pem / server.key  RabbitMQ's, subjectAltName IP:127.0.0.1 only
#   client.pem / client.key  the edge's, for mutual TLS (same CA)
#   other-ca.pem             an unrelated CA: a server verified against it fails
#   *.der                    the same in DER (MicroPython's ssl takes DER)
import os
import subprocess

_COMMON = "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyAgreement\n"
_EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


def _run(args, cwd):
    subprocess.run(["openssl"] + args, cwd=cwd, check=True, timeout=30,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def ca(d, name):
    """A self-signed CA: name.pem, name.key."""
    _run(["req", "-x509"] + _EC + ["-keyout", name + ".key", "-out", name + ".pem", "-days", "2",
                                   "-subj", "/CN=edgebroker test %s" % name,
                                   "-addext", "basicConstraints=critical,CA:TRUE",
                                   "-addext", "keyUsage=critical,keyCertSign,cRLSign"], d)


def leaf(d, name, ext, ca="ca", cn=None):
    """name.pem, name.key signed by CA ca; ext: the extensions' lines
    (subjectAltName, extendedKeyUsage); cn: the subject's CN (name)."""
    with open(os.path.join(d, name + ".ext"), "w") as f:
        f.write(_COMMON + ext)
    _run(["req"] + _EC + ["-keyout", name + ".key", "-out", name + ".csr", "-subj", "/CN=" + (cn or name)], d)
    _run(["x509", "-req", "-in", name + ".csr", "-CA", ca + ".pem", "-CAkey", ca + ".key", "-CAcreateserial",
          "-out", name + ".pem", "-days", "2", "-extfile", name + ".ext"], d)


def der(d, pem, out):
    """A PEM certificate (.pem) or key (.key) in DER, the form a board's
    mbedTLS takes."""
    _run(["x509" if pem.endswith(".pem") else "pkey", "-in", pem, "-outform", "DER", "-out", out], d)


def make(d):
    """Write the files above into d (made if missing); returns d."""
    os.makedirs(d, exist_ok=True)
    ca(d, "ca")
    ca(d, "other-ca")
    leaf(d, "server", "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1\n")
    leaf(d, "client", "extendedKeyUsage=clientAuth\n")
    for name in ("ca", "other-ca", "client"):
        der(d, name + ".pem", name + ".der")
    der(d, "client.key", "client.key.der")
    for name in ("ca.key", "other-ca.key", "server.key", "client.key"):
        os.chmod(os.path.join(d, name), 0o600)
    return d
