"""edgebroker benchmark: edgebroker vs mosquitto vs amqtt on loopback.

    python -m tools.bench [--runs N] [--scenarios S ...] [--brokers B ...] [--quick]
                          [--edge-loop asyncio|uvloop] [--out DIR] [--no-chart] [--keep] [--list]

Starts each broker fresh on a free 127.0.0.1 port for every scenario, runs the
scenarios in alternating broker order for N runs, prints medians and
within-run ratios, and writes DIR/results.json and DIR/results.png.
"""
import argparse
import sys

from tools.bench import report, runner, scenarios
from tools.bench.brokers import LAUNCHERS

DEFAULT_BROKERS = ["edgebroker", "mosquitto", "amqtt", "edgebroker-mpy", "direct"]


def parse(argv):
    ap = argparse.ArgumentParser(prog="python -m tools.bench", description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=None, help="runs per scenario (default 3; 1 with --quick)")
    ap.add_argument("--scenarios", nargs="+", metavar="S", help="scenario names (default: all)")
    ap.add_argument("--brokers", nargs="+", metavar="B",
                    help="brokers (default: %s)" % " ".join(DEFAULT_BROKERS))
    ap.add_argument("--quick", action="store_true", help="short scenarios (about 1 s each)")
    ap.add_argument("--edge-loop", choices=("asyncio", "uvloop"), default="asyncio",
                    help="event loop of edgebroker on CPython (default asyncio, the stdlib one; "
                         "uvloop is optional, installed with the bench extra)")
    ap.add_argument("--out", default="build/bench", help="output directory (default build/bench)")
    ap.add_argument("--no-chart", action="store_true", help="do not draw the PNG")
    ap.add_argument("--keep", action="store_true", help="keep broker work directories and logs")
    ap.add_argument("--list", action="store_true", help="list scenarios and brokers, then exit")
    args = ap.parse_args(argv)
    args.scenarios = runner.names(args.scenarios, scenarios.BY_NAME, "scenario") or list(scenarios.BY_NAME)
    args.brokers = runner.names(args.brokers, LAUNCHERS, "broker") or list(DEFAULT_BROKERS)
    if args.runs is None:
        args.runs = 1 if args.quick else 3
    if not 1 <= args.runs <= 50:
        ap.error("--runs must be 1..50")
    return args


def main(argv=None):
    args = parse(sys.argv[1:] if argv is None else argv)
    if args.list:
        for sc in scenarios.SCENARIOS:
            print("%-20s %s" % (sc.name, sc.title))
        for name, cls in LAUNCHERS.items():
            print("%-20s %s" % (name, cls.label))
        return 0
    doc = runner.run(args, log=lambda s: print(s, flush=True))
    path, png = runner.write(doc, args.out, chart=not args.no_chart)
    print()
    print(report.render(doc))
    print("\nJSON: %s%s" % (path, ("\nPNG:  %s" % png) if png else ""))
    errors = [r for r in doc["runs"] if r.get("error")]
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
