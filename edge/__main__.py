# `micropython -m edge [--config FILE.json] [--bind ADDR] [--port N]
#  [--data DIR] [--log-level L]`: the same broker on a board or the unix
# port (tools/board.py runs it the way a board does). Without --config,
# config.json in the working directory is read if there is one (a board's
# file next to its boot.py). argv is parsed by hand: MicroPython has no
# argparse.
import gc
import sys

from edge.errors import ConfigError

# Bytes allocated between collections while the modules load (serve() sets
# its own figure once they have). Without it nothing is collected until the
# heap is full, so an import's transient garbage spreads over the whole heap
# and what stays (functions, module dicts, the pools of interned names) is
# left scattered between holes. Measured on the 64 KiB board (tools/board.py)
# after importing edge.runtime.main: 19,648 bytes free with the largest free
# run 1,248 bytes; with it, 19,168 free in one run of 17,536. The next pool
# of interned names is 640 entries (7 KB on a 64-bit build, docs/heap.md),
# which CoAP's import needs: at 64 KiB it failed without this. 3 KB, not
# 4 KB: the 64 KiB board with a non-loopback bind (auth's modules loaded at
# start) found no block for them at 4 KB once the TLS hooks were in
# (tests/runtime/test_start.py's bad binds, 3 of 3), and booted at
# 3 KB (3 of 3); issue #21's limits measured the same (no 640-byte block
# at 4 KB, no block for one bind string at 2 KB). That margin is thin:
# docs/heap.md "Fragmented at boot".
_BOOT_GC = 3072


def main(argv):
    if hasattr(gc, "threshold"):  # MicroPython
        gc.threshold(_BOOT_GC)
    # The broker's modules (and the runtime's read buffer) live for good,
    # the config module and the JSON text only for the boot: import the
    # permanent ones first so they pack the bottom of the heap, and the boot
    # garbage, once freed, joins the free space above instead of leaving
    # holes between them (a board's heap has no room for fragmentation).
    from edge.runtime.main import forget, run
    from edge import config

    cfg = config.from_argv(argv)  # the schema and the parsing: boot only
    config = None
    forget("edge.config")  # the schema tables: their heap back
    run(cfg)


def start(argv):
    """Run the broker; a bad setting exits 2 with the key named."""
    try:
        main(argv)
    except ConfigError as e:
        print("edgebroker: config error:", e)
        sys.exit(2)


# Importing this module (a board's boot, tools/board.py, the import checks)
# must not start the broker; `micropython -m edge` runs it as __main__.
if __name__ == "__main__":
    start(sys.argv[1:])
