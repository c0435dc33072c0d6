# The MicroPython UDP shell around the CoAP endpoint (edge/coap/,
# docs/coap.md); CPython's is udp_cpython.py. MicroPython's asyncio has no
# datagram API: the socket goes on its poller (asyncio.core._io_queue) as
# the TCP shell's sockets do, and one plain generator reads it.
#
# Durability (docs/design.md "Delivery guarantees"): as in tcp.py, the
# store's batch is synced before any output goes out (a 2.04 answering a
# QoS 1/2 publish promises its records); a failed sync holds the output
# until a later flush, at the latest the next tick's.
import asyncio
import gc

from edge.runtime.clock import now_ms
from edge.runtime.tcp import _bind

_io_queue = asyncio.core._io_queue  # type: ignore[attr-defined]

# Largest datagram read: RFC 7252 §4.6 keeps a message within 1152 bytes
# unless block-wise says otherwise; a bigger one is cut here, and the
# codec refuses a truncated message.
_MAX_DATAGRAM = 1280


class UdpServer:
    def __init__(self, endpoint, tcp, log):
        self.ep = endpoint
        self.tcp = tcp      # its _durable() syncs the store
        self.log = log
        self.sock = None
        self.port = 0
        self.task = None

    async def start(self, host, port):
        import socket

        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            self.port = _bind(s, socket, host, port)
        except OSError:
            s.close()
            raise
        s.setblocking(False)
        self.sock = s
        self.task = asyncio.create_task(self._serve(s))
        self.tcp.udp = self  # its flushes after MQTT feeds send notifications too

    def _serve(self, s):
        # a plain generator on the poller: one frame for the listener's life
        while True:
            yield _io_queue.queue_read(s)
            self._readable(s)

    def _readable(self, s):
        try:
            try:
                data, addr = s.recvfrom(_MAX_DATAGRAM)
            except MemoryError:
                # no free block of _MAX_DATAGRAM bytes now: collect, retry;
                # else read it into 1 byte (UDP drops the rest): the datagram
                # is lost as UDP may lose it (a CON is sent again), logged,
                # and the socket does not wake us for it again
                gc.collect()
                try:
                    data, addr = s.recvfrom(_MAX_DATAGRAM)
                except MemoryError:
                    s.recvfrom(1)
                    self.log(40, "coap: datagram dropped: out of memory")
                    return
        except OSError:
            return  # e.g. an ICMP error reported on the socket, or a spurious wake-up
        try:
            self.ep.datagram(data, addr, now_ms())
        except MemoryError:
            # a full heap costs this datagram (the peer retransmits a CON)
            self.log(40, "coap: datagram dropped: out of memory")
        # the TCP shell's flush: the MQTT deliveries a publish queued go out
        # now, not at the next tick, and (its first step) this shell's output
        self.tcp.flush()
        self.flush()

    def tick(self, now):
        self.ep.tick(now)  # retransmissions, expired exchanges
        self.flush()

    def flush(self):
        out = self.ep.out
        if not out or not self.tcp._durable():
            return
        s = self.sock
        for data, addr in out:
            try:
                s.sendto(data, addr)
            except OSError as e:
                # a full send buffer or an unreachable peer: the datagram is
                # lost as UDP loses it; a CON is retransmitted
                self.log(10, "coap: sendto failed: %r" % e)
        out.clear()

    def close(self):
        self.ep.close()
        if self.task is not None:
            self.task.cancel()
        if self.sock is not None:
            self.sock.close()
            self.sock = None
