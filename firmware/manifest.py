# What a MicroPython firmware image freezes of edgebroker: edge/ (the
# portable core, compiled by mpy-cross so its bytecode runs from flash and
# only objects take heap) and MicroPython's asyncio. The *_cpython.py modules
# of edge/runtime/ run on CPython only and stay out.
#
# The QEMU board includes it (firmware/qemu/manifest.py); an ESP32 image
# includes it next to the port's own manifest (docs/firmware.md):
#   include("$(PORT_DIR)/boards/manifest.py")   # _boot.py, asyncio, ...
#   include("/path/to/edgebroker/firmware/manifest.py", asyncio=False)
# A manifest runs with its own directory as the working directory.
import os

if options.asyncio is not False:  # noqa: F821 (the manifest tool's globals)
    include("$(MPY_DIR)/extmod/asyncio")  # noqa: F821


def _edge_files():
    out = []
    for dirpath, dirnames, filenames in os.walk("../edge"):
        dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
        for fn in sorted(filenames):
            if not fn.endswith(".py"):
                continue
            if dirpath.endswith("runtime") and "cpython" in fn:
                continue  # CPython only by design
            out.append(os.path.relpath(os.path.join(dirpath, fn), "../edge"))
    return out


package("edge", files=_edge_files(), base_path="..")  # noqa: F821
