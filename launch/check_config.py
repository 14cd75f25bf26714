"""Helpers of the launch scripts, one line out, exit code 2 on a bad config.

    python3 launch/check_config.py "num-clients=4 lr=0.05"   # the run config flwr run will pass
    flwr ls CONNECTION --format json | python3 launch/check_config.py --status

The first form resolves a Flower ``--run-config`` string with fedlr's own checks (the ones the
ServerApp makes), so a config that cannot run is refused before any node starts. The second
prints the status of the newest run the SuperLink lists (``finished:completed`` when it went
well).
"""

from __future__ import annotations

import json
import sys


def main(argv: list[str]) -> int:
    """Check a run config, or print the newest run's status; see the module docstring."""
    if argv == ["--status"]:
        runs = json.loads(sys.stdin.read() or "{}").get("runs", [])
        if not runs:
            print("unknown (no run listed)")
            return 0
        newest = max(runs, key=lambda r: (r.get("pending-at") or "", int(r.get("run-id", 0))))
        print(newest.get("status", "unknown"))
        return 0
    if len(argv) != 1:
        print("usage: check_config.py RUN_CONFIG | --status", file=sys.stderr)
        return 2
    from flwr.common.config import parse_config_args

    from fedlr.config import DEFAULTS, ConfigError, from_run_config

    try:
        overrides = parse_config_args([argv[0]]) if argv[0].strip() else {}
        from_run_config({**DEFAULTS, **overrides})
    except ConfigError as error:
        print(f"run config: {error}", file=sys.stderr)
        return 2
    except ValueError as error:  # Flower's parser: not key=value pairs
        print(f"run config: expected key=value pairs, got {argv[0]!r} ({error})", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
