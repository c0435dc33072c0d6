# One broker per data directory (edge/runtime/lock.py): a second broker
# started on the same --data exits at once, naming the directory and the
# holder's pid, on both runtimes and across them; a holder killed with -9
# leaves no lock that blocks the next start.
import json
import signal

import pytest

from tests.runtime._proc import Proc, command, mqtt_connect

_PAIRS = [("cpython", "cpython"), ("micropython", "micropython"),
          ("cpython", "micropython"), ("micropython", "cpython")]


def _runtimes(request, *runtimes):
    if "micropython" in runtimes:
        request.getfixturevalue("micropython_exe")  # skips where there is none
        request.applymarker(pytest.mark.micropython)


def _no_persistence(runtime, tmp_path):
    # the lock holds whether the store is on or not
    if runtime == "cpython":
        path = tmp_path / "off.toml"
        path.write_text("[store]\npersistence = false\n")
    else:
        path = tmp_path / "off.json"
        path.write_text(json.dumps({"store": {"persistence": False}}))
    return ["--config", str(path)]


@pytest.mark.parametrize("first,second", _PAIRS)
@pytest.mark.timeout(120)
def test_a_second_broker_on_the_directory_exits(first, second, request, tmp_path):
    _runtimes(request, first, second)
    d = str(tmp_path / "data")
    args = ["--bind", "127.0.0.1", "--port", "0", "--coap-port", "0", "--data", d]
    a = Proc(command(first, *(args + _no_persistence(first, tmp_path))), tmp_path / "a.log")
    try:
        port = a.wait_port()
        b = Proc(command(second, *args), tmp_path / "b.log")
        rc, out = b.wait_exit(30)
        assert rc == 2, out
        assert "data directory %s is in use by edgebroker pid %d" % (d, a.p.pid) in out, out
        assert "Traceback" not in out
        assert a.p.poll() is None and mqtt_connect(port)
    finally:
        a.stop()


@pytest.mark.parametrize("runtime", ["cpython", "micropython"])
@pytest.mark.timeout(120)
def test_a_killed_holder_leaves_no_lock(runtime, request, tmp_path):
    _runtimes(request, runtime)
    d = str(tmp_path / "data")
    args = command(runtime, "--bind", "127.0.0.1", "--port", "0", "--data", d)
    a = Proc(args, tmp_path / "a.log")
    try:
        a.wait_port()
    finally:
        a.stop(signal.SIGKILL)
    b = Proc(args, tmp_path / "b.log")
    try:
        assert mqtt_connect(b.wait_port())
        # (CPython's flock went with the process; its pid stays in the file)
        assert "%s/lock left by pid %d, which is not running: taken over" % (d, a.p.pid) in b.log()
    finally:
        assert b.stop() == 0 or runtime == "micropython", b.log()  # (SIGTERM ends the unix port)
