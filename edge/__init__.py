# edgebroker portable core: runs unchanged on CPython and MicroPython.
VERSION = "0.1.0"
