# `edgebroker passwd FILE USER` (gateway/passwd.py): the password never comes
# from argv, the file is written atomically with mode 0600, and what it
# writes verifies with edge/auth (the broker's own check). Real processes:
# `python -m gateway passwd`, with a pty for the prompt.
import os
import pty
import stat
import subprocess
import sys
import time

import pytest

from edge.auth import passwords

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.timeout(60)


def run(*args, stdin=""):
    return subprocess.run([sys.executable, "-m", "gateway", "passwd"] + list(args), input=stdin,
                          capture_output=True, text=True, cwd=ROOT, timeout=30)


def entries(path):
    return passwords.parse(open(path).read())


def test_add_change_delete_and_mode_0600(tmp_path):
    f = tmp_path / "pw"
    os.umask(0o022)
    r = run("--stdin", "--iterations", "1000", str(f), "alice", stdin="first secret\n")
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE(os.stat(f).st_mode) == 0o600
    assert "first secret" not in f.read_text()
    assert passwords.verify(entries(f)["alice"], b"first secret")
    assert run("--stdin", str(f), "bob", stdin="b\n").returncode == 0
    # a comment the operator wrote stays; alice's line is replaced
    f.write_text("# site users\n" + f.read_text())
    os.chmod(f, 0o644)
    assert run("--stdin", str(f), "alice", stdin="second\n").returncode == 0
    users = entries(f)
    assert sorted(users) == ["alice", "bob"] and users["alice"][0] == 10000  # the default
    assert passwords.verify(users["alice"], b"second") and not passwords.verify(users["alice"], b"first secret")
    assert f.read_text().startswith("# site users\n")
    assert stat.S_IMODE(os.stat(f).st_mode) == 0o600  # rewritten 0600 whatever it was
    assert run("-D", str(f), "alice").returncode == 0
    assert sorted(entries(f)) == ["bob"]
    r = run("-D", str(f), "alice")
    assert r.returncode == 1 and "no user alice" in r.stderr
    assert [p for p in os.listdir(tmp_path) if p != "pw"] == []  # no temporary left


def test_password_is_never_taken_from_argv(tmp_path):
    f = tmp_path / "pw"
    r = run(str(f), "alice", "hunter2")  # a password where a shell user might put it
    assert r.returncode == 2 and "unrecognized arguments" in r.stderr
    assert not f.exists()
    for flag in ("-p", "--password", "-P"):
        r = run(flag, "hunter2", str(f), "alice")
        assert r.returncode == 2, flag
    assert not f.exists()


def test_bad_input_is_refused_with_a_reason(tmp_path):
    f = tmp_path / "pw"
    for user, words in (("a:b", "':'"), ("#x", "'#'")):
        r = run("--stdin", str(f), user, stdin="pw\n")
        assert r.returncode == 1 and words in r.stderr, r.stderr
    r = run("--stdin", str(f), "alice", stdin="\n")
    assert r.returncode == 1 and "empty password" in r.stderr
    f.write_text("garbage line\n")
    r = run("--stdin", str(f), "alice", stdin="pw\n")
    assert r.returncode == 1 and "line 1" in r.stderr
    assert f.read_text() == "garbage line\n"  # a file it cannot read back is left alone


def _pty_run(args, answers, timeout=20):
    # the prompt reads /dev/tty: a pty as the child's controlling terminal
    pid, fd = pty.fork()
    if pid == 0:
        os.chdir(ROOT)
        os.execv(sys.executable, [sys.executable, "-m", "gateway", "passwd"] + args)
    out = b""
    deadline = time.monotonic() + timeout
    pending = list(answers)
    while time.monotonic() < deadline:
        try:
            chunk = os.read(fd, 1024)
        except OSError:
            break  # the child closed the pty
        if not chunk:
            break
        out += chunk
        if pending and out.count(b"assword: ") > len(answers) - len(pending):
            os.write(fd, pending.pop(0).encode() + b"\n")
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), out.decode(errors="replace")


def test_prompt_asks_twice_and_does_not_echo(tmp_path):
    f = tmp_path / "pw"
    rc, out = _pty_run(["--iterations", "1000", str(f), "carol"], ["tty secret", "tty secret"])
    assert rc == 0, out
    assert "tty secret" not in out  # no echo
    assert passwords.verify(entries(f)["carol"], b"tty secret")
    rc, out = _pty_run([str(f), "carol"], ["one", "two"])
    assert rc == 1 and "do not match" in out
    assert passwords.verify(entries(f)["carol"], b"tty secret")  # unchanged
