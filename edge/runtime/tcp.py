# The asyncio TCP shell around the broker, identical on CPython and
# MicroPython. One task per connection reads and feeds the broker; a
# connection's packets are handled in order, never a task per packet. After
# each feed, every connection the broker queued output for gets it in one
# write (batched). StreamWriter.write() sends at once on both runtimes when
# the socket takes it; only a backlog needs a drain task, spawned on demand.
import asyncio

from edge.runtime.clock import now_ms

_READ_SIZE = 2048
# One receive buffer for every connection where the stream can readinto
# (MicroPython): each read is handed to the broker before the next await, so
# sharing is safe, and a read allocates nothing. Allocated at import, before
# the heap fragments: 2 KB in one piece is hard to find on a board later on.
_RBUF = bytearray(_READ_SIZE)


def _backlog(writer):
    """Bytes written but not yet taken by the socket."""
    ob = getattr(writer, "out_buf", None)  # MicroPython's Stream
    if ob is not None:
        return len(ob)
    tr = getattr(writer, "transport", None)  # CPython's StreamWriter
    return tr.get_write_buffer_size() if tr is not None else 0


class TcpServer:
    def __init__(self, broker, log):
        self.broker = broker
        self.log = log
        self.writers = {}   # cid -> StreamWriter
        self.draining = set()
        self.next_id = 0
        self.server = None
        self.rbuf = _RBUF  # shared, see above
        self.rmv = memoryview(self.rbuf)

    async def start(self, host, port):
        self.server = await asyncio.start_server(self._client, host, port, backlog=128)
        return self.server

    def flush(self):
        """Write out everything the broker queued; called after each feed."""
        broker = self.broker
        dirty = broker.dirty
        if not dirty:
            return
        i = 0
        while i < len(dirty):  # writing may not add, but closing a peer can
            conn = dirty[i]
            i += 1
            w = self.writers.get(conn.id)
            if w is None:
                conn.take()
                continue
            data = broker.take(conn)
            try:
                if data:
                    w.write(data)
                    conn.out_bytes = _backlog(w)
            except OSError:
                conn.closing = True
            if (conn.out_bytes or conn.closing) and conn.id not in self.draining:
                self.draining.add(conn.id)
                asyncio.create_task(self._drain(conn, w))
        dirty.clear()

    async def _drain(self, conn, w):
        try:
            while True:
                await w.drain()
                conn.out_bytes = _backlog(w)
                if conn.out:  # more was queued meanwhile
                    w.write(self.broker.take(conn))
                    continue
                if conn.closing:
                    break
                if not conn.out_bytes:
                    sess = conn.session
                    if sess is not None and sess.conn is conn:
                        sess.pump()  # room again: move queued messages out
                        if conn.out:
                            continue
                    break
        except OSError:
            conn.closing = True
        finally:
            self.draining.discard(conn.id)
        if conn.closing:
            await self._close_socket(conn.id, w)
        self.flush()

    async def _close_socket(self, cid, w):
        if self.writers.get(cid) is w:
            del self.writers[cid]
        try:
            w.close()
            await w.wait_closed()
        except OSError:
            pass

    async def _client(self, reader, writer):
        broker = self.broker
        cid = self.next_id = self.next_id + 1
        if not broker.open(cid, now_ms()):
            await self._close_socket(cid, writer)
            return
        self.writers[cid] = writer
        conn = broker.conns[cid]
        readinto = getattr(reader, "readinto", None)  # MicroPython's Stream
        try:
            while not conn.closing:
                if readinto is not None:
                    n = await readinto(self.rbuf)
                    if n is None:
                        continue  # spurious wake-up, nothing read
                    data = self.rmv[:n]
                else:
                    data = await reader.read(_READ_SIZE)
                broker.data_received(cid, data, now_ms())
                self.flush()
                if not data:
                    break
        except OSError as e:
            self.log(10, "connection %d: %r" % (cid, e))
        finally:
            broker.connection_lost(cid, now_ms())
            self.flush()
            if cid not in self.draining:
                await self._close_socket(cid, writer)

    def close(self):
        if self.server is not None:
            self.server.close()
        for cid in list(self.writers):
            try:
                self.writers.pop(cid).close()
            except OSError:
                pass
