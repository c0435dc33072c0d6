# `python -m gateway run --config edge.toml`
import sys

from gateway.cli import main

sys.exit(main())
