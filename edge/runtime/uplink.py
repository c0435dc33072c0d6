# The uplink's MicroPython shell (docs/uplink.md; CPython's is
# uplink_cpython.py): one TCP connection to the [upstream] url's host and
# port, opened with MicroPython's asyncio.open_connection (a non-blocking
# connect on its poller, as tcp.py's sockets), bytes fed to the sans-IO
# Uplink (edge/bridge/uplink.py), its ticks driven every 250 ms, reconnects
# after its back-off. Imported by main.py only when upstream.url is set: a
# board without an uplink pays nothing for it (docs/heap.md "The uplink on a
# board").
#
# The outbox (edge/store/outbox.py) is on flash only with the store open
# (persistence on, and room for it: main.py _open_store): it syncs in the
# store's group commit (commit.py), and a local publisher's PUBACK waits for
# its record there. Otherwise the queue is in RAM, bounded by
# outbox_budget_bytes, and a restart loses it.
#
# TLS (amqps://, stomp+ssl://; docs/uplink.md "TLS"): MicroPython's ssl
# (mbedTLS) wraps the socket, the server verified against upstream.cafile
# (a board has no system CAs: it must be set) and its name checked
# (server_hostname); the handshake runs on the first write and read, so its
# failures (ValueError from mbedTLS for a certificate refused, OSError for
# the rest) end the connection like a lost one: logged, retried.
import asyncio
import random

from edge.bridge.uplink import Uplink
from edge.bridge.url import tls
from edge.errors import ConfigError
from edge.runtime.clock import now_ms

_TICK_MS = 250
_CONNECT_MS = 10000
_STOP_MS = 2000  # a clean stop waits this long for the close handshake
_RBUF = 512      # bytes a read takes (the broker's own reads are 1 KB, tcp.py)


class UplinkShell:
    def __init__(self, up, srv, log):
        self.up = up
        self.srv = srv  # the MQTT shell: commands published locally go out by its flush
        self.log = log
        self.w = None       # the Stream while connected
        self.reader = None  # the task reading it
        self.draining = None   # the stream a drain task writes out what its socket did not take
        self.pending = None    # bytes taken while it does, written after it
        self.task = None
        self.ssl = None     # the SSLContext for TLS nodes (tls_context())
        self.why = None     # why the connection is being dropped: an error, or the log's words

    def start(self):
        self.log(20, "uplink: to %s as edge %s" % (", ".join([w for _, w in self.up.nodes]), self.up.edge_id))
        self.task = asyncio.create_task(self._run())

    async def _run(self):
        up = self.up
        while True:
            now = now_ms()
            try:
                if self.reader is None and up.due(now):
                    self.reader = asyncio.create_task(self._link())
                elif self.w is not None:
                    self._check(up.tick(now))
                if up.outbox is not None:
                    # tombstones of confirmed ones, within sync_max_delay_ms
                    up.outbox.log.tick(now)
            except OSError as e:
                self.log(40, "uplink: outbox write failed (%s), retried next tick" % e)
            except MemoryError as e:
                # a full heap must not end the uplink's ticks (its
                # reconnects): this one's work is retried at the next
                self._drop("out of memory (%s)" % e)
                self.log(40, "uplink: tick: out of memory (%s)" % e)
            await asyncio.sleep_ms(_TICK_MS)

    async def _link(self):
        # One connection, from its connect to its end: the task reads it
        up = self.up
        self.why = None
        why = None
        w = None
        heard = False  # a byte came from the server: it did connect
        try:
            ctx = self.ssl if tls(up.where) else None
            try:
                _, w = await asyncio.wait_for_ms(asyncio.open_connection(
                    up.host, up.port, ssl=ctx, server_hostname=up.host if ctx else None), _CONNECT_MS)
            except (OSError, ValueError, asyncio.TimeoutError) as e:
                # (the OSError names no credentials: the URL is not in it)
                why = e if str(e) else "cannot connect: timed out"
                return
            self.w = w
            up.connected(now_ms())
            self._write()
            buf = bytearray(_RBUF)
            mv = memoryview(buf)
            while self.w is not None:
                n = await w.readinto(buf)
                if n is None:
                    continue  # nothing yet
                if not n:
                    break  # EOF
                heard = True
                try:
                    alive = up.feed(mv[:n], now_ms())
                except (OSError, MemoryError):
                    raise
                except Exception as e:  # RemoteProtocolError: drop the socket
                    self.log(30, "uplink: %s: %s" % (up.where, e))
                    alive = False
                self._write()
                self.srv.flush()  # MQTT deliveries of the commands it published
                if not alive:
                    break
        except (OSError, ValueError) as e:
            # (ValueError: mbedTLS refused the server's certificate)
            why = e
        except MemoryError as e:
            # a full heap costs the uplink this connection, not the broker
            why = "out of memory (%s)" % e
        finally:
            # (cancelled too: _check() found it dead, or close())
            self.w = None
            if w is not None:
                try:
                    w.close()
                except OSError:
                    pass
            self.reader = None
            why = self.why or why
            if type(why) is not str:
                # The connect returns once the socket is writable, and a
                # refused TCP connect or TLS handshake shows on the first
                # write or read: until the server said something, its
                # failure is the connect's (as uplink_cpython.py logs it)
                why = "%s: %s" % ("connection lost" if heard else "cannot connect", _oneline(why) if why else "closed")
            up.lost(now_ms(), why)

    def _write(self):
        w = self.w
        if w is None:
            return
        try:
            # (take() hands over a fresh bytearray: written with no copy)
            out = self.up.take()
            if not out:
                return
            if self.draining is w:
                # behind what the drain task is writing: MicroPython's
                # Stream.drain() empties out_buf when it is done, so bytes
                # written to the stream meanwhile would be lost
                self.pending = out if self.pending is None else self.pending + out
                return
            w.write(out)
        except MemoryError as e:
            # the protocol's bytes are lost: the connection cannot go on
            self._drop("out of memory (%s)" % e)
            return
        except (OSError, ValueError) as e:
            self._drop(e)
            return
        if w.out_buf:
            # what the socket did not take now goes as it takes it
            self.draining = w
            asyncio.create_task(self._drain(w))

    async def _drain(self, w):
        # What the socket did not take, then what came meanwhile (pending)
        try:
            while True:
                await w.drain()
                out = self.pending
                self.pending = None
                if out is None or self.w is not w:
                    break
                w.write(out)
        except (OSError, ValueError) as e:
            if self.w is w:  # (not a connection opened since)
                self._drop(e)
        except MemoryError as e:
            if self.w is w:
                self._drop("out of memory (%s)" % e)
        finally:
            if self.draining is w:
                self.draining = None

    def _drop(self, why=None):
        # The connection is over: its reader task ends it (finally above)
        if why and not self.why:
            self.why = why
        self.w = None  # (the reader's loop ends on it, if it is the caller)
        self.pending = None
        r = self.reader
        if r is not None and r is not asyncio.current_task():
            r.cancel()

    def _check(self, alive):
        self._write()
        if not alive:
            self._drop()

    async def close(self):
        if self.task is not None:
            self.task.cancel()
            self.task = None
        up = self.up
        if self.w is not None and up.stop(now_ms()):
            self._write()  # "offline", then the close handshake
            t = now_ms()
            while self.reader is not None and now_ms() - t < _STOP_MS:
                await asyncio.sleep_ms(20)  # the reader ends at close-ok
        else:
            up.stop(now_ms())
        self._drop()
        await asyncio.sleep_ms(0)  # (the reader's finally runs)
        up.close()
        if up.outbox is not None:
            up.outbox.log.close()
            self.log(20, "uplink: stopped, %d waiting in the outbox" % len(up.q))
        else:
            self.log(20, "uplink: stopped, %d unconfirmed lost (persistence off)" % len(up.q))


def _oneline(e):
    # mbedTLS's messages start with a newline: one log line, whatever it says
    return " ".join(str(e).split()) or repr(e)


def _der(path):
    # MicroPython's ssl takes DER only: a PEM file's first block is decoded
    # (RFC 7468 §2), so a board and the gateway can share the same files
    with open(path, "rb") as f:
        b = f.read()
    if b[:10] == b"-----BEGIN":
        from binascii import a2b_base64

        b = a2b_base64(b[b.find(b"\n") + 1:b.find(b"-----END")])
    return b


def tls_context(c):
    """The SSLContext for the [upstream] section c's TLS nodes: the server
    verified against c["cafile"], c["certfile"] and c["keyfile"] for mutual
    TLS (PEM or DER). ConfigError names a file that cannot be used."""
    import ssl

    key = "upstream.cafile"
    if not c["cafile"]:
        raise ConfigError(key, "a board has no system CAs: set the CA file the server's certificate chains to")
    try:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.verify_mode = ssl.CERT_REQUIRED  # (not the default of MicroPython's client context)
        ctx.load_verify_locations(cadata=_der(c["cafile"]))
        if c["certfile"] or c["keyfile"]:
            key = "upstream.certfile"
            if not c["keyfile"] or not c["certfile"]:
                raise ValueError("upstream.certfile and upstream.keyfile go together")
            ctx.load_cert_chain(_der(c["certfile"]), _der(c["keyfile"]))
    except (OSError, ValueError) as e:
        raise ConfigError(key, "cannot load: %s" % _oneline(e))
    return ctx


async def start(cfg, broker, srv, log):
    """The running UplinkShell for the config's [upstream] section."""
    c = cfg["upstream"]
    ctx = tls_context(c) if [u for u in c["url"].replace(",", " ").split() if tls(u)] else None
    ob = None
    if broker.store is not None and broker.store.commit is not None:  # the store is on
        from edge.runtime.outboxlog import open_outbox

        ob = open_outbox(cfg, log)  # else the queue is in RAM only
    up = Uplink(broker, cfg["upstream"], random.random, log, now_ms(), ob)
    if ob is not None:
        # the outbox syncs in the store's group commit, and a local
        # publisher's PUBACK waits for its record (commit.py)
        c = broker.store.commit
        c.outbox = ob.log
        up.appended = c.outbox_appended
    shell = UplinkShell(up, srv, log)
    shell.ssl = ctx
    shell.start()
    broker.uplink = up  # its counters in $SYS/broker/uplink/
    return shell
