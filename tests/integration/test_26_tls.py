# TLS on the gateway's listeners (docs/security.md "TLS"): the MQTT listener
# on [tls] port, mutual TLS, use_identity_as_username with an ACL, TLS 1.2+
# only, the handshake timeout, wss:// and https://. Real peers: paho-mqtt,
# mosquitto_pub/mosquitto_sub, Python's ssl module, urllib. The CA and the
# certificates are made here, at test time, with the openssl CLI (nothing
# secret is checked in).
import json
import pathlib
import re
import warnings
import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from . import mqttraw as raw
from . import tlscerts
from .clients import Client, MosquittoSub, mosquitto_pub, unique_id
from .conftest import ROOT, Broker, free_port
from .web import close_clients, wait_log

pytestmark = [pytest.mark.timeout(60), pytest.mark.edge_only("edgebroker's [tls] config (the gateway)"),
              pytest.mark.skipif(shutil.which("openssl") is None, reason="the openssl CLI makes the test PKI")]

CONNACK_OK = b"\x20\x02\x00\x00"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA, the broker's certificate (localhost, 127.0.0.1), client
    certificates for alice and bob, and one for mallory from another CA."""
    d = str(tmp_path_factory.mktemp("pki"))
    tlscerts.ca(d, "ca")
    tlscerts.ca(d, "rogue-ca")
    tlscerts.leaf(d, "server", "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
                  cn="localhost")
    for name in ("alice", "bob"):
        tlscerts.leaf(d, name, "extendedKeyUsage=clientAuth\n")
    # says alice, signed by the wrong CA
    tlscerts.leaf(d, "mallory", "extendedKeyUsage=clientAuth\n", ca="rogue-ca", cn="alice")
    # a board's mbedTLS takes DER only
    tlscerts.der(d, "server.pem", "server.der")
    tlscerts.der(d, "server.key", "server-key.der")
    tlscerts.der(d, "ca.pem", "ca.der")
    d = pathlib.Path(d)
    return d


def tls_broker(tmp, name, pki, runtime="cpython", **config):
    """A started broker with [tls] on port 0 (any free one), its port read
    from the log as b.tls_port."""
    ext = (".pem", ".key") if runtime == "cpython" else (".der", "-key.der")
    cfg = {"sys_interval": 1, "connect_timeout": 2, "tls.port": 0,
           "tls.certfile": str(pki / ("server" + ext[0])), "tls.keyfile": str(pki / ("server" + ext[1]))}
    cfg.update(config)
    b = Broker(runtime, tmp / name, cfg)
    b.start()
    wait_log(b, "(MQTT over TLS)")
    b.tls_port = int(re.search(r"listening on [^ ]+:(\d+) \(MQTT over TLS\)", b.log_text()).group(1))
    return b


def client_ctx(pki, cert=None, **kw):
    ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    if cert:
        ctx.load_cert_chain(str(pki / (cert + ".pem")), str(pki / (cert + ".key")))
    for k, v in kw.items():
        setattr(ctx, k, v)
    return ctx


def mqtt_over_tls(port, ctx, client_id="t", username=None, password=None):
    """CONNECT over TLS; the CONNACK's 4 bytes, or the error it ended in."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            with ctx.wrap_socket(s, server_hostname="localhost") as t:
                t.sendall(raw.connect(client_id, username=username, password=password))
                got = b""
                while len(got) < 4:
                    chunk = t.recv(4 - len(got))
                    if not chunk:
                        return got or "closed"
                    got += chunk
                return got
    except (ssl.SSLError, OSError) as e:
        return e


def tls_client(b, pki, cert=None, **kw):
    c = Client(b.host, b.tls_port, **kw)
    c.broker = b
    c.c.tls_set(ca_certs=str(pki / "ca.pem"), certfile=cert and str(pki / (cert + ".pem")),
                keyfile=cert and str(pki / (cert + ".key")))
    return c


def sys_value(b, name):
    """$SYS/broker/<name> read over the plain port (ints as ints)."""
    c = Client(b.host, b.port)
    try:
        c.connect()
        c.subscribe("$SYS/broker/" + name)
        v = c.wait_messages(1)[-1].payload.decode()
    finally:
        close_clients(c)
    return int(v) if v.isdigit() else v


def wait_sys(b, name, pred, timeout=10):
    deadline = time.monotonic() + timeout
    while True:
        v = sys_value(b, name)
        if pred(v):
            return v
        assert time.monotonic() < deadline, "$SYS/broker/%s stayed %r" % (name, v)
        time.sleep(0.2)  # $SYS is published each sys_interval (1 s)


@pytest.fixture(scope="module")
def tb(tmp_path_factory, pki):
    b = tls_broker(tmp_path_factory.mktemp("tls"), "tls", pki)
    yield b
    b.stop()


def test_paho_over_tls_pubsub_with_the_ca_verified(tb, pki):
    """paho checks the broker's certificate against the CA (and its name);
    a TLS client and a plain one share the broker's topics and sessions."""
    topic = "tls/" + unique_id()
    t = tls_client(tb, pki)
    p = Client(tb.host, tb.port)
    try:
        t.connect()
        p.connect()
        assert t.subscribe(topic + "/#", 1) == [1]
        assert p.subscribe(topic + "/#", 1) == [1]
        p.publish(topic + "/plain", b"p" * 20000, qos=1)  # > one TLS record
        t.publish(topic + "/tls", b"t", qos=1)
        assert {(m.topic, m.payload) for m in t.wait_messages(2)} == {
            (topic + "/plain", b"p" * 20000), (topic + "/tls", b"t")}
        assert {m.topic for m in p.wait_messages(2)} == {topic + "/plain", topic + "/tls"}
        assert t.c.socket().version() in ("TLSv1.2", "TLSv1.3")
    finally:
        close_clients(t, p)


def test_mosquitto_clients_with_cafile(tb, pki):
    topic = "tls/" + unique_id()
    tls = ["--cafile", str(pki / "ca.pem")]
    sub = MosquittoSub(tb.host, tb.tls_port, [topic], qos=1, count=1, extra=tls)
    try:
        sub.wait_subscribed()
        mosquitto_pub(tb.host, tb.tls_port, topic, "over tls", qos=1, extra=tls)
        sub.wait_publishes(1)
        sub.wait_exit()
        assert "over tls" in sub.output()
    finally:
        sub.kill()


def test_a_client_that_does_not_trust_the_broker_gets_nothing(tb, pki, tmp_path):
    """mosquitto_pub with another CA refuses the broker's certificate: the
    failed handshake is counted (the broker saw an unknown-CA alert)."""
    before = sys_value(tb, "tls/handshakes/failed")
    r = subprocess.run(["mosquitto_pub", "-h", tb.host, "-p", str(tb.tls_port), "-t", "x", "-m", "y",
                        "--cafile", str(pki / "rogue-ca.pem")], capture_output=True, timeout=15, text=True)
    assert r.returncode != 0
    wait_sys(tb, "tls/handshakes/failed", lambda v: v == before + 1)


def test_tls_1_1_refused(tb, pki):
    """TLS 1.2 and later only: a client that offers at most TLS 1.1 gets a
    failed handshake (the broker closes it: no CONNACK), counted."""
    before = sys_value(tb, "tls/handshakes/failed")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLSv1, TLSv1_1: what is tested
        ctx = client_ctx(pki, minimum_version=ssl.TLSVersion.TLSv1, maximum_version=ssl.TLSVersion.TLSv1_1)
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # else OpenSSL 3 refuses to offer TLS 1.1 at all
    r = mqtt_over_tls(tb.tls_port, ctx)
    assert isinstance(r, ssl.SSLError), r  # (uvloop closes without the protocol_version alert: an EOF)
    wait_sys(tb, "tls/handshakes/failed", lambda v: v == before + 1)
    # and 1.2 is served
    assert mqtt_over_tls(tb.tls_port, client_ctx(pki, maximum_version=ssl.TLSVersion.TLSv1_2)) == CONNACK_OK


def test_plain_tcp_to_the_tls_port_stalls_nobody(tb, pki):
    """A plain MQTT client on the TLS port fails its handshake at once; a
    socket that sends nothing is closed after the handshake timeout
    (broker.connect_timeout, 2 s here). Meanwhile TLS clients are served."""
    failed = sys_value(tb, "tls/handshakes/failed")
    timed_out = sys_value(tb, "tls/handshakes/timed out")
    silent = [socket.create_connection(("127.0.0.1", tb.tls_port), timeout=10) for _ in range(3)]
    plain = socket.create_connection(("127.0.0.1", tb.tls_port), timeout=10)
    t0 = time.monotonic()
    try:
        plain.sendall(raw.connect("plain-on-tls"))
        assert not plain.recv(100).startswith(b"\x20")  # no CONNACK: an alert or nothing, then closed
        for _ in range(5):  # served while the silent ones hold their handshakes
            assert mqtt_over_tls(tb.tls_port, client_ctx(pki)) == CONNACK_OK
        assert time.monotonic() - t0 < 2, "a TLS client waited for the silent sockets"
        for s in silent:
            assert s.recv(100) == b""  # closed by the broker ...
        took = time.monotonic() - t0
        assert 1.5 < took < 6, took  # ... after the handshake timeout
    finally:
        for s in silent + [plain]:
            s.close()
    wait_sys(tb, "tls/handshakes/timed out", lambda v: v >= timed_out + 3)
    assert sys_value(tb, "tls/handshakes/failed") >= failed + 4
    # logged once per interval, not per attempt
    assert tb.log_text().count("handshakes failed") + tb.log_text().count("handshake failed") <= 3, tb.log_tail()


def test_mutual_tls(tmp_path, pki):
    """require_certificate: no client certificate, or one from another CA,
    no connection; a certificate of the CA, served."""
    b = tls_broker(tmp_path, "mtls", pki, **{"tls.cafile": str(pki / "ca.pem"), "tls.require_certificate": True})
    try:
        r = mqtt_over_tls(b.tls_port, client_ctx(pki))
        assert r != CONNACK_OK, r
        r = mqtt_over_tls(b.tls_port, client_ctx(pki, "mallory"))
        assert r != CONNACK_OK, r
        assert mqtt_over_tls(b.tls_port, client_ctx(pki, "alice")) == CONNACK_OK
        wait_sys(b, "tls/handshakes/failed", lambda v: v == 2)
        c = tls_client(b, pki, "bob")
        try:
            c.connect()
            topic = "mtls/" + unique_id()
            c.subscribe(topic, 1)
            c.publish(topic, b"m", qos=1)
            assert c.wait_messages(1)[0].payload == b"m"
        finally:
            close_clients(c)
    finally:
        b.stop()


ACL = """\
user alice
topic readwrite alice/#
topic read $SYS/#

user bob
topic read alice/#
"""


def test_use_identity_as_username_with_an_acl(tmp_path, pki):
    """use_identity_as_username: the certificate's CN is the user, with no
    password (a password file is set, and ignored for TLS clients); the ACL
    of that user applies, whatever user name the CONNECT gives."""
    acl = tmp_path / "acl"
    acl.write_text(ACL)
    pw = tmp_path / "passwd"
    subprocess.run([sys.executable, "-m", "gateway", "passwd", "--stdin", "--iterations", "1000", str(pw), "carol"],
                   input="carol-pw\n", cwd=str(ROOT), capture_output=True, text=True, timeout=30, check=True)
    b = tls_broker(tmp_path, "ident", pki, **{
        "tls.cafile": str(pki / "ca.pem"), "tls.require_certificate": True, "tls.use_identity_as_username": True,
        "auth.acl_file": str(acl), "auth.password_file": str(pw), "auth.allow_anonymous": False})
    alice = tls_client(b, pki, "alice")
    bob = tls_client(b, pki, "bob")
    bob.c.username_pw_set("alice", "not-checked")  # the CONNECT's user name is not used
    try:
        alice.connect()
        bob.connect()
        assert alice.subscribe("alice/#", 1) == [1]
        assert bob.subscribe("alice/#", 1) == [1]
        assert bob.subscribe("bob/#", 1) == [0x80]  # nothing granted to bob there
        bob.publish("alice/from-bob", b"no", qos=1)  # bob may not write: dropped
        alice.publish("alice/x", b"yes", qos=1)
        assert [m.payload for m in bob.wait_messages(1)] == [b"yes"]
        assert [m.payload for m in alice.wait_messages(1)] == [b"yes"]
        time.sleep(0.3)
        assert [m.payload for m in alice.messages] == [b"yes"]
    finally:
        close_clients(alice, bob)
    # the plain listener still wants a password: none, refused
    r = socket.create_connection(("127.0.0.1", b.port), timeout=5)
    try:
        r.sendall(raw.connect("plain", username="alice"))
        assert r.recv(4) == b"\x20\x02\x00\x05"
    finally:
        r.close()
        b.stop()


def test_a_public_tls_bind_refuses_anonymous_by_default(tmp_path, pki):
    """broker.bind on loopback and tls.bind on every address: anonymous
    clients are refused by default, as on a non-loopback broker.bind
    (auth.allow_anonymous), with the warning; on the plain port too."""
    b = tls_broker(tmp_path, "public", pki, **{"tls.bind": "0.0.0.0"})
    try:
        wait_log(b, "0.0.0.0 is not loopback and no auth.password_file is set")
        assert mqtt_over_tls(b.tls_port, client_ctx(pki)) == b"\x20\x02\x00\x05"
        assert mqtt_over_tls(b.tls_port, client_ctx(pki), username="someone") == CONNACK_OK
    finally:
        b.stop()


def test_wss_and_https(tmp_path, pki):
    """[tls] set: the web listeners serve wss:// (paho's websockets
    transport, the CA verified) and https:// (GET /metrics, POST
    /publish), with the same certificate."""
    port = free_port()
    b = tls_broker(tmp_path, "web", pki, **{"websocket.enabled": True, "websocket.port": port,
                                            "http.enabled": True, "http.port": port})
    wait_log(b, "serving HTTP at https://")
    assert "MQTT over WebSocket at wss://" in b.log_text()
    topic = "wss/" + unique_id()
    ws = Client(b.host, port, ws_path="/mqtt")
    ws.c.tls_set(ca_certs=str(pki / "ca.pem"))
    try:
        ws.connect()
        assert ws.subscribe(topic, 1) == [1]
        ctx = client_ctx(pki)
        req = urllib.request.Request("https://127.0.0.1:%d/publish/%s?qos=1" % (port, topic), data=b"from https",
                                     method="POST")
        with urllib.request.urlopen(req, timeout=10, context=ctx) as r:
            assert r.status == 200
        assert ws.wait_messages(1)[0].payload == b"from https"
        with urllib.request.urlopen("https://localhost:%d/metrics" % port, timeout=10, context=ctx) as r:
            text = r.read().decode()
        assert "edgebroker_messages_received_total" in text
        got = {f.name: f.samples[0].value for f in text_string_to_metric_families(text)}
        assert got["edgebroker_tls_handshakes"] >= 3  # (the parser drops _total) wss, and 2 https
        assert got["edgebroker_tls_handshakes_failed"] == 0
    finally:
        close_clients(ws)
    # plain HTTP to the TLS port: no answer in clear
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b"edgebroker" not in s.recv(1000)
    finally:
        s.close()
        b.stop()


def _run(tmp_path, toml):
    cfg = tmp_path / "b.toml"
    cfg.write_text(toml)
    return subprocess.run([sys.executable, "-m", "gateway", "run", "--config", str(cfg), "--port", "0",
                           "--data", str(tmp_path / "data")], cwd=str(ROOT), capture_output=True, text=True,
                          timeout=30)


def test_config_errors_name_the_key(tmp_path, pki):
    """A missing certfile, an unreadable or wrong key, a CA missing for
    mutual TLS: exit 2 with the key named, before anything listens."""
    srv = json.dumps(str(pki / "server.pem"))
    key = json.dumps(str(pki / "server.key"))
    cases = [
        ('certfile = "%s"\n' % (tmp_path / "missing.pem"), "tls.certfile: cannot read"),
        ("certfile = %s\nkeyfile = %s\n" % (srv, json.dumps(str(tmp_path / "none.key"))), "tls.keyfile: cannot read"),
        ("certfile = %s\nkeyfile = %s\n" % (srv, json.dumps(str(pki / "alice.key"))), "tls.keyfile: "),
        ("certfile = %s\n" % key, "tls.certfile: "),
        ("certfile = %s\n" % srv, "tls.keyfile: "),
        ("keyfile = %s\n" % key, "tls.certfile: required by tls.keyfile"),
        ("certfile = %s\nkeyfile = %s\nrequire_certificate = true\n" % (srv, key), "tls.cafile: required"),
        ("certfile = %s\nkeyfile = %s\nuse_identity_as_username = true\n" % (srv, key),
         "tls.use_identity_as_username: needs tls.require_certificate"),
    ]
    for body, want in cases:
        r = _run(tmp_path, "[tls]\nport = 0\n" + body)
        assert r.returncode == 2, (body, r.returncode, r.stderr[-2000:])
        assert want in r.stderr, (body, r.stderr[-2000:])
    r = _run(tmp_path, "[tls]\nport = 0\ncertfile = %s\nkeyfile = %s\n[http]\nenabled = true\nport = 0\ntls = false\n"
             "[websocket]\nenabled = true\nport = 0\n" % (srv, key))
    assert r.returncode == 2 and "http.tls: must be websocket.tls's" in r.stderr, r.stderr[-2000:]


# A board (the MicroPython unix port, code in ROMFS: tools/board.py). [tls]
# costs the 64 KiB board 6,144 bytes of heap at idle and a TLS connection
# ~200-600 bytes more than a plain one (docs/security.md "On a board"): at
# 64 KiB 3 TLS clients fit, at 96 KiB the board's 6 connections.
BOARD_HEAP = "96k"


@pytest.mark.micropython
def test_board_runtime_serves_tls(tmp_path, pki):
    """The board runtime: paho over TLS (the CA verified) publishes and
    subscribes; three PUBLISHes in one 2.7 KB TLS record, more than the
    shell's 1 KB read buffer, all arrive (what mbedTLS holds decrypted is
    read without new bytes on the socket); mutual TLS refuses a client
    without a certificate."""
    b = tls_broker(tmp_path, "board", pki, "micropython", board_heap=BOARD_HEAP, **{
        "store.persistence": False, "tls.cafile": str(pki / "ca.der"), "tls.require_certificate": True})
    topic = "board/" + unique_id()
    subs = [tls_client(b, pki, "alice") for _ in range(2)]
    try:
        for c in subs:
            c.connect()
            assert c.subscribe(topic + "/#", 1) == [1]
        with socket.create_connection(("127.0.0.1", b.tls_port), timeout=10) as s:
            with client_ctx(pki, "bob").wrap_socket(s, server_hostname="localhost") as t:
                t.sendall(raw.connect("raw-tls"))
                assert t.recv(4) == CONNACK_OK
                t.sendall(b"".join(raw.publish("%s/%d" % (topic, i), b"q" * 900) for i in range(3)))
                for c in subs:
                    got = c.wait_messages(3)
                    assert sorted((m.topic, len(m.payload)) for m in got) == [
                        ("%s/%d" % (topic, i), 900) for i in range(3)]
        assert mqtt_over_tls(b.tls_port, client_ctx(pki)) != CONNACK_OK  # no certificate
        assert mqtt_over_tls(b.tls_port, client_ctx(pki, "bob")) == CONNACK_OK
        b.assert_alive()
    finally:
        close_clients(*subs)
        b.stop()


@pytest.mark.micropython
def test_board_config_errors(tmp_path, pki):
    """A board takes DER: a PEM key is refused naming tls.keyfile (exit 2);
    use_identity_as_username is not for a board (its ssl shows no peer
    certificate)."""
    for extra, want in [
        ({"tls.keyfile": str(pki / "server.key")}, "tls.keyfile: invalid key"),
        ({"tls.cafile": str(pki / "ca.der"), "tls.require_certificate": True, "tls.use_identity_as_username": True},
         "tls.use_identity_as_username: not on a board"),
    ]:
        b = Broker("micropython", tmp_path / unique_id("bad"), {
            "board_heap": BOARD_HEAP, "store.persistence": False, "tls.port": 0,
            "tls.certfile": str(pki / "server.der"), "tls.keyfile": str(pki / "server-key.der"), **extra})
        with pytest.raises(RuntimeError, match="exited with 2"):
            b.start()
        assert want in b.log_text(), b.log_tail()
