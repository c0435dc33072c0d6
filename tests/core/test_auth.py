# edge/auth/: PBKDF2-SHA256, the password file, the ACL file and the broker's
# Guard, with in-memory clients. Plain assert functions: tests/mpy_runner.py
# runs them under MicroPython too, where pbkdf2() is pbkdf2_pure().
import binascii
import hashlib

from edge.auth import acl as aclmod
from edge.auth import passwords
from edge.auth.guard import Guard
from edge.auth.pbkdf2 import pbkdf2, pbkdf2_pure
from edge.mqtt.consts import CONNACK
from tests.core._pair import Client, make_broker, publish, publishes
from tests.core._util import raises

# RFC 7914 §11: PBKDF2-HMAC-SHA256 test vectors (P, S, c, dkLen, DK)
_RFC7914 = (
    (b"passwd", b"salt", 1, 64,
     "55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc"
     "49ca9cccf179b645991664b39d77ef317c71b845b1e30bd509112041d3a19783"),
)


def test_pbkdf2_rfc7914_vector_both_ways():
    for p, s, c, n, dk in _RFC7914:
        assert binascii.hexlify(pbkdf2_pure(p, s, c, n)).decode() == dk
        assert binascii.hexlify(pbkdf2(p, s, c, n)).decode() == dk


def test_pbkdf2_pure_is_hashlibs_where_hashlib_has_it():
    # CPython: the pure one against OpenSSL's; MicroPython (no pbkdf2_hmac):
    # against these values, computed by CPython's hashlib.pbkdf2_hmac
    cases = (
        (b"Password", b"NaCl", 1000, 32, "c27dad0abae39af4ebb9965719d584e8b4eb2ee69e1fc9f8f4784d1ca68696e2"),
        (b"k" * 100, b"0123456789abcdef", 3, 40, None),  # a key longer than a block is hashed first
        (b"", b"saltsalt", 2, 32, None),
    )
    ref = getattr(hashlib, "pbkdf2_hmac", None)
    for p, s, c, n, dk in cases:
        got = pbkdf2_pure(p, s, c, n)
        assert len(got) == n
        if ref is not None:
            assert got == ref("sha256", p, s, c, n)
        if dk is not None:
            assert binascii.hexlify(got).decode() == dk


_SALT = b"0123456789abcdef"


def test_password_line_round_trip():
    line = passwords.make("alice", b"s3cret", _SALT, 100)
    assert line.startswith("alice:$pbkdf2-sha256$100$")
    assert "s3cret" not in line
    users = passwords.parse("# comment\n\n" + line + "\n" + passwords.make("bob", b"x", _SALT, 5) + "\n")
    assert sorted(users) == ["alice", "bob"]
    assert passwords.verify(users["alice"], b"s3cret")
    assert not passwords.verify(users["alice"], b"s3cret ")
    assert not passwords.verify(users["alice"], b"")
    assert not passwords.verify(users["bob"], b"s3cret")


def test_password_file_errors_name_the_line():
    good = passwords.make("a", b"p", _SALT, 10)
    for text, words in (
        ("a\n", "line 1: no ':'"),
        ("# x\na:$7$101$abc$def\n", "line 2: not a $pbkdf2-sha256$"),
        (good + "\n" + good + "\n", "line 2: user a twice"),
        ("a:$pbkdf2-sha256$0$MDEyMzQ1Njc4OWFiY2RlZg==$MDEyMzQ1Njc4OWFiY2RlZg==", "line 1: iterations"),
        ("a:$pbkdf2-sha256$x$abc$def", "line 1: bad iteration"),
        ("a:$pbkdf2-sha256$10$c2hvcnQ=$MDEyMzQ1Njc4OWFiY2RlZg==", "salt of 8+"),
    ):
        e = raises(ValueError, passwords.parse, text)
        assert words in str(e), (text, str(e))
    for bad in ("", "a:b", "#a", " a", "a\nb"):
        raises(ValueError, passwords.check_user, bad)


def test_constant_time_equal():
    assert passwords.equal(b"abc", b"abc")
    assert not passwords.equal(b"abc", b"abd")
    assert not passwords.equal(b"abc", b"ab")
    assert not passwords.equal(b"", b"a")
    assert passwords.equal(b"", b"")


_ACL = """
# anonymous clients
topic read public/#

user alice
topic readwrite alice/#
topic read sensors/+/temp
topic deny sensors/secret/temp
topic write cmd/in

user bob
topic sensors/#

pattern readwrite clients/%c/#
pattern read users/%u/inbox
"""


def _rules(user, cid="c1"):
    return aclmod.parse(_ACL.split("\n")).rules(user, cid)


def test_acl_topics_users_and_anonymous():
    anon = _rules(None)
    assert anon.can("public/a/b", aclmod.READ) and not anon.can("public/a", aclmod.WRITE)
    assert not anon.can("alice/x", aclmod.READ)
    alice = _rules("alice")
    assert alice.can("alice/x", aclmod.WRITE) and alice.can("alice/x/y", aclmod.READ)
    assert alice.can("sensors/1/temp", aclmod.READ) and not alice.can("sensors/1/temp", aclmod.WRITE)
    assert not alice.can("sensors/secret/temp", aclmod.READ)  # deny wins
    assert alice.can("cmd/in", aclmod.WRITE) and not alice.can("cmd/in", aclmod.READ)
    assert not alice.can("public/a", aclmod.READ)  # the anonymous lines are not hers
    bob = _rules("bob")  # no access word: readwrite
    assert bob.can("sensors/1/x", aclmod.WRITE) and bob.can("sensors", aclmod.READ)
    assert not _rules("carol").can("sensors/1", aclmod.READ)  # a user with no lines: nothing


def test_acl_patterns_client_id_and_user():
    alice = _rules("alice", "dev7")
    assert alice.can("clients/dev7/up", aclmod.WRITE) and not alice.can("clients/dev8/up", aclmod.WRITE)
    assert alice.can("users/alice/inbox", aclmod.READ) and not alice.can("users/bob/inbox", aclmod.READ)
    anon = _rules(None, "dev9")
    assert anon.can("clients/dev9/x", aclmod.READ)
    assert not anon.can("users/None/inbox", aclmod.READ)  # %u: no user, no line
    # a client id or user name with a wildcard or separator gets no pattern line
    for cid in ("#", "+", "a/b"):
        assert not _rules("alice", cid).can("clients/x/y", aclmod.READ), cid
    assert not _rules("#").can("users/x/inbox", aclmod.READ)


def test_acl_subscribe_within_grants():
    alice = _rules("alice")
    assert alice.can("alice/#", aclmod.READ, True) and alice.can("alice/+/x", aclmod.READ, True)
    assert alice.can("sensors/+/temp", aclmod.READ, True) and alice.can("sensors/3/temp", aclmod.READ, True)
    assert not alice.can("sensors/#", aclmod.READ, True)  # wider than the grant
    assert not alice.can("#", aclmod.READ, True)
    assert not alice.can("sensors/secret/temp", aclmod.READ, True)  # denied
    assert not alice.can("cmd/in", aclmod.READ, True)  # write only
    assert _rules("bob").can("sensors/#", aclmod.READ, True)
    anon = aclmod.parse(["topic read #"]).rules(None, "c")
    assert anon.can("#", aclmod.READ, True) and anon.can("a/b", aclmod.READ)
    assert not anon.can("$SYS/broker/uptime", aclmod.READ)  # [MQTT-4.7.2-1]
    assert not anon.can("$SYS/#", aclmod.READ, True)


def test_acl_file_errors():
    for text, words in (
        ("bogus x", "line 1: unknown keyword"),
        ("\nuser", "line 2: user without a name"),
        ("topic read a/#/b", "line 1: bad topic filter"),
        ("topic read a+/b", "bad topic filter"),
        ("topic read", "empty topic filter"),
    ):
        e = raises(ValueError, aclmod.parse, text.split("\n"))
        assert words in str(e), (text, str(e))


# ---- the broker with a Guard (as edge/runtime/auth.py sets it) -----------------
def _broker(users=None, acl=None, anonymous=True):
    b = make_broker()
    g = Guard(users, acl, anonymous, b.conns)
    b.auth = g
    return b


def _count(b, name):
    # a $SYS value of the Guard (edge/mqtt/systree.py publishes them)
    return dict(b.auth.sys_values())[name]


def _client(b, peer="10.0.0.1", v5=False):
    c = Client(b, v5=v5)
    b.auth.open(c.cid, peer)  # as the runtime does
    return c


def _users():
    return passwords.parse(passwords.make("alice", b"pw", _SALT, 10) + "\n"
                           + passwords.make("bob", b"pw2", _SALT, 10))


def test_login_good_bad_and_anonymous():
    b = _broker(_users(), None, False)
    assert _client(b).connect("c1", username="alice", password=b"pw").reason == 0
    ack = _client(b).connect("c2", username="alice", password=b"nope")
    assert ack.kind == CONNACK and ack.reason == 5  # 3.1.1 not authorized
    assert _client(b, v5=True).connect("c3", username="mallory", password=b"pw").reason == 0x86
    assert _client(b, "10.0.0.2").connect("c4").reason == 5  # anonymous refused
    assert _client(b, "10.0.0.2", v5=True).connect("c5").reason == 0x87
    assert (_count(b, "auth/failed"), _count(b, "auth/anonymous_refused")) == (2, 2)
    assert "c2" not in b.sessions and "c1" in b.sessions


def test_failed_logins_back_off_per_address():
    b = _broker(_users(), None, True)
    for i in range(2):  # two free tries
        assert _client(b).connect("x%d" % i, username="alice", password=b"bad", now=0).reason == 5
    assert _client(b).connect("x2", username="alice", password=b"bad", now=0).reason == 5
    # the third failure: 1 s during which even the right password is refused
    c = _client(b)
    assert c.connect("ok", username="alice", password=b"pw", now=500).reason == 5
    assert _count(b, "auth/throttled") == 1 and _count(b, "auth/failed") == 3
    assert _client(b, "10.0.0.9").connect("other", username="alice", password=b"pw", now=500).reason == 0
    assert _client(b).connect("ok", username="alice", password=b"pw", now=1001).reason == 0
    assert "10.0.0.1" not in b.auth.fails  # a good login clears the address
    # a growing interval: failures 3, 4, 5 -> 1 s, 2 s, 4 s
    t = 2000
    for want in (0, 0, 1000, 2000, 4000):
        assert _client(b).connect("y", username="bob", password=b"bad", now=t).reason == 5
        assert b.auth.fails["10.0.0.1"][1] - t == want
        t += want + 1


def test_backoff_tables_are_bounded():
    b = make_broker()
    g = b.auth = Guard(_users(), None, True, b.conns, 4)
    for i in range(10):
        for _ in range(3):
            assert _client(b, "a%d" % i).connect("x", username="alice", password=b"bad").reason == 5
    assert len(g.fails) <= 4
    for i in range(10):  # sockets that never sent a CONNECT
        g.open(1000 + i, "p%d" % i)
    assert len(g.peers) <= 5


def test_acl_subscribe_publish_retained_and_delivery():
    b = _broker(None, aclmod.parse(_ACL.split("\n")), True)
    alice = _client(b)
    assert alice.connect("a", username="alice").reason == 0
    bob = _client(b)
    assert bob.connect("b", username="bob").reason == 0
    # retained messages first: bob may write sensors/..., alice may not read secret
    publish(bob, "sensors/secret/temp", b"s", 0, True)
    publish(bob, "sensors/1/temp", b"t", 0, True)
    acks = alice.subscribe(("sensors/+/temp", 0), ("sensors/#", 0), ("alice/#", 1), pid=3)
    assert acks[0].codes == [0, 0x80, 1]  # 3.1.1 SUBACK failure for the ACL's refusal
    got = publishes(alice.recv() + acks[1:])
    assert [m.topic for m in got] == ["sensors/1/temp"]  # the secret retained one filtered
    # a publish alice may not write: dropped, counted, PUBACK still (3.1.1)
    out = publish(alice, "sensors/2/temp", b"no", 1, pid=9)
    assert out[0].kind == 4
    assert _count(b, "acl/denied/publish") == 1
    publish(bob, "sensors/secret/temp", b"live", 0)
    publish(bob, "sensors/2/temp", b"ok", 0)
    assert [m.payload for m in publishes(alice.recv())] == [b"ok"]
    assert _count(b, "acl/denied/read") >= 2 and _count(b, "acl/denied/subscribe") == 1


def test_acl_v5_codes_and_will():
    b = _broker(None, aclmod.parse(_ACL.split("\n")), True)
    a = _client(b, v5=True)
    assert a.connect("a5", username="alice").reason == 0
    acks = a.subscribe(("sensors/#", 0), ("alice/#", 0), pid=2)
    assert acks[0].codes == [0x87, 0]
    out = publish(a, "bob/x", b"no", 1, pid=4)
    assert out[0].kind == 4 and out[0].reason == 0x87
    out = publish(a, "alice/x", b"yes", 2, pid=5)
    assert out[0].kind == 5 and out[0].reason < 0x80
    # a will topic the client may not write: CONNACK not authorized
    w = _client(b, v5=True)
    assert w.connect("w5", username="alice", will_topic="bob/dead", will_payload=b"x").reason == 0x87
    w = _client(b)
    assert w.connect("w3", username="alice", will_topic="bob/dead", will_payload=b"x").reason == 5
    assert _count(b, "acl/denied/will") == 2
    w = _client(b)
    assert w.connect("w4", username="alice", will_topic="alice/dead", will_payload=b"x").reason == 0


def test_acl_reload_renews_connected_sessions():
    b = _broker(None, aclmod.parse(["topic read a/#"]), True)
    c = _client(b)
    assert c.connect("c").reason == 0
    p = _client(b)
    assert p.connect("p", username="w").reason == 0  # no lines: may write nothing
    assert c.subscribe(("a/#", 0))[0].codes == [0]
    b.auth.reload(None, aclmod.parse(["topic read b/#", "user w", "topic write a/#"]), True, b.sessions.values())
    publish(p, "a/1", b"x")
    assert publishes(c.recv()) == []  # c may read a/# no more
    assert _count(b, "acl/denied/read") == 1


def test_no_auth_pays_nothing():
    b = make_broker()
    assert b.auth is None
    c = Client(b)
    assert c.connect("x", username="anyone", password=b"whatever").reason == 0


def test_acl_matcher_edge_levels():
    m = aclmod.matches
    for f, t, want in (
        ("a//b", "a//b", True), ("a/+/b", "a//b", True), ("a/", "a/", True), ("a/", "a", False),
        ("a/#", "a", True), ("a/#", "a/b/c", True), ("+/+", "a/b", True), ("+", "a/b", False),
        ("#", "$SYS/x", False), ("+/x", "$SYS/x", False), ("$SYS/#", "$SYS/x", True),
        ("ab", "a", False), ("a", "ab", False), ("a/b", "a/bc", False), ("", "", True),
    ):
        assert m(f, t.split("/")) is want, (f, t)
    assert not m("a/+", "a/#".split("/"), True) and m("a/#", "a/+".split("/"), True)


# ---- CoAP: EMQX's u, p, c query names (edge/coap/resources.py) ------------------
def test_coap_requests_authenticate_and_obey_the_acl():
    from tests.core._coap import GET, POST, feed, make, request, take
    acl = aclmod.parse(_ACL.split("\n"))
    b = _broker(_users(), acl, False)
    b, ep = make(b)
    who = ("u=alice", "p=pw", "c=dev1")

    def code(method, path, query=(), observe=None, payload=b"", mid=[10]):
        mid[0] += 1  # each request its own token: an observation is (peer, token)
        return feed(ep, request(method, path, query=query, observe=observe, payload=payload, mid=mid[0],
                                token=b"t%d" % mid[0]))[0][1]

    assert code(POST, "ps/alice/x", who, payload=b"1") == 0x44     # 2.04
    assert code(POST, "ps/bob/x", who, payload=b"1") == 0x83       # 4.03: not hers to write
    assert code(POST, "ps/alice/x", ("u=alice", "p=bad"), payload=b"1") == 0x81  # 4.01
    assert code(POST, "ps/alice/x", (), payload=b"1") == 0x81       # anonymous refused
    assert code(POST, "ps/alice/r", who + ("r=1",), payload=b"kept") == 0x44
    assert code(GET, "r/alice/r", who) == 0x45                      # her retained message
    assert code(GET, "r/bob/r", who) == 0x83                        # not hers to read
    assert code(GET, "ps/sensors/+/temp", who, observe=0) == 0x45   # within her read grant
    assert code(GET, "ps/#", who, observe=0) == 0x83                # wider: 4.03
    assert code(GET, "ps/clients/dev1/#", who, observe=0) == 0x45   # pattern %c
    take(ep)
    # an observation wider than a deny line: the denied topic is not notified
    bob = _client(b)
    assert bob.connect("bob", username="bob", password=b"pw2").reason == 0
    publish(bob, "sensors/secret/temp", b"no")
    publish(bob, "sensors/1/temp", b"yes")
    got = [m[5] for m in take(ep)]
    assert got == [b"yes"], got
    assert _count(b, "auth/failed") == 1 and _count(b, "auth/anonymous_refused") == 1

