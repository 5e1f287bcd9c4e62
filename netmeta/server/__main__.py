"""``python -m netmeta.server``: the API server alone.

Prints ``netmeta server listening on http://HOST:PORT`` once the socket is
bound (port 0 picks a free one), so a supervisor or a test fixture waits on
that line instead of sleeping.
"""

from __future__ import annotations

import argparse
import sys

from netmeta.config import load
from netmeta.server.app import run


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m netmeta.server")
    parser.add_argument("--config", help="INI file ([DEFAULT] section)")
    parser.add_argument("--bind", help="host:port to listen on (port 0: any free port)")
    parser.add_argument("--state-dir", dest="state_dir")
    parser.add_argument("--db", help="SQLAlchemy URL; default: SQLite in the state dir")
    parser.add_argument("--change-log-retention", dest="change_log_retention", type=int)
    args = parser.parse_args(argv)
    config = load(args.config, bind=args.bind, state_dir=args.state_dir, db=args.db,
                  change_log_retention=args.change_log_retention)

    def announce(bound: str) -> None:
        print(f"netmeta server listening on http://{bound}", flush=True)

    run(config, on_bound=announce)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
