# The QEMU board for the firmware tests: build the image (firmware/qemu/
# build.sh, as `make firmware` does), a ROMFS of the tests compiled for it,
# and a running qemu-system-arm whose UART is a pty driven with mpremote's
# raw REPL (docs/firmware.md).
import os
import re
import shutil
import signal
import subprocess
import sys
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(REPO_ROOT, "build", "firmware", "qemu")
ELF = os.path.join(OUT, "firmware.elf")
MPY_CROSS = os.path.join(OUT, "mpy-cross", "mpy-cross")  # the image's own: same bytecode
ROMFS = os.path.join(OUT, "tests.romfs")
# The test ROMFS is loaded into the mps2-an385's second RAM bank, which the
# firmware does not use (its code, data and heap sit in the 4 MB at 0), and
# mounted read-only at /rom: its bytecode runs in place, as frozen code does,
# so the tests take heap for their objects only.
ROMFS_ADDR = 0x20000000
TOOLS = ("arm-none-eabi-gcc", "qemu-system-arm")
NEWLIB = "/usr/lib/arm-none-eabi/include/stdlib.h"


def missing_toolchain():
    """What is missing to build and run the image ("" when nothing)."""
    gone = [t for t in TOOLS if shutil.which(t) is None]
    if not os.path.exists(NEWLIB) and shutil.which("arm-none-eabi-gcc"):
        gone.append("libnewlib-arm-none-eabi")
    return " ".join(gone)


def build():
    """Build (or bring up to date) the image; returns its path."""
    proc = subprocess.run(
        ["bash", os.path.join(REPO_ROOT, "firmware", "qemu", "build.sh")],
        cwd=REPO_ROOT, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600,
    )
    if proc.returncode != 0:
        raise RuntimeError("firmware build failed:\n%s%s" % (proc.stdout[-3000:], proc.stderr[-3000:]))
    return ELF


def _sources():
    out = ["tests/__init__.py", "tests/mpy_runner.py", "tests/firmware/__init__.py"]
    for sub in ("tests/core", "tests/firmware"):
        for fn in sorted(os.listdir(os.path.join(REPO_ROOT, sub))):
            if fn.endswith(".py") and (sub == "tests/core" or fn.startswith("board_")):
                out.append(sub + "/" + fn)
    return out


def build_romfs():
    """tests/core and the board-side tests (tests/firmware/board_*.py), as
    .mpy for the image, in a ROMFS image; rebuilt when a source changed."""
    srcs = _sources()
    newest = max(os.path.getmtime(os.path.join(REPO_ROOT, s)) for s in srcs + ["tests/firmware/qemu.py"])
    if os.path.exists(ROMFS) and os.path.getmtime(ROMFS) >= max(newest, os.path.getmtime(MPY_CROSS)):
        return ROMFS
    tree = os.path.join(OUT, "tests-mpy")
    shutil.rmtree(tree, ignore_errors=True)
    for rel in srcs:
        dst = os.path.join(tree, rel[:-3] + ".mpy")
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        subprocess.run([MPY_CROSS, "-o", dst, "-s", rel, rel], cwd=REPO_ROOT, check=True, timeout=60)
    subprocess.run([sys.executable, "-m", "mpremote", "romfs", "--output", ROMFS + ".new", "build", tree],
                   check=True, stdout=subprocess.DEVNULL, timeout=120)
    os.replace(ROMFS + ".new", ROMFS)
    return ROMFS


MOUNT_TESTS = """
import os, sys, vfs, uctypes
vfs.mount(vfs.VfsRom(uctypes.bytearray_at(%d, %d)), '/rom')
sys.path.insert(0, '/rom')
""" % (ROMFS_ADDR, 0)  # size filled in by Board


class Board:
    """qemu-system-arm running the image, its UART on a pty; run() executes
    code through the raw REPL and returns what it printed."""

    def __init__(self, elf=ELF, romfs=None):
        from mpremote.transport_serial import SerialTransport

        args = ["qemu-system-arm", "-machine", "mps2-an385", "-nographic", "-monitor", "null",
                "-semihosting", "-serial", "pty", "-kernel", elf]
        self.romfs_size = 0
        if romfs:
            args += ["-device", "loader,file=%s,addr=0x%x,force-raw=on" % (romfs, ROMFS_ADDR)]
            self.romfs_size = os.path.getsize(romfs)
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        line = b""
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            m = re.search(rb"(/dev/pts/\d+)", line)
            if m:
                self.port = m.group(1).decode()
                break
            if not line and self.proc.poll() is not None:
                break
        else:
            m = None
        if not m:
            self.stop()
            raise RuntimeError("qemu gave no pty: %r" % line)
        self.t = SerialTransport(self.port, baudrate=115200)
        self.t.enter_raw_repl(soft_reset=True)

    def run(self, code, timeout=60):
        """Run code (soft reset first when fresh: a heap as after boot)."""
        from mpremote.transport import TransportExecError

        try:
            out = self.t.exec_raw(code, timeout=timeout)
        except TransportExecError as e:
            raise AssertionError("on the board:\n%s" % (e.error_output,)) from None
        data, err = out
        if err:
            raise AssertionError("on the board:\n%s%s" % (data.decode(errors="replace"), err.decode(errors="replace")))
        return data.decode(errors="replace")

    def fresh(self):
        """A soft reset: a new heap, _boot.py run again, the flash kept."""
        self.t.exit_raw_repl()
        self.t.enter_raw_repl(soft_reset=True)

    def release(self):
        """Close the serial port, for another program (edgebroker deploy)."""
        self.t.close()
        self.t = None

    def attach(self):
        from mpremote.transport_serial import SerialTransport

        self.t = SerialTransport(self.port, baudrate=115200)
        self.t.enter_raw_repl(soft_reset=False)

    def put(self, path, data):
        """Write a file on the board's flash."""
        self.t.fs_writefile(path, data)

    def power_on(self, timeout=30):
        """A soft reset towards the friendly REPL, which runs boot.py and
        main.py as a power-on does (firmware/qemu/main.c); what they printed
        up to the prompt. Back in the raw REPL afterwards."""
        self.t.exit_raw_repl()
        self.t.read_until(1, b">>> ", timeout=timeout)
        self.t.serial.write(b"\x04")
        self.t.read_until(1, b"soft reboot", timeout=timeout)
        out = self.t.read_until(1, b"\r\n>>> ", timeout=timeout)
        self.t.enter_raw_repl(soft_reset=False)
        return out.decode(errors="replace")

    def mount_tests(self):
        return self.run(MOUNT_TESTS.replace(", 0)", ", %d)" % self.romfs_size))

    def stop(self):
        try:
            if getattr(self, "t", None) is not None:
                self.t.close()
        finally:
            if self.proc.poll() is None:
                os.kill(self.proc.pid, signal.SIGTERM)
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    os.kill(self.proc.pid, signal.SIGKILL)
                    self.proc.wait(10)
