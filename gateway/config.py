# The Pi's config file: TOML -> edge.config.load, with file names and lines in
# every error. CPython only (tomllib).

import re
import tomllib

from edge import config as schema
from edge.errors import ConfigError

_HEADER = re.compile(r"\s*\[\s*([A-Za-z0-9_.\-\"' ]+?)\s*\]\s*(#.*)?$")
_KEY = re.compile(r"""\s*("[^"]*"|'[^']*'|[A-Za-z0-9_.\-]+)\s*=""")
_AT_LINE = re.compile(r"\s*\(at line (\d+), column \d+\)$")
_AT_END = re.compile(r"\s*\(at end of document\)$")


def _unquote(name):
    return ".".join(p.strip().strip("\"'") for p in name.split("."))


def key_lines(text):
    """{"section": line, "section.key": line} for a flat TOML file.

    A line scan, good enough for our schema (tables of scalars): it tracks
    `[section]` headers and `key =` lines; the first occurrence wins (TOML
    rejects duplicates anyway). Lines inside multi-line strings or arrays may
    be misread, which only costs a line number in an error.
    """
    lines = {}
    section = ""
    for n, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("[["):
            continue  # arrays of tables: not in our schema
        m = _HEADER.match(line)
        if m:
            section = _unquote(m.group(1))
            lines.setdefault(section, n)
            continue
        m = _KEY.match(line)
        if m:
            key = _unquote(m.group(1))
            lines.setdefault(section + "." + key if section else key, n)
    return lines


def _message(e):
    """The message part of a ConfigError, without its "key (line N): " prefix."""
    text = str(e)
    prefix = ("%s (line %d): " % (e.key, e.line)) if e.line else ("%s: " % e.key)
    return text[len(prefix):] if text.startswith(prefix) else text


def loads(text, path="<config>", profile="gateway"):
    """Parse and validate TOML text; errors name `path` and the line."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        msg, line = str(e), 0
        m = _AT_LINE.search(msg)
        if m:
            line, msg = int(m.group(1)), msg[: m.start()]
        elif _AT_END.search(msg):
            line, msg = max(1, len(text.splitlines())), msg[: _AT_END.search(msg).start()]
        raise ConfigError(path, "invalid TOML: " + msg, line) from None
    try:
        return schema.load(raw, profile, key_lines(text))
    except ConfigError as e:
        # "edge.toml: broker.port (line 3): must be an integer ..."
        raise ConfigError("%s: %s" % (path, e.key), _message(e), e.line) from None


def load_file(path, profile="gateway"):
    """Read, parse and validate a TOML config file."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ConfigError(str(path), "cannot read: %s" % (e.strerror or e)) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ConfigError(str(path), "not UTF-8 text", line) from None
    return loads(text, str(path), profile)
