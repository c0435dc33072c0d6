# Passwords and ACLs (docs/security.md) on both runtimes, with real peers:
# paho-mqtt (3.1.1 and 5.0), mosquitto_pub/mosquitto_sub, and raw 5.0
# packets where a reason code in a PUBACK must be read. The password file is
# written by `edgebroker passwd` itself (gateway/passwd.py): the CPython CLI's
# PBKDF2 must be what the MicroPython broker computes too.
import signal
import subprocess
import sys
import time

import pytest

from . import mqttraw as raw
from .clients import Client, MosquittoSub, mosquitto_pub, unique_id
from .conftest import REFERENCE, ROOT, Broker
from .raw5 import publish_qos1, wait_log

pytestmark = [pytest.mark.timeout(120),
              pytest.mark.skipif(REFERENCE, reason="edgebroker's [auth] config, not mosquitto's")]

# paho (callback API 2) reports a 3.1.1 CONNACK return code as the 5.0 reason
# code it stands for: 5 Not authorized as 0x87 (4 would be 0x86)
PAHO_311_REFUSED = 0x87

# A board with [auth] keeps its code and the files' contents (docs/security.md
# "On a board": ~7 KB for these files). Every MicroPython broker here gets
# 96 KiB, an ESP32's heap without PSRAM (~100 KB); the 5.0 tests needed it
# already (the 5.0 code, ~6.5 KB more). Tried at 64 KiB after the boot was
# unfragmented (docs/heap.md "Fragmented at boot"), 3 runs of 3: most starts
# fail in auth.start (MemoryError, 640 or 272 bytes). Measured there with
# serve()'s steps: 17,760 bytes free before auth, 8,576 once these files
# are loaded (largest free run 2.9 KB), before any client has connected.
BROKER_CONFIG = V5_HEAP = {"board_heap": "96k"}

USERS = {"alice": "alice-pw", "bob": "bob-pw", "carol": "carol-pw"}

ACL = """\
# anonymous clients
topic read public/#

user alice
topic readwrite alice/#
topic read sensors/#
topic deny sensors/secret/#
topic write cmd/in

user bob
topic write sensors/#
topic write public/#
topic read $SYS/#

pattern readwrite clients/%c/#
pattern read inbox/%u/#
"""


def passwd(path, user, password, *extra):
    """`edgebroker passwd --stdin FILE USER`, the password on stdin."""
    r = subprocess.run([sys.executable, "-m", "gateway", "passwd", "--stdin", "--iterations", "1000"]
                       + list(extra) + [str(path), user], input=password + "\n", cwd=str(ROOT),
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return r


def write_files(d):
    pw = d / "passwd"
    for user, password in USERS.items():
        passwd(pw, user, password)
    acl = d / "acl"
    acl.write_text(ACL)
    return pw, acl


def client(broker, user=None, password=None, expect=0, v5=False, **kw):
    c = Client(broker.host, broker.port, v5=v5, **kw)
    c.broker = broker
    if user is not None:
        c.c.username_pw_set(user, password)
    try:
        c.connect(expect=expect)
    finally:
        if expect:
            c.stop()
    return c


def raw_login(broker, user, password):
    """A 3.1.1 CONNECT on a raw socket (quick: no client library's
    reconnect delays); returns the CONNACK's return code."""
    c = raw.RawClient(broker.host, broker.port)
    try:
        c.send(raw.connect(unique_id("raw"), username=user, password=password))
        return c.expect(raw.CONNACK).body[1]
    finally:
        c.sock.close()


def stop(*clients):
    for c in clients:
        c.disconnect()


def sys_value(broker, name, user="bob"):
    # one $SYS value, read by mosquitto_sub as a user the ACL lets read $SYS
    r = subprocess.run(["mosquitto_sub", "-h", broker.host, "-p", str(broker.port), "-u", user,
                        "-P", USERS[user], "-t", "$SYS/broker/" + name, "-C", "1", "-W", "5"],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, r.stderr
    return int(r.stdout.split()[0])


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return write_files(tmp_path_factory.mktemp("auth-files"))


@pytest.fixture(scope="module")
def acl_broker(runtime, files, tmp_path_factory):
    """One broker per runtime with both files, anonymous clients allowed."""
    pw, acl = files
    b = Broker(runtime, tmp_path_factory.mktemp("acl-" + runtime),
               dict({"sys_interval": 1, "auth.password_file": str(pw), "auth.acl_file": str(acl),
                     "auth.allow_anonymous": True}, **BROKER_CONFIG))
    b.start()
    yield b
    b.stop()


# ---- passwords -------------------------------------------------------------------
def test_good_and_bad_passwords_both_protocols(runtime, files, broker_factory):
    pw, _ = files
    b = broker_factory(**{"auth.password_file": str(pw), "auth.allow_anonymous": False})
    stop(client(b, "alice", "alice-pw"))
    client(b, "alice", "wrong", expect=PAHO_311_REFUSED)  # 3.1.1: 5 not authorized
    assert raw_login(b, "alice", "wrong") == 5  # the 3.1.1 return code itself
    stop(client(b, "bob", "bob-pw"))                  # a good login clears the address
    client(b, "mallory", "alice-pw", expect=PAHO_311_REFUSED)  # no such user: the same answer
    client(b, expect=PAHO_311_REFUSED)                # anonymous refused
    # mosquitto_pub: refused with the wrong password, accepted with the right one
    r = subprocess.run(["mosquitto_pub", "-h", b.host, "-p", str(b.port), "-u", "carol", "-P", "nope",
                        "-t", "x", "-m", "y"], capture_output=True, text=True, timeout=10)
    assert r.returncode != 0 and "not authori" in (r.stdout + r.stderr).lower(), r
    mosquitto_pub(b.host, b.port, "x", "y", extra=("-u", "carol", "-P", "carol-pw"))
    log = b.log_text()
    assert "bad user name or password for user mallory" in log
    for secret in ("alice-pw", "wrong", "nope"):
        assert secret not in log  # no password in the log
    b.assert_alive()


def test_v5_login_reason_codes(runtime, files, broker_factory):
    pw, _ = files
    b = broker_factory(**{"auth.password_file": str(pw), "auth.allow_anonymous": False}, **V5_HEAP)
    stop(client(b, "bob", "bob-pw", v5=True))
    client(b, "mallory", "alice-pw", v5=True, expect=0x86)  # Bad User Name or Password
    client(b, "bob", "nope", v5=True, expect=0x86)
    client(b, v5=True, expect=0x87)                          # anonymous: Not authorized
    b.assert_alive()


def test_failed_logins_back_off(runtime, files, broker_factory):
    pw, _ = files
    b = broker_factory(**{"auth.password_file": str(pw)})
    for _ in range(3):
        assert raw_login(b, "alice", "guess") == 5
    # the third failure starts a 1 s back-off: the right password is refused too
    t = time.monotonic()
    assert raw_login(b, "alice", "alice-pw") == 5
    assert time.monotonic() - t < 0.9
    wait_log(b, "login refused for")
    left = 1.0 - (time.monotonic() - t)
    if left > 0:
        time.sleep(left + 0.1)  # the back-off interval running out: nothing to poll
    assert raw_login(b, "alice", "alice-pw") == 0
    stop(client(b, "alice", "alice-pw"))
    b.assert_alive()


def test_failed_logins_are_counted_in_sys(runtime, files, broker_factory):
    pw, acl = files
    b = broker_factory(**{"auth.password_file": str(pw), "auth.acl_file": str(acl)})
    client(b, "alice", "guess", expect=PAHO_311_REFUSED)
    client(b, "carol", "guess", expect=PAHO_311_REFUSED)
    assert sys_value(b, "auth/failed") == 2
    assert sys_value(b, "auth/throttled") == 0


# ---- ACLs ------------------------------------------------------------------------
def test_acl_read_write_deny(acl_broker):
    b = acl_broker
    alice = client(b, "alice", "alice-pw")
    assert alice.subscribe([("sensors/#", 1), ("alice/#", 1), ("bob/#", 1)]) == [1, 1, 0x80]
    bob = client(b, "bob", "bob-pw")
    bob.publish("sensors/secret/key", b"hidden", 1)   # bob may write it, alice may not read it
    bob.publish("sensors/room/temp", b"21", 1)
    bob.publish("alice/inbox", b"forged", 1)          # bob may not write alice/...: dropped
    alice.publish("alice/note", b"mine", 1)
    got = alice.wait_messages(2)
    time.sleep(0.3)  # nothing more may come: a short quiet interval
    assert sorted((m.topic, m.payload) for m in alice.messages) == [
        ("alice/note", b"mine"), ("sensors/room/temp", b"21")]
    assert len(got) == 2
    # anonymous: reads public/#, writes nothing
    anon = client(b)
    assert anon.subscribe([("public/#", 0), ("sensors/#", 0)]) == [0, 0x80]
    bob.publish("public/news", b"hello", 1)
    assert anon.wait_messages(1)[0].payload == b"hello"
    anon.publish("public/news", b"spoof", 1)
    time.sleep(0.3)  # a short quiet interval: the spoof must not arrive
    assert [m.payload for m in anon.messages] == [b"hello"]
    stop(alice, bob, anon)
    assert sys_value(b, "acl/denied/publish") >= 2
    assert sys_value(b, "acl/denied/subscribe") >= 2
    b.assert_alive()


def test_acl_patterns_client_id_and_user(acl_broker):
    b = acl_broker
    cid = unique_id("dev")
    me = client(b, "carol", "carol-pw", client_id=cid)
    assert me.subscribe([("clients/%s/#" % cid, 1), ("clients/other/#", 1),
                         ("inbox/carol/#", 1), ("inbox/alice/#", 1)]) == [1, 0x80, 1, 0x80]
    me.publish("clients/%s/up" % cid, b"self", 1)
    other = client(b, "carol", "carol-pw", client_id=unique_id("dev"))
    other.publish("clients/%s/up" % cid, b"not yours", 1)  # another client id: dropped
    got = me.wait_messages(1)
    time.sleep(0.3)  # a short quiet interval: the other's must not arrive
    assert [m.payload for m in me.messages] == [b"self"] and got
    stop(me, other)


def test_acl_filters_retained_messages(acl_broker):
    b = acl_broker
    bob = client(b, "bob", "bob-pw")
    bob.publish("sensors/secret/pin", b"1234", 1, retain=True)
    bob.publish("sensors/hall/temp", b"19", 1, retain=True)
    stop(bob)
    sub = MosquittoSub(b.host, b.port, "sensors/#", qos=1, count=1, wait_s=5,
                       extra=("-u", "alice", "-P", "alice-pw"))
    try:
        sub.wait_subscribed()
        got = sub.wait_publishes(1)
        time.sleep(0.3)  # a short quiet interval: the secret retained one must not come
        assert [(p["topic"], p["payload"]) for p in sub.publishes] == [("sensors/hall/temp", "19")]
        assert got[0]["retain"] == 1
    finally:
        sub.kill()


def test_acl_v5_reason_codes(files, broker_factory):
    pw, acl = files
    b = broker_factory(**{"auth.password_file": str(pw), "auth.acl_file": str(acl)}, **V5_HEAP)
    c = raw.RawClient(b.host, b.port)
    c.send(raw.connect(unique_id("r5"), level=5, username="alice", password="alice-pw"))
    assert c.expect(raw.CONNACK).body[1] == 0
    c.send(raw.subscribe(1, [("bob/#", 0), ("alice/#", 0)], props=b"\x00"))
    suback = c.expect(raw.SUBACK)
    assert list(suback.body[-2:]) == [0x87, 0]  # 5.0: Not authorized per filter
    assert publish_qos1(c, "bob/x", b"no", pid=2) == 0x87  # PUBACK 0x87
    assert publish_qos1(c, "alice/x", b"yes", pid=3) < 0x80
    # a will topic the client may not write: CONNACK Not authorized
    w = raw.RawClient(b.host, b.port)
    w.send(raw.connect(unique_id("w5"), level=5, username="alice", password="alice-pw",
                       will=("bob/dead", b"x", 0, False)))
    assert w.expect(raw.CONNACK).body[1] == 0x87
    w3 = client(b, "alice", "alice-pw", will=("bob/dead", b"x", 0, False), expect=PAHO_311_REFUSED)
    assert w3 is not None
    for s in (c, w):
        s.sock.close()
    b.assert_alive()


@pytest.mark.timeout(60)
def test_sighup_reloads_acl(runtime, files, tmp_path, broker_factory):
    if runtime != "cpython":
        pytest.skip("SIGHUP reload is the gateway runtime's (a board restarts)")
    pw, _ = files
    acl = tmp_path / "acl"
    acl.write_text("user alice\ntopic read a/#\n")
    b = broker_factory(**{"auth.password_file": str(pw), "auth.acl_file": str(acl)})
    alice = client(b, "alice", "alice-pw")
    assert alice.subscribe([("a/#", 0), ("b/#", 0)]) == [0, 0x80]
    acl.write_text("user alice\ntopic read b/#\ntopic write b/#\n")
    b.proc.send_signal(signal.SIGHUP)
    wait_log(b, "auth: reloaded")
    assert alice.subscribe([("b/#", 0)]) == [0]
    alice.publish("b/1", b"now", 0)
    assert alice.wait_messages(1)[0].payload == b"now"
    # a file with an error keeps the rules in force
    acl.write_text("bogus line\n")
    b.proc.send_signal(signal.SIGHUP)
    wait_log(b, "auth: reload failed, previous files kept")
    alice.publish("b/2", b"still", 0)
    alice.wait_messages(2)
    stop(alice)
    b.assert_alive()


class _AnyAddress(Broker):
    host = "0.0.0.0"  # --bind; on Linux a connect to 0.0.0.0 reaches this host


@pytest.mark.timeout(60)
def test_non_loopback_bind_refuses_anonymous_by_default(runtime, files, tmp_path):
    # No [auth] at all on a non-loopback bind: a warning at start, anonymous
    # clients refused (allow_anonymous defaults to true only on loopback)
    b = _AnyAddress(runtime, tmp_path / "any", {"sys_interval": 1})
    b.start()
    try:
        wait_log(b, "is not loopback and no auth.password_file is set")
        assert raw_login(b, None, None) == 5
        assert raw_login(b, "anyone", None) == 0  # no password file: user names unchecked
    finally:
        b.stop()
    # set explicitly, anonymous clients are let in (and warned about)
    b = _AnyAddress(runtime, tmp_path / "any2", {"auth.allow_anonymous": True})
    b.start()
    try:
        wait_log(b, "anyone who reaches the port may connect")
        assert raw_login(b, None, None) == 0
    finally:
        b.stop()


# ---- CoAP (EMQX's u, p, c query names) ------------------------------------------
@pytest.mark.timeout(90)
def test_coap_login_and_acl(runtime, files, broker_factory):
    from .test_14_coap import coap_client, request, uri

    pw, acl = files
    # the board's CoAP endpoint needs the heap test_14 gives it
    b = broker_factory(**{"coap.enabled": True, "auth.password_file": str(pw), "auth.acl_file": str(acl),
                          "auth.allow_anonymous": False, "board_heap": "128k"})
    alice = client(b, "alice", "alice-pw")
    assert alice.subscribe("alice/#", 1) == [1]
    me = "u=alice&p=alice-pw&c=coap-alice"
    assert request("POST", uri(b, "ps/alice/x?" + me), b"from coap")[0] == "2.04"
    assert alice.wait_messages(1)[0].payload == b"from coap"
    assert request("POST", uri(b, "ps/bob/x?" + me), b"no")[0] == "4.03"
    assert request("POST", uri(b, "ps/alice/x?u=alice&p=wrong"), b"no")[0] == "4.01"
    assert request("POST", uri(b, "ps/alice/x"), b"no")[0] == "4.01"  # anonymous refused
    # a retained value read back with libcoap's client: hers, and one she may not read
    bob = client(b, "bob", "bob-pw")
    bob.publish("sensors/hall/temp", b"19", 1, retain=True)
    bob.publish("sensors/secret/pin", b"1234", 1, retain=True)
    out = coap_client("-m", "get", "-B", "5", uri(b, "r/sensors/hall/temp?" + me))
    assert "19" in out, out
    out = coap_client("-m", "get", "-B", "5", uri(b, "r/sensors/secret/pin?" + me))
    assert "1234" not in out and "4.03" in out, out
    stop(alice, bob)
    b.assert_alive()


# ---- MQTT over WebSockets (the gateway's listener, docs/gateway.md) --------------
@pytest.mark.timeout(90)
def test_websocket_clients_log_in_and_are_held_to_the_acl(runtime, files, tmp_path):
    # the same CONNECT check and ACL as over TCP: the WebSocket peer is one
    # more connection of the TCP shell (edge/runtime/tcp_cpython.py opened())
    if runtime != "cpython":
        pytest.skip("MQTT over WebSockets is the gateway's (CPython)")
    from .web import close_clients, web_broker

    pw, acl = files
    b = web_broker(tmp_path, **{"auth.password_file": str(pw), "auth.acl_file": str(acl),
                                "auth.allow_anonymous": False})
    try:
        bad = Client(b.host, b.web_port, ws_path="/mqtt")
        bad.c.username_pw_set("alice", "wrong")
        try:
            bad.connect(expect=PAHO_311_REFUSED)
        finally:
            bad.stop()
        alice = Client(b.host, b.web_port, ws_path="/mqtt")
        alice.c.username_pw_set("alice", "alice-pw")
        alice.connect()
        bob = client(b, "bob", "bob-pw")  # over TCP
        alice.subscribe("sensors/#", 0)
        bob.publish("sensors/secret/x", b"no", qos=1)  # alice: deny sensors/secret/#
        bob.publish("sensors/t", b"yes", qos=1)
        (m,) = alice.wait_messages(1)
        assert (m.topic, m.payload) == ("sensors/t", b"yes")
        assert [x.topic for x in alice.messages] == ["sensors/t"]
        close_clients(alice, bob)
    finally:
        b.stop()
