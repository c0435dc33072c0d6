# edgebroker's main.py (copied to the board's flash by `edgebroker deploy`;
# docs/firmware.md): starts the broker from config.json with the board's
# defaults (edge/config.py's "board" column, under the profile's values the
# deploy wrote into the file), as `micropython -m edge` does
# (edge/__main__.py), plus what only a board has:
# - safe mode (boot.py): the broker stays off, the REPL stays free;
# - machine.WDT, when board.wdt_ms is set: fed from the broker's event loop
#   every second, so a loop that hangs resets the board;
# - a broker that ran 30 s ends a boot loop (edge/board.py's counter).
import asyncio
import gc
import sys
import time

from edge import board


def _log(msg):
    print("main:", msg)


def _watchdog(ms):
    if not ms:
        return None
    try:
        from machine import WDT
    except ImportError:
        _log("no machine.WDT on this board: board.wdt_ms=%d ignored" % ms)
        return None
    return WDT(timeout=ms)


async def _run(cfg, bcfg, log):
    from edge.runtime.main import serve

    up = []
    task = asyncio.create_task(serve(cfg, log, lambda broker, srv: up.append(time.ticks_ms())))
    wdt = _watchdog(bcfg["wdt_ms"])
    stable = False
    while not task.done():
        await asyncio.sleep_ms(1000)
        if wdt is not None:
            wdt.feed()  # the loop turns: the broker's tick does too
        if up and not stable and time.ticks_diff(time.ticks_ms(), up[0]) >= board.STABLE_MS:
            board.stable()
            stable = True
    await task  # what ended it, raised


def main():
    gc.threshold(3072)  # while the modules load: edge/__main__.py _BOOT_GC says why
    try:
        bcfg, raw = board.read()
    except Exception as e:  # noqa: BLE001
        _log("config.json: %s: broker NOT started" % e)
        return
    if board.boots() >= bcfg["safe_mode_boots"]:
        _log("safe mode (see boot.py's log): broker NOT started")
        return
    board.count_boot()  # undone once the broker has run STABLE_MS
    from edge.runtime.main import forget, print_log
    from edge import config
    from edge.errors import ConfigError

    try:
        cfg = config.load(raw, "board")
    except ConfigError as e:
        _log("config.json: %s: broker NOT started" % e)
        return
    try:
        import socket  # noqa: F401
    except ImportError:
        _log("no socket module on this board (no network): broker NOT started")
        return
    raw = config = None
    forget("edge.config")  # the schema tables: their heap back
    gc.collect()
    heap = gc.mem_free() + gc.mem_alloc()
    if bcfg["heap_bytes"] and heap < bcfg["heap_bytes"] * 9 // 10:
        _log("heap %d bytes, profile %r is sized for %d: expect refused connections"
             % (heap, bcfg["profile"], bcfg["heap_bytes"]))
    log = print_log(cfg["log"]["level"])
    try:
        asyncio.run(_run(cfg, bcfg, log))
    except KeyboardInterrupt:
        _log("stopped (Ctrl-C): REPL")
    except Exception as e:  # noqa: BLE001  the REPL stays: a fix over serial
        _log("broker stopped: %r" % (e,))
        if hasattr(sys, "print_exception"):
            sys.print_exception(e)


main()
del main
