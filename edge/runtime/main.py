# Start the broker on this runtime: the listener, the 250 ms tick that polls
# every deadline, and (MicroPython) the live-heap figures for $SYS.
import asyncio
import errno
import gc
import os

from edge.errors import ConfigError
from edge.mqtt.broker import Broker
from edge.runtime.clock import now_ms

if hasattr(asyncio, "core"):  # MicroPython: sockets on its asyncio poller
    from edge.runtime.tcp import TcpServer
else:  # CPython: asyncio Protocols, uvloop's event loop when installed
    from edge.runtime.speedups_cpython import cancel_on_sigterm, runner
    from edge.runtime.tcp_cpython import TcpServer  # type: ignore[assignment]

_TICK_MS = 250
_GC_EVERY = 8192  # bytes allocated between collections (MicroPython)
_GC_EVERY_SMALL = 4096  # the same on a heap under _SMALL_HEAP
_SMALL_HEAP = 98304
_STORE_HEAP = 32768  # free heap (bytes) persistence needs at start (board)
_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}
_NAMES = {10: "DEBUG", 20: "INFO", 30: "WARNING", 40: "ERROR"}


def print_log(level_name):
    """A log(level, msg) for runtimes without the logging module."""
    threshold = _LEVELS[level_name]

    def log(level, msg):
        if level >= threshold:
            print("%s %s" % (_NAMES.get(level, level), msg))

    return log


def _makedirs(path):
    # os.makedirs does not exist on MicroPython
    cur = ""
    for part in path.split("/"):
        cur = cur + part + "/" if part or not cur else cur
        if part and part != ".":
            try:
                os.mkdir(cur.rstrip("/"))
            except OSError:
                pass  # exists


def _heap():
    alloc = getattr(gc, "mem_alloc", None)  # MicroPython only
    if alloc is None:
        return -1
    gc.collect()
    return alloc()


async def serve(cfg, log, started=None):
    tls = cfg.get("tls")  # (a board's config without [tls] has none: edge/config.py)
    if tls and [k for k in tls if tls[k] and k != "port"]:  # [tls] sets something
        if hasattr(asyncio, "core"):  # MicroPython: DER files, tcp.py wraps
            from edge.runtime.tls import start as tls
        else:
            from edge.runtime.tls_cpython import start as tls  # type: ignore[assignment]
        tls = tls(cfg, log)  # None: no certfile. ConfigError (exit 2) naming a key
        if hasattr(asyncio, "core"):
            forget("edge.runtime.tls")  # its Tls class stays, with its instance
    else:
        tls = None
    if hasattr(gc, "threshold"):  # MicroPython
        # Collect after every _GC_EVERY bytes allocated, not only when the
        # heap is full: garbage then never spreads over the whole heap, so
        # what lives long (connections, sessions) packs low and the free
        # space stays in large pieces. Measured on the 64 KiB board heap
        # (tests/integration/test_02_pubsub.py under MicroPython, whose
        # fan-out test opens 6 connections after ~70 others): without it
        # the 6th found no free 272-byte block in 4 runs of 4; with it 13
        # of 14 runs passed. The cost: a collection per 8 KB allocated.
        # A heap under 96 KiB collects every 4 KB: at 64 KiB the 5.0 tests
        # (tests/integration/test_08_mqtt5.py, test_10_interop.py,
        # test_12/13_conformance_v5*.py, test_03_session.py under
        # MicroPython, 125 tests) failed 2 times in 3 runs at 8 KB, with
        # no 160-272 byte block for a new connection, and 0 in 3 at 4 KB;
        # the board's fan-in throughput costs 21-35% (QoS 1: 9.0k -> 7.1k
        # msg/s, python -m tools.bench --brokers edgebroker-mpy at 256 KiB
        # forced to 4 KB), so larger heaps keep 8 KB.
        # Set before the store's replay, the most garbage a start makes:
        # set after it, a replay of ~400 records left a 256 KiB heap with
        # 180 KB free and no 2.7 KB block (tools/crash.py at 200 msg/s
        # then found every connection closed out of memory, or the next
        # start no heap to open the store).
        gc.threshold(_GC_EVERY_SMALL if gc.mem_free() + gc.mem_alloc() < _SMALL_HEAP else _GC_EVERY)
    d = cfg["store"]["dir"]
    _makedirs(d)
    release = _lock(d, log)  # persistence on or off: one broker per directory
    b = cfg["broker"]
    broker = Broker(cfg, now_ms(), log)
    broker.tls = tls
    srv = TcpServer(broker, log)  # (CPython: swaps in its trie while empty)
    if hasattr(srv, "sync_wait_us"):  # (CPython's: tcp_cpython.py)
        srv.sync_wait_us = cfg["store"]["sync_wait_us"]
    # [auth] set, or a bind that may not be loopback (auth.py decides):
    # only then is auth imported, so a board without it pays nothing
    # (the test spares this module the key names: each is a qstr on a board)
    if b["bind"][:4] != "127." or [v for v in cfg["auth"].values() if v is not None] or (
            tls is not None and (cfg["tls"]["bind"] or "127.")[:4] != "127."):
        from edge.runtime import auth

        try:
            reload = auth.start(cfg, broker, log)
        except BaseException:
            release()
            raise
        if hasattr(asyncio, "core"):
            forget("edge.runtime.auth")  # boot-only on a board (no SIGHUP)
            forget("edge.auth.passwords")
        elif reload is not None:
            from edge.runtime.auth_cpython import watch

            watch(reload, broker, log)  # SIGHUP reloads the files
        auth = reload = None
    wal = None
    if cfg["store"]["persistence"]:
        try:
            wal = _open_store(cfg, broker, log)  # replayed before anyone connects
        except BaseException:
            release()  # (a store that cannot open stops the start: the lock too)
            raise
        if wal is not None and hasattr(asyncio, "core"):  # MicroPython: group commit
            from edge.runtime.commit import Committer

            broker.store.commit = Committer(srv, log, cfg["store"]["sync_wait_us"])
    else:
        log(30, "store: persistence off, nothing survives a restart")
    try:
        await srv.start(b["bind"], b["port"])
    except OSError as e:
        # this broker never ran: what start() opened is closed again
        if wal is not None:
            wal.close()
        release()
        if e.errno == errno.EADDRINUSE:
            raise  # the port, not the address (the caller says so, exit 1)
        # an address that does not resolve, or is not this host's
        raise ConfigError("broker.bind", "cannot listen on %s port %d: %s" % (b["bind"], b["port"], e))
    # srv.port: the port taken when port 0 asked for any
    log(20, "edgebroker listening on %s:%d (MQTT), data in %s" % (b["bind"], srv.port, cfg["store"]["dir"]))
    if tls is not None:
        t = cfg["tls"]
        host = t["bind"] or b["bind"]
        try:
            await tls.listen(srv, host, t["port"])
        except OSError as e:
            srv.close()
            if wal is not None:
                wal.close()
            release()
            raise ConfigError("tls.port" if e.errno == errno.EADDRINUSE else "tls.bind",
                              "cannot listen on %s port %d: %s" % (host, t["port"], e))
        log(20, "edgebroker listening on %s:%d (MQTT over TLS)" % (host, tls.port))
    coap = None
    if cfg["coap"]["enabled"]:
        from edge.runtime.coap import start as start_coap  # only when enabled: a board's heap

        try:
            coap = await start_coap(cfg["coap"], broker, srv, log)
        except BaseException:
            srv.close()
            if wal is not None:
                wal.close()
            release()
            raise
    uplink = None
    up = cfg.get("upstream")  # (a board's config has it only when named: edge/config.py)
    if up and up["url"]:
        # only when set: a board without an uplink pays nothing for it
        if hasattr(asyncio, "core"):
            from edge.runtime.uplink import start as start_uplink
        else:
            from edge.runtime.uplink_cpython import start as start_uplink  # type: ignore[assignment]
        try:
            uplink = await start_uplink(cfg, broker, srv, log)
        except BaseException:
            # (a TLS file that cannot be loaded, an outbox that cannot open:
            # what start() opened is closed again)
            if coap is not None:
                coap.close()
            srv.close()
            if wal is not None:
                wal.close()
            release()
            raise
    up = None
    if started is not None:
        started(broker, srv)
    # Nothing reads the config after start-up (the Broker copied its limits):
    # emptied, its dicts give a board's heap back about 1 KB (the callers'
    # frames still hold the outer dict until the broker stops).
    for section in cfg.values():
        section.clear()
    cfg.clear()
    b = None
    heap_max = 0
    if not hasattr(asyncio, "core"):
        cancel_on_sigterm()  # CPython: a stop between callbacks, never inside one
    try:
        while True:
            await asyncio.sleep_ms(_TICK_MS) if hasattr(asyncio, "sleep_ms") else await asyncio.sleep(_TICK_MS / 1000)
            now = now_ms()
            if now >= broker.next_sys:
                cur = _heap()
                if cur >= 0:
                    heap_max = cur if cur > heap_max else heap_max
                    broker.heap = (cur, heap_max)
            try:
                broker.tick(now)
                if coap is not None:
                    coap.tick(now)  # CON retransmissions, expired exchanges
                srv.flush()
                if wal is not None:
                    # an unpromised batch synced within sync_max_delay_ms;
                    # garbage compacted away
                    wal.tick(now)
            except OSError as e:
                log(40, "store: write failed (%s), retried next tick" % e)
            except MemoryError as e:
                # A full heap must not end the broker: this tick's work (a
                # will, a $SYS round) is lost, logged; the next tick retries
                # the deadlines.
                log(40, "tick: out of memory (%s)" % e)
    finally:
        if uplink is not None:
            await uplink.close()  # "offline" upstream, then the close handshake
        if coap is not None:
            coap.close()
        if tls is not None:
            tls.close()
        srv.close()
        if wal is not None:
            wal.close()  # the last batch synced: a clean stop loses nothing
            log(20, "store: synced and closed")
        release()  # last: the next broker opens a store this one has closed


def _lock(d, log):
    # Take d's lock (lock.py); returns what releases it. On MicroPython the
    # lock is a record checked at start only, so its code leaves the heap
    # once the record is written (a board's heap, as edge.config's), and
    # releasing is removing the record.
    if not hasattr(asyncio, "core"):  # CPython: an flock held until the end
        from edge.runtime import lock_cpython

        fd = lock_cpython.acquire(d, log)
        return lambda: lock_cpython.release(fd)
    from edge.runtime import lock

    path = lock.acquire(d, log)
    forget("edge.runtime.lock")
    return lambda: _remove(path)


def forget(name):
    """Drop module `name` for good, so that its code's heap comes back at the
    next collection: out of sys.modules and off its package, which holds it
    as an attribute too (for boot-only code on a board)."""
    import sys

    sys.modules.pop(name, None)
    pkg, _, attr = name.rpartition(".")
    pkg = sys.modules.get(pkg)
    if pkg is not None and attr in pkg.__dict__:
        delattr(pkg, attr)


def _remove(path):
    try:
        os.remove(path)
    except OSError:
        pass  # gone already: nothing to release


def _open_store(cfg, broker, log):
    # The store costs a board 22.4 KB of heap open and idle (its code's names
    # and function objects, a pool of interned names: docs/heap.md
    # "Persistence at 64 KiB: the floor"), so it is imported only when
    # persistence is on, and only with room for it and the clients after it.
    # Free here: 16.5 KB at 64 KiB; 32,672 B at 80 KiB, refused (6 clients'
    # QoS 1/2 closed out of memory there). 36,768 B at 84 KiB opens, where
    # since the store's pieces (+1.8 KB, edge/runtime/flash.py) 6 such
    # clients need 88 KiB (python -m tools.boardload --heap 88k
    # --persistence); a higher figure here refused configurations that run
    # with fewer clients (auth at 96 KiB: 33,696 B; firmware/main.py's at
    # 96 KiB: 38,112 B), so the check stays a floor for the store itself.
    gc.collect()
    free = gc.mem_free() if hasattr(gc, "mem_free") else -1  # MicroPython only
    if 0 <= free < _STORE_HEAP:
        why = free
    else:
        from edge.runtime.persist import start

        wal, why = start(cfg, broker, log)
        if wal is not None:
            return wal
    # It did not open: the start stops, unless the config lets the broker
    # run without it (nostore.py: imported on this path only, a board's heap)
    from edge.runtime.nostore import refuse

    refuse(cfg, broker, log, why, _STORE_HEAP)
    forget("edge.runtime.nostore")
    return None


def run(cfg, log=None):
    """Run until interrupted (Ctrl-C / SIGTERM handled by the caller)."""
    if log is None:
        log = print_log(cfg["log"]["level"])
    go = asyncio.run
    if not hasattr(asyncio, "core"):  # CPython
        go, name = runner(log)
        log(20, "event loop: %s" % name)
    try:
        go(serve(cfg, log))
    except (KeyboardInterrupt, asyncio.CancelledError):
        pass  # Ctrl-C, or SIGTERM (serve): stopped after its cleanup
