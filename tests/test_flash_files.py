# edge/runtime/flash.py on real files (CPython, tmp_path), the store over it,
# the same scenario under the MicroPython unix port, and kill -9 after a sync
# on both runtimes.
import os
import signal
import subprocess
import sys

import pytest

from edge.runtime import flash
from edge.runtime.flash import Flash
from edge.store.log import Log
from tests import flash_check

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_file_ops(tmp_path):
    d = str(tmp_path / "store")
    f = Flash(d)  # creates the directory
    assert f.listdir() == []
    f.append("a", b"hello ")
    f.append("a", b"world")
    f.sync("a")
    assert f.size("a") == 11 and f.listdir() == ["a"]
    buf = bytearray(8)
    assert f.readinto("a", 6, memoryview(buf)) == 5 and buf[:5] == b"world"
    assert f.readinto("a", 11, memoryview(buf)) == 0
    f.append("a", b"!")  # appends after a read, reads see it
    assert f.readinto("a", 10, memoryview(buf)) == 2 and buf[:2] == b"d!"
    f.rename("a", "b")
    f.sync_dir()
    assert f.listdir() == ["b"]
    f.truncate("b", 5)
    assert open(os.path.join(d, "b"), "rb").read() == b"hello"
    f.remove("b")
    assert f.listdir() == []
    f.close()


def test_sync_fsyncs_file_and_directory(tmp_path, monkeypatch):
    calls = []
    real = os.fsync

    def spy(fd):
        calls.append(os.path.isdir("/proc/self/fd/%d" % fd) if os.path.exists("/proc/self/fd") else None)
        real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    log = Log(Flash(str(tmp_path)))
    log.open(0)
    for i in range(20):
        log.append(16, b"x%d" % i)
    assert calls == []
    log.flush()  # new segment: one directory fsync (its name), one file fsync
    assert calls == [True, False]
    log.append(16, b"y")
    log.flush()  # group commit: one fsync per batch
    assert calls == [True, False, False]
    log.close()


def test_micropython_truncate_path_on_cpython(tmp_path, monkeypatch):
    # the copy + rename truncate MicroPython uses, exercised on CPython too
    monkeypatch.setattr(flash, "truncate_file", None)
    f = Flash(str(tmp_path))
    f.append("seg", bytes(range(200)) * 5)
    f.sync("seg")
    f.truncate("seg", 777)
    assert open(str(tmp_path / "seg"), "rb").read() == (bytes(range(200)) * 5)[:777]
    assert f.listdir() == ["seg"]


def test_leftover_cut_copy_removed(tmp_path):
    (tmp_path / "log.3.cut~").write_bytes(b"half a copy")
    (tmp_path / "log.3").write_bytes(b"x")
    Flash(str(tmp_path))
    assert sorted(os.listdir(str(tmp_path))) == ["log.3"]


def test_store_scenario_on_cpython(tmp_path):
    assert flash_check.scenario(str(tmp_path)) == 40


def _mpy_run(exe, args, timeout=60):
    proc = subprocess.run([exe] + args, cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=timeout)
    return proc.returncode, proc.stdout


@pytest.mark.micropython
def test_store_scenario_under_micropython(micropython_exe, tmp_path):
    d = str(tmp_path / "mpy")
    rc, out = _mpy_run(micropython_exe, ["-X", "heapsize=256k", "tests/flash_check.py", "scenario", d])
    assert rc == 0 and out.strip() == "ok 40", out
    # the same bytes on both runtimes: CPython reads what MicroPython wrote
    c = str(tmp_path / "cpy")
    flash_check.scenario(c)
    assert open(os.path.join(d, "log.1001"), "rb").read() == open(os.path.join(c, "log.1001"), "rb").read()
    log = Log(Flash(d))
    log.open(0)
    assert len(list(log.replay())) == 40


def test_appends_after_a_read_are_read_back_on_cpython(tmp_path):
    assert flash_check.reread(str(tmp_path)) == 1600


@pytest.mark.micropython
def test_appends_after_a_read_are_read_back_on_littlefs(micropython_exe):
    # littlefs keeps a handle opened before an append at its old size:
    # Files reopens its reader after an append (edge/runtime/flash.py)
    rc, out = _mpy_run(micropython_exe, ["-X", "heapsize=1m", "tests/flash_check.py", "reread", "lfs"])
    assert rc == 0 and out.strip() == "ok 1600", out


def _kill_mid_write(cmd, path, n, at):
    # Kill -9 the writer once it reports seq `at` durable, while it goes on
    # writing: the files may end in a torn batch.
    proc = subprocess.Popen(cmd + ["tests/flash_check.py", "kill", path, str(n)], cwd=REPO_ROOT,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    synced = 0
    try:
        for line in proc.stdout:
            if line.startswith("synced "):
                synced = int(line.split()[1])
                if synced >= at:
                    break
            elif line.strip() == "done":
                break
            else:
                pytest.fail("unexpected output: %r" % line)
    finally:
        proc.send_signal(signal.SIGKILL)  # no close(), no cleanup
        proc.wait(timeout=10)
        proc.stdout.close()
    return synced


@pytest.mark.parametrize("runtime", ["cpython", "micropython"])
@pytest.mark.timeout(60)
def test_kill_9_loses_nothing_synced(runtime, tmp_path, request):
    # A process kill, not a power cut (the page cache survives): this checks
    # that nothing synced is still in a userspace buffer on either runtime,
    # and that whatever tail the kill left replays as a clean prefix.
    if runtime == "micropython":
        request.applymarker(pytest.mark.micropython)
        cmd = [request.getfixturevalue("micropython_exe")]
    else:
        cmd = [sys.executable]
    path = str(tmp_path)
    synced = _kill_mid_write(cmd, path, 3000, 500)
    assert synced >= 500
    log = Log(Flash(path))
    log.open(0)
    got = list(log.replay())
    assert len(got) >= synced
    assert got == flash_check.expected(len(got), set())
    # Seqs are never reused (they become upstream idempotency keys): records
    # past the last sync may be torn away, but a segment's META may already
    # carry a later next_seq, so the next seq is beyond every replayed one,
    # not necessarily the one right after.
    assert log.next_seq > got[-1][0]
    s = log.append(16, b"after the kill")
    log.close()
    log = Log(Flash(path))
    log.open(0)
    assert list(log.replay())[-1] == (s, 16, b"after the kill")
