# CPython-only parts of edge/runtime/ that need no sockets.
from edge.runtime.speedups_cpython import MemoTrie, install
from tests.core._pair import Client, make_broker, publish, publishes
from edge.mqtt.packets import Disconnect, Unsubscribe


def keys(trie, topic):
    return sorted(k for subs in trie.match_subs(topic) for k in subs)


def test_memo_trie_follows_every_change():
    t = MemoTrie()
    assert keys(t, "a/b") == [] and "a/b" in t.memo
    t.add("a/+", "k1", 0)
    assert keys(t, "a/b") == ["k1"]
    t.add("a/+", "k2", 1)
    assert keys(t, "a/b") == ["k1", "k2"]
    t.add("#", "k3", 0)
    assert keys(t, "a/b") == ["k1", "k2", "k3"] and keys(t, "$SYS/x") == []
    t.remove("a/+", "k1")
    assert keys(t, "a/b") == ["k2", "k3"]
    t.remove("a/+", "k2")
    assert keys(t, "a/b") == ["k3"]
    t.remove_key("k3", ["#"])
    assert keys(t, "a/b") == [] and len(t) == 0 and t.nodes == 0
    for i in range(1500):  # bounded: starts over when full
        keys(t, "n/%d" % i)
        assert len(t.memo) <= 1024


def test_broker_routes_through_the_memo():
    b = make_broker()
    assert install(b) and not install(b)
    s, s2, p = Client(b), Client(b), Client(b)
    for c, name in ((s, "s"), (s2, "s2"), (p, "p")):
        assert c.connect(name).reason == 0
    s.subscribe(("c/+", 1))
    publish(p, "c/1", b"a", 1, pid=1)
    s2.subscribe(("c/+", 0))  # a second key on a filter already matched
    publish(p, "c/1", b"b", 1, pid=2)
    assert [m.payload for m in publishes(s.recv())] == [b"a", b"b"]
    assert [m.payload for m in publishes(s2.recv())] == [b"b"]
    s.send(Unsubscribe(3, ["c/+"]))
    s2.send(Disconnect())  # clean session: its subscription goes too
    publish(p, "c/1", b"c", 1, pid=3)
    assert publishes(s.recv()) == [] and publishes(s2.recv()) == []
    s.subscribe(("c/1", 1))
    publish(p, "c/1", b"d", 1, pid=4)
    assert [m.payload for m in publishes(s.recv())] == [b"d"]
