# firmware/boot.py and firmware/main.py where there is a network: on the
# MicroPython unix port (tools/board.py: edge/ in a ROMFS, the heap limited
# like the QEMU board's 96 KiB), in a directory that stands in for the
# board's flash, with a profile's config.json. main.py starts a broker that
# real MQTT clients (paho) talk to.
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from tests.firmware.qemu import REPO_ROOT
from tests.integration.clients import round_trip
from tests.integration.conftest import free_port

pytestmark = pytest.mark.micropython

_RUN = """
import os
os.chdir(%r)
exec(open('boot.py').read())
exec(open('main.py').read())
"""


@pytest.mark.timeout(90)
def test_main_starts_the_broker_from_config_json(micropython_exe, tmp_path):
    for name in ("boot.py", "main.py"):
        shutil.copy(os.path.join(REPO_ROOT, "firmware", name), str(tmp_path / name))
    with open(os.path.join(REPO_ROOT, "firmware", "profiles", "esp32.json")) as f:
        cfg = json.load(f)
    port = free_port()
    cfg["broker"].update(bind="127.0.0.1", port=port)
    cfg["store"]["dir"] = str(tmp_path / "data")
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    log = open(str(tmp_path / "log"), "w+")
    proc = subprocess.Popen([sys.executable, "-m", "tools.board", "--heap", "96k", "--exec", _RUN % str(tmp_path)],
                            cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        text = ""
        while time.monotonic() < deadline and "listening on" not in text:
            assert proc.poll() is None, "main.py ended:\n" + text
            time.sleep(0.1)
            log.seek(0)
            text = log.read()
        assert "edgebroker listening on 127.0.0.1:%d (MQTT), data in %s" % (port, tmp_path / "data") in text, text
        assert "store: " in text  # the profile's store, on
        round_trip("127.0.0.1", port, qos=1)
        # a start that has not run 30 s yet counts towards safe mode
        assert (tmp_path / "boot.count").read_text() == "1"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()
