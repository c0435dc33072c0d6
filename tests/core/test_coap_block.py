# Block-wise transfers (RFC 7959, edge/coap/block.py): Block1 reassembly of
# a large publish, bounded; Block2 for large responses and notifications.
# block_size 64 (SZX 2) in these tests.
from tests.core._coap import GET, OTHER, POST, PUT, feed, make, opt, request, take, uopt
from tests.core._pair import Client, publish, publishes


def _sub(b, f):
    s = Client(b)
    s.connect("s")
    s.subscribe((f, 1))
    return s


def _b1(ep, num, more, szx, chunk, mid, topic="ps/big", now=0, query=(), peer=None, extra=()):
    v = num << 4 | (8 if more else 0) | szx
    opts = ((27, bytes([v]) if v < 256 else v.to_bytes(2, "big")),) + tuple(extra)
    data = request(POST, topic, mid=mid, token=b"b%d" % mid, query=query, payload=chunk, opts=opts)
    return feed(ep, data, peer or ("192.0.2.1", 5683), now)[0]


def test_block1_reassembles_a_large_publish():
    b, ep = make(max_payload=256)
    s = _sub(b, "big")
    body = bytes(range(150))
    m = _b1(ep, 0, True, 2, body[:64], 1, query=("qos=1",))
    assert m[1] == 0x5F and uopt(m, 27) == 0 << 4 | 8 | 2  # 2.31 Continue
    m = _b1(ep, 1, True, 2, body[64:128], 2, query=("qos=1",))
    assert m[1] == 0x5F and uopt(m, 27) == 1 << 4 | 8 | 2
    assert publishes(s.recv()) == []
    m = _b1(ep, 2, False, 2, body[128:], 3, query=("qos=1",))
    assert m[1] == 0x44 and uopt(m, 27) == 2 << 4 | 2
    got = publishes(s.recv())
    assert [(x.topic, x.payload, x.qos) for x in got] == [("big", body, 1)]
    assert not ep.xfers and ep.stats.publishes == 1


def test_block1_larger_than_max_payload_is_413():
    b, ep = make(max_payload=100)
    _b1(ep, 0, True, 2, b"x" * 64, 1)
    m = _b1(ep, 1, True, 2, b"x" * 64, 2)
    assert m[1] == 0x8D and uopt(m, 60) == 100
    assert not ep.xfers and ep.stats.refusals == 1
    # told in advance by Size1 (RFC 7959 §4)
    m = _b1(ep, 0, True, 2, b"x" * 64, 3, extra=((60, b"\x01\x00"),))
    assert m[1] == 0x8D and not ep.xfers


def test_block1_missing_or_out_of_order_is_408():
    b, ep = make()
    m = _b1(ep, 1, True, 2, b"x" * 64, 1)  # no block 0
    assert m[1] == 0x88
    _b1(ep, 0, True, 2, b"x" * 64, 2)
    m = _b1(ep, 2, True, 2, b"x" * 64, 3)  # block 1 skipped
    assert m[1] == 0x88 and not ep.xfers
    _b1(ep, 0, True, 2, b"x" * 64, 4)
    m = _b1(ep, 1, True, 2, b"x" * 64, 5, topic="ps/other")  # another URI
    assert m[1] == 0x88


def test_block1_short_middle_block_is_400():
    b, ep = make()
    _b1(ep, 0, True, 2, b"x" * 64, 1)
    assert _b1(ep, 1, True, 2, b"x" * 10, 2)[1] == 0x80


def test_block1_client_block_size_larger_than_ours():
    # the client sends 128-byte blocks; we answer 2.31 with our SZX 2 (64)
    # and it carries on at 64 bytes, block numbers counted at that size
    b, ep = make(max_payload=512)
    s = _sub(b, "big")
    body = bytes(range(200))
    m = _b1(ep, 0, True, 3, body[:128], 1)
    assert m[1] == 0x5F and uopt(m, 27) == 8 | 2
    m = _b1(ep, 2, True, 2, body[128:192], 2)
    assert m[1] == 0x5F
    m = _b1(ep, 3, False, 2, body[192:], 3)
    assert m[1] == 0x44
    assert publishes(s.recv())[0].payload == body


def test_block1_duplicate_block_is_answered_again_and_not_appended():
    # A retransmitted non-final block (its 2.31 lost) is answered again and
    # not appended twice: idempotent, so it takes no reply cache entry
    # (RFC 7252 §4.5 allows processing an idempotent request again); only
    # the final block, which publishes, is deduplicated by the cache
    b, ep = make(max_payload=512)
    s = _sub(b, "big")
    peer = ("192.0.2.1", 5683)
    body = bytes(range(150))
    _b1(ep, 0, True, 2, body[:64], 1)
    m = _b1(ep, 0, True, 2, body[:64], 1)
    assert m[1] == 0x5F and len(ep.xfers[peer][1]) == 64
    _b1(ep, 1, True, 2, body[64:128], 2)
    m = _b1(ep, 1, True, 2, body[64:128], 2)
    assert m[1] == 0x5F and uopt(m, 27) == 1 << 4 | 8 | 2 and len(ep.xfers[peer][1]) == 128
    assert not ep.cache
    last = _b1(ep, 2, False, 2, body[128:], 3)
    assert _b1(ep, 2, False, 2, body[128:], 3) == last and ep.stats.duplicates == 1
    assert [x.payload for x in publishes(s.recv())] == [body]


def test_block1_transfers_are_bounded_and_expire():
    b, ep = make(max_transfers=1, exchange_lifetime=10)
    _b1(ep, 0, True, 2, b"x" * 64, 1, now=0)
    m = _b1(ep, 0, True, 2, b"x" * 64, 2, peer=OTHER)
    assert m[1] == 0xA3 and ep.stats.refusals == 1
    assert ep.next_deadline() == 10000
    ep.tick(10000)
    assert not ep.xfers
    assert _b1(ep, 0, True, 2, b"x" * 64, 3, peer=OTHER, now=10001)[1] == 0x5F


def test_block1_with_put_and_single_block():
    b, ep = make()
    s = _sub(b, "one")
    data = request(PUT, "ps/one", opts=((27, b"\x02"),), payload=b"small")
    m = feed(ep, data)[0]
    assert m[1] == 0x44 and uopt(m, 27) == 2
    assert publishes(s.recv())[0].payload == b"small"


def _retain(b, topic, payload):
    p = Client(b)
    p.connect("p")
    publish(p, topic, payload, 0, True)


def test_block2_response():
    b, ep = make()
    body = bytes(range(150))
    _retain(b, "big", body)
    m = feed(ep, request(GET, "r/big"))[0]
    assert m[1] == 0x45 and m[5] == body[:64] and uopt(m, 23) == 8 | 2
    etag = opt(m, 4)
    assert etag
    m = feed(ep, request(GET, "r/big", mid=2, opts=((23, b"\x12"),)))[0]  # num 1
    assert m[5] == body[64:128] and uopt(m, 23) == 1 << 4 | 8 | 2 and opt(m, 4) == etag
    m = feed(ep, request(GET, "r/big", mid=3, opts=((23, b"\x22"),)))[0]  # num 2, the last
    assert m[5] == body[128:] and uopt(m, 23) == 2 << 4 | 2
    m = feed(ep, request(GET, "r/big", mid=4, opts=((23, b"\x32"),)))[0]  # past the end
    assert m[1] == 0x82


def test_block2_client_smaller_size_and_size2():
    b, ep = make()
    body = b"z" * 100
    _retain(b, "big", body)
    m = feed(ep, request(GET, "r/big", opts=((23, b"\x01"), (28, b""))))[0]  # SZX 1: 32 bytes
    assert m[5] == body[:32] and uopt(m, 23) == 8 | 1 and uopt(m, 28) == 100
    m = feed(ep, request(GET, "r/big", opts=((23, b"\x07"),)))[0]  # SZX 7 (BERT): not for us
    assert m[1] == 0x80
    _retain(b, "small", b"tiny")
    m = feed(ep, request(GET, "r/small", opts=((23, b"\x02"),)))[0]
    assert m[5] == b"tiny" and uopt(m, 23) == 2 and opt(m, 4) is None


def test_block2_notification_and_its_later_blocks():
    b, ep = make()
    feed(ep, request(GET, "ps/n/t", token=b"ob", observe=0))
    body = bytes(range(200))
    b.publish("n/t", body)  # not retained: the later blocks come from the held message
    m = take(ep)[0]
    assert m[5] == body[:64] and uopt(m, 23) == 8 | 2 and uopt(m, 6) is not None
    etag = opt(m, 4)
    m = feed(ep, request(GET, "ps/n/t", mid=2, token=b"g2", opts=((23, b"\x12"),)))[0]
    assert m[1] == 0x45 and m[5] == body[64:128] and opt(m, 4) == etag
    m = feed(ep, request(GET, "ps/n/t", mid=3, token=b"g3", opts=((23, b"\x32"),)))[0]
    assert m[5] == body[192:] and uopt(m, 23) == 3 << 4 | 2
    b.publish("n/t", b"small")  # a small one releases the held message
    assert take(ep)[0][5] == b"small"
    assert feed(ep, request(GET, "ps/n/t", mid=4, opts=((23, b"\x12"),)))[0][1] == 0x84


def test_block2_registration_with_client_block_size():
    b, ep = make()
    data = request(GET, "ps/n/u", token=b"ob", observe=0, opts=((23, b"\x00"),))  # SZX 0: 16 bytes
    feed(ep, data)
    b.publish("n/u", b"y" * 40)
    m = take(ep)[0]
    assert m[5] == b"y" * 16 and uopt(m, 23) == 8


def test_post_publish_response_is_not_blockwise():
    b, ep = make()
    m = feed(ep, request(POST, "ps/p", payload=b"x" * 60))[0]
    assert m[1] == 0x44 and opt(m, 23) is None
