# The uplink's CPython shell (docs/uplink.md): one asyncio TCP connection to
# the [upstream] url's host and port, bytes fed to the sans-IO Uplink
# (edge/bridge/uplink.py), its ticks driven, reconnects after its back-off.
# Imported by main.py only when upstream.url is set. Named *cpython* so it
# never goes onto a board (a MicroPython shell is still to be written).
import asyncio
import random

from edge.bridge.uplink import Uplink
from edge.bridge.url import tls
from edge.errors import ConfigError
from edge.runtime.clock import now_ms

_TICK_S = 0.25
_CONNECT_TIMEOUT_S = 10.0
_STOP_WAIT_S = 2.0  # a clean stop waits this long for the close handshake


class _Proto(asyncio.Protocol):
    def __init__(self, shell):
        self.shell = shell

    def data_received(self, data):
        self.shell.received(data)

    def connection_lost(self, exc):
        self.shell.gone(exc)


class UplinkShell:
    def __init__(self, up, tcp, log):
        self.up = up
        self.tcp = tcp  # the MQTT shell: commands published locally go out by its flush
        self.log = log
        self.tr = None
        self.task = None
        self.closed = None  # a Future set when the transport is gone
        self.kicked = False  # a write is scheduled for the end of this loop pass
        self.cmds = 0        # up.commands_in when the MQTT side was last flushed
        self.ssl = None      # the SSLContext for amqps:// and stomp+ssl:// nodes (tls_context())
        up.wake = self._kick

    def start(self):
        self.log(20, "uplink: to %s as edge %s" % (", ".join([w for _, w in self.up.nodes]), self.up.edge_id))
        self.task = asyncio.get_event_loop().create_task(self._run())

    async def _run(self):
        up = self.up
        loop = asyncio.get_event_loop()
        while True:
            now = now_ms()
            if self.tr is None and up.due(now):
                try:
                    # TLS: the server verified against upstream.cafile and
                    # its certificate's name checked against the URL's host
                    # (server_hostname); the handshake within the timeout
                    ctx = self.ssl if tls(up.where) else None
                    tr, _ = await asyncio.wait_for(
                        loop.create_connection(lambda: _Proto(self), up.host, up.port, ssl=ctx,
                                               server_hostname=up.host if ctx else None), _CONNECT_TIMEOUT_S)
                except (OSError, asyncio.TimeoutError) as e:
                    # (the OSError names host and port, never the credentials;
                    # ssl.SSLError is an OSError: a certificate refused says
                    # why, "CERTIFICATE_VERIFY_FAILED ...", and is retried)
                    up.lost(now_ms(), "cannot connect: %s" % (e or "timed out"))
                else:
                    self.tr = tr
                    self.closed = loop.create_future()
                    up.connected(now_ms())
                    self._write()
            elif self.tr is not None:
                self._check(up.tick(now))
                if up.commands_in != self.cmds:
                    # commands a tick published (held ones, once the outbox
                    # had room): their MQTT deliveries go now, not with the
                    # next client's traffic
                    self.cmds = up.commands_in
                    self.tcp.flush()
            if up.outbox is not None:
                try:
                    # what the group commit did not sync (tombstones of
                    # confirmed ones) within sync_max_delay_ms; compaction
                    up.outbox.log.tick(now)
                except OSError as e:
                    self.log(40, "uplink: outbox write failed (%s), retried next tick" % e)
            await asyncio.sleep(_TICK_S)

    def _write(self):
        out = self.up.take()
        if out and self.tr is not None:
            self.tr.write(bytes(out))

    def _kick(self):
        # a local publish queued frames while nothing was in flight (no
        # confirm is coming to carry them: Uplink._local): written at the
        # end of the loop pass, every feed read in the pass in one write
        if not self.kicked:
            self.kicked = True
            asyncio.get_event_loop().call_soon(self._kicked)

    def _kicked(self):
        self.kicked = False
        self._write()

    def _check(self, alive):
        self._write()
        if not alive and self.tr is not None:
            self.tr.close()

    def received(self, data):
        try:
            alive = self.up.feed(data, now_ms())
        except Exception as e:  # RemoteProtocolError: drop the socket
            self.log(30, "uplink: %s: %s" % (self.up.where, e))
            alive = False
        self._check(alive)
        self.cmds = self.up.commands_in
        self.tcp.flush()  # MQTT deliveries of the commands it published

    def gone(self, exc):
        self.tr = None
        if self.closed is not None and not self.closed.done():
            self.closed.set_result(None)
        self.up.lost(now_ms(), "connection lost%s" % (": %s" % exc if exc else ""))

    async def close(self):
        if self.task is not None:
            self.task.cancel()
            self.task = None
        if self.tr is not None and self.up.stop(now_ms()):
            self._write()
            try:
                await asyncio.wait_for(self.closed, _STOP_WAIT_S)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                pass
        else:
            self.up.stop(now_ms())
        if self.tr is not None:
            self.tr.close()
            self.tr = None
        self.up.close()
        if self.up.outbox is not None:
            self.up.outbox.log.close()
            self.log(20, "uplink: stopped, %d waiting in the outbox" % len(self.up.q))
        else:
            self.log(20, "uplink: stopped, %d unconfirmed lost (persistence off)" % len(self.up.q))


def tls_context(c):
    """The ssl.SSLContext for the [upstream] section c's TLS nodes: TLS 1.2
    or later, the server's certificate verified (against c["cafile"], else
    the system's CAs) and its name checked; c["certfile"] and c["keyfile"]
    for mutual TLS. ConfigError names a file that cannot be used."""
    import ssl

    key = "upstream.cafile"
    try:
        ctx = ssl.create_default_context(cafile=c["cafile"] or None)  # CERT_REQUIRED, check_hostname
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if c["certfile"]:
            key = "upstream.certfile"
            ctx.load_cert_chain(c["certfile"], c["keyfile"] or None)
        elif c["keyfile"]:
            raise ConfigError("upstream.keyfile", "needs upstream.certfile (the client certificate)")
    except (OSError, ValueError) as e:  # (ssl.SSLError is an OSError)
        raise ConfigError(key, "cannot load: %s" % e)
    return ctx


async def start(cfg, broker, tcp, log):
    """The running UplinkShell for the config's [upstream] section."""
    c = cfg["upstream"]
    ctx = tls_context(c) if [u for u in c["url"].replace(",", " ").split() if tls(u)] else None
    ob = None
    if cfg["store"]["persistence"]:
        from edge.runtime.outboxlog import open_outbox

        ob = open_outbox(cfg, log)  # else the queue is in RAM only
    up = Uplink(broker, cfg["upstream"], random.random, log, now_ms(), ob)
    if ob is not None and broker.store is not None and hasattr(tcp, "outbox_appended"):
        # the outbox syncs in the store's group commit, and a local
        # publisher's PUBACK (CoAP 2.04) waits for its record (commit_cpython.py)
        tcp.outbox = ob.log
        up.appended = tcp.outbox_appended
    shell = UplinkShell(up, tcp, log)
    shell.ssl = ctx
    shell.start()
    broker.uplink = up  # its counters in $SYS/broker/uplink/
    return shell
