"""``python -m netmeta.server``: the API server alone.

Prints ``netmeta server listening on http://HOST:PORT`` once the socket is
bound (port 0 picks a free one), so a supervisor or a test fixture waits on
that line instead of sleeping.
"""

from __future__ import annotations

import argparse
import sys

from netmeta import logs
from netmeta.cli.options import SERVER, add_settings, overrides
from netmeta.config import ConfigError, load
from netmeta.errors import NetmetaError
from netmeta.server.app import run


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m netmeta.server")
    add_settings(parser, [SERVER])
    args = parser.parse_args(argv)
    try:
        config = load(args.config, **overrides(args))
    except ConfigError as exc:
        print(f"netmeta server: {exc}", file=sys.stderr)
        sys.exit(2)
    logs.setup("server", config.state_dir, log_format=config.log_format, verbose=args.verbose,
               console=config.log_console, max_bytes=config.log_max_bytes, backup_count=config.log_backup_count)

    def announce(bound: str) -> None:
        print(f"netmeta server listening on http://{bound}", flush=True)

    try:
        run(config, on_bound=announce)
    except ConfigError as exc:
        print(f"netmeta server: {exc}", file=sys.stderr)
        sys.exit(2)
    except NetmetaError as exc:
        print(f"netmeta {exc}", file=sys.stderr)
        sys.exit(1)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
