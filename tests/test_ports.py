"""tools/ports.py: the free ports the suite's servers bind are out of the
ephemeral range (no client's source port can take them before the server
binds) and never handed out twice."""
import socket

from tools import ports


def test_ports_are_distinct_below_the_ephemeral_range_and_bind():
    low = ports._ephemeral_low()
    got = ports.free_ports(50) + [ports.free_udp_port() for _ in range(50)]
    assert len(set(got)) == len(got)
    if low - 1 - ports._LOWEST >= 1000:
        assert all(ports._LOWEST <= p < low for p in got), got
    with socket.socket() as s:
        s.bind(("127.0.0.1", got[0]))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", got[-1]))


def test_a_port_in_use_is_not_handed_out(monkeypatch):
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    busy = held.getsockname()[1]
    busy_first = [busy, busy]  # the first two picks are the port in use
    randint = ports._rng.randint
    monkeypatch.setattr(ports, "_ephemeral_low", lambda: 65000)
    monkeypatch.setattr(ports._rng, "randint", lambda lo, hi: busy_first.pop() if busy_first else randint(lo, hi))
    try:
        got = ports.free_port()
    finally:
        held.close()
    assert got != busy and not busy_first
