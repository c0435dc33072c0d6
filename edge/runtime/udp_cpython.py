# The CPython UDP shell around the CoAP endpoint (edge/coap/, docs/coap.md):
# an asyncio datagram endpoint feeds each datagram to the Endpoint and sends
# what it queued in `out`. MicroPython's path is udp.py. Named *cpython* so
# it never goes onto a board.
#
# Durability (docs/design.md "Delivery guarantees"): a 2.04 answering a
# QoS 1/2 publish promises what the store recorded for it, as a PUBACK does.
# Output that leaves while the store has records not yet durable is held,
# tagged with the log's next_seq - 1, and goes out once Log.settled() reaches
# it: the TCP shell's group commit (commit_cpython.py) writes and syncs the
# batch and calls release() after every settle, so CoAP and MQTT records
# share one sync. Held output keeps its order: nothing overtakes it.
import asyncio
import socket

from edge.runtime.clock import now_ms


class _Proto(asyncio.DatagramProtocol):
    __slots__ = ("srv",)

    def __init__(self, srv):
        self.srv = srv

    def datagram_received(self, data, addr):
        self.srv.received(data, addr)

    def error_received(self, exc):
        # e.g. ICMP port unreachable for a notification: the exchange layer
        # retransmits a CON and gives up on its own (RFC 7252 §4.2)
        self.srv.log(10, "coap: %r" % exc)


class UdpServer:
    def __init__(self, endpoint, tcp, log):
        self.ep = endpoint
        self.tcp = tcp            # the TCP shell, whose commits sync the store
        self.store = tcp.broker.store
        self.log = log
        self.tr = None            # the datagram transport
        self.port = 0             # the port bound (port 0: the one the OS took)
        self.held = []            # [(need, data, addr)] waiting for the store

    async def start(self, host, port):
        loop = asyncio.get_running_loop()
        # Bound here, not by create_datagram_endpoint(local_addr=...): uvloop
        # reports a port in use there as an OSError without its errno
        info = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
        s = socket.socket(info[0], socket.SOCK_DGRAM)
        try:
            s.bind(info[4])
        except OSError:
            s.close()
            raise
        self.tr, _ = await loop.create_datagram_endpoint(lambda: _Proto(self), sock=s)
        self.port = self.tr.get_extra_info("sockname")[1]
        self.tcp.udp = self  # its commits release what waits here

    def received(self, data, addr):
        try:
            self.ep.datagram(data, addr, now_ms())
        except MemoryError:
            # a full heap costs this datagram (the peer retransmits a CON)
            self.log(40, "coap: datagram from %s dropped: out of memory" % (addr,))
        # the TCP shell's flush: the MQTT deliveries a publish queued go out
        # now, not at the next tick, and (its first step) this shell's output
        self.tcp.flush()
        self.flush()

    def tick(self, now):
        self.ep.tick(now)  # retransmissions, expired exchanges
        self.flush()

    def flush(self):
        out = self.ep.out
        if not out:
            return
        st = self.store
        # (the TCP shell's settled(): the store's, held back by the uplink's
        # outbox while the outbox record of a publish is not durable yet)
        if st is None or (not self.held and self.tcp.settled() >= st.log.next_seq - 1):
            self._send(out)
        else:
            need = st.log.next_seq - 1
            for data, addr in out:
                self.held.append((need, data, addr))
            self.tcp.commit_soon()
        out.clear()

    def release(self, settled):
        """The store is durable up to `settled` (Log.settled): what waited
        for it goes out, in order."""
        held = self.held
        k = 0
        while k < len(held) and held[k][0] <= settled:
            k += 1
        if k:
            out = [(data, addr) for _, data, addr in held[:k]]
            del held[:k]
            self._send(out)

    def _send(self, out):
        tr = self.tr
        if tr is None:
            return
        for data, addr in out:
            tr.sendto(data, addr)

    def close(self):
        self.ep.close()
        if self.tr is not None:
            self.tr.close()
            self.tr = None
