# The QEMU board's image (firmware/qemu/build.sh): edgebroker's manifest and
# the board's own frozen modules: _boot.py (mounts the flash) and ramdisk.py
# (its block device).
include("../manifest.py")  # noqa: F821
module("_boot.py")  # noqa: F821
module("ramdisk.py")  # noqa: F821
