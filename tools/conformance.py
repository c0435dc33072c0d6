"""Check docs/conformance.md: every `covered:` row names a test that exists.

Stdlib only. `python -m tools.conformance` prints the counts per version and
exits 1, listing the bad rows, when a named test file is missing or does not
define the named test function (`def test_x(`; a parametrized name `test_x[id]`
is looked up as `test_x`). The doc missing, a version's table missing or a row
without a known status is an error too.
"""
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(ROOT, "docs", "conformance.md")
STATUSES = ("covered", "n/a", "deviation", "open")
VERSIONS = ("MQTT 3.1.1", "MQTT 5.0")

_ROW = re.compile(r"^\|\s*(MQTT-\d+\.\d+(?:\.\d+)?-\d+)\s*\|(.*)\|\s*$")
_TEST = re.compile(r"(tests/[\w/.-]+\.py)::(\w+)(\[[^\]]*\])?")


def _cells(rest):
    # split on | not escaped as \|
    return [c.strip() for c in re.split(r"(?<!\\)\|", rest)]


def parse(text):
    """[(version, id, status cell, line number)] of the statement tables."""
    rows = []
    version = None
    for n, line in enumerate(text.splitlines(), 1):
        if line.startswith("## "):
            title = line[3:].strip()
            version = title if title in VERSIONS else None
            continue
        m = _ROW.match(line)
        if m and version:
            cells = _cells(m.group(2))
            rows.append((version, m.group(1), cells[-1], n))
    return rows


def _defines(path, name, cache):
    src = cache.get(path)
    if src is None:
        full = os.path.join(ROOT, path)
        if not os.path.isfile(full):
            return False
        with open(full, encoding="utf-8") as f:
            src = cache[path] = f.read()
    return re.search(r"^(?:async )?def %s\(" % re.escape(name), src, re.M) is not None


def check(text):
    """(counts {version: {status: n}}, [problems])"""
    rows = parse(text)
    counts = {v: dict.fromkeys(STATUSES, 0) for v in VERSIONS}
    problems = []
    seen = set()
    cache = {}
    for version, sid, status, n in rows:
        if (version, sid) in seen:
            problems.append("line %d: %s listed twice under %s" % (n, sid, version))
        seen.add((version, sid))
        kind = status.split(":", 1)[0].strip()
        if kind not in STATUSES or ":" not in status:
            problems.append("line %d: %s: status %r is none of %s" % (n, sid, status, ", ".join(STATUSES)))
            continue
        counts[version][kind] += 1
        if kind != "covered":
            continue
        tests = _TEST.findall(status.split(":", 1)[1])
        if not tests:
            problems.append("line %d: %s: covered, but names no tests/...py::test_name" % (n, sid))
        for path, name, _param in tests:
            if not os.path.isfile(os.path.join(ROOT, path)):
                problems.append("line %d: %s: no file %s" % (n, sid, path))
            elif not _defines(path, name, cache):
                problems.append("line %d: %s: %s defines no %s" % (n, sid, path, name))
    for v in VERSIONS:
        if not sum(counts[v].values()):
            problems.append("no statement rows under '## %s'" % v)
    return counts, problems


def main(argv=None):
    path = (argv or sys.argv[1:] or [DOC])[0]
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        print("conformance: cannot read %s: %s" % (path, e))
        return 1
    counts, problems = check(text)
    for v in VERSIONS:
        c = counts[v]
        print("%s: %d statements: %s" % (v, sum(c.values()), ", ".join("%s %d" % (s, c[s]) for s in STATUSES)))
    for p in problems:
        print("BAD " + p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
