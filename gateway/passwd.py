# `edgebroker passwd FILE USER`: add, change (-D: delete) a user of the
# password file (edge/auth/passwords.py, docs/security.md). The password
# comes from a prompt (getpass, asked twice) or one line of standard input
# (--stdin), never from the command line: argv is visible to every user of
# the machine (ps, /proc/PID/cmdline) and lands in shell histories. The file
# is rewritten atomically (a temporary file, fsync, rename) with mode 0600;
# other lines and comments stay as they were.
import getpass
import os
import sys

from edge.auth import passwords

# PBKDF2 rounds per new entry. Each login costs this many (2 SHA-256 each):
# ~6 ms on CPython (OpenSSL) on the CI machine, ~45 ms under the MicroPython
# unix port; a board is slower still, so board files want --iterations 1000
# or so (docs/security.md "Passwords").
DEFAULT_ITERATIONS = 10000
SALT_BYTES = 16


def add_parser(sub, func):
    p = sub.add_parser("passwd", help="add, change or delete a user of a password file",
                       description="Add or change USER in FILE (created if missing), or delete it "
                                   "with -D. The password is read from a prompt, or from one line "
                                   "of standard input with --stdin; never from the command line.")
    p.add_argument("-D", "--delete", action="store_true", help="delete USER")
    p.add_argument("--stdin", action="store_true", help="read the password from one line of standard input")
    p.add_argument("--iterations", type=int, default=DEFAULT_ITERATIONS, metavar="N",
                   help="PBKDF2 iterations for the new entry (default %d; ~1000 for a board)"
                        % DEFAULT_ITERATIONS)
    p.add_argument("file", metavar="FILE")
    p.add_argument("user", metavar="USER")
    p.set_defaults(func=func)
    return p


def _read_password(from_stdin):
    if from_stdin:
        line = sys.stdin.readline()
        return line[:-1] if line.endswith("\n") else line
    first = getpass.getpass("Password: ")
    if getpass.getpass("Reenter password: ") != first:
        raise ValueError("passwords do not match")
    return first


def _lines(path):
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        return []
    passwords.parse(text)  # refuse to rewrite a file we cannot read back
    return text.splitlines()


def write_atomic(path, text):
    """path holds text afterwards, or what it held before: never half."""
    d = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(d, ".%s.%d.tmp" % (os.path.basename(path), os.getpid()))
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fchmod(f.fileno(), 0o600)  # whatever the umask
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    dfd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(dfd)  # the rename itself survives a power cut
    finally:
        os.close(dfd)


def run(args, prog):
    """The subcommand; returns the exit status."""
    try:
        passwords.check_user(args.user)
        if not 1 <= args.iterations <= passwords.MAX_ITERATIONS:
            raise ValueError("--iterations must be 1..%d" % passwords.MAX_ITERATIONS)
        lines = _lines(args.file)
        prefix = args.user + ":"
        kept = [ln for ln in lines if not ln.strip().startswith(prefix)]
        if args.delete:
            if len(kept) == len(lines):
                raise ValueError("no user %s in %s" % (args.user, args.file))
        else:
            pw = _read_password(args.stdin)
            if not pw:
                raise ValueError("empty password")
            kept.append(passwords.make(args.user, pw.encode("utf-8"), os.urandom(SALT_BYTES), args.iterations))
        write_atomic(args.file, "".join(ln + "\n" for ln in kept))
    except (ValueError, OSError) as e:
        print("%s passwd: %s" % (prog, e), file=sys.stderr)
        return 1
    except (KeyboardInterrupt, EOFError):
        print("%s passwd: cancelled, %s unchanged" % (prog, args.file), file=sys.stderr)
        return 1
    return 0
