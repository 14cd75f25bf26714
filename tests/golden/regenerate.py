"""Rewrite the golden results that tests/test_golden_scenarios.py compares against.

    python tests/golden/regenerate.py noisy_hospitals coupling_grow   # these scenarios
    python tests/golden/regenerate.py --all                           # every simulations/*.toml

Each scenario's reduced run (``REDUCED`` in tests/test_golden_scenarios.py) goes through
`fedlr simulate` with the code of this checkout, and ``tests/golden/<scenario>.json`` becomes its
results.json without the wall-clock fields.

Goldens change only with a behaviour change that the commit message names (which scenarios, which
results, and why), or for a new scenario. A refactor never regenerates them: it keeps them.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.test_golden_scenarios import (  # noqa: E402  (the checkout root goes on sys.path first)
    GOLDEN,
    REDUCED,
    missing_data,
    run_reduced,
    scenarios,
)


def main(argv: list[str] | None = None) -> int:
    """Regenerate the goldens of the scenarios named in ``argv`` (or all with ``--all``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenario", nargs="*", help="scenario names (simulations/NAME.toml)")
    parser.add_argument("--all", action="store_true", help="every scenario in simulations/")
    args = parser.parse_args(argv)
    names = scenarios() if args.all else args.scenario
    if not names:
        parser.error("name the scenarios to regenerate, or pass --all")
    unknown = [n for n in names if n not in scenarios() or n not in REDUCED]
    if unknown:
        parser.error(f"no simulations/NAME.toml or no REDUCED entry for {', '.join(unknown)}")
    for name in names:
        reason = missing_data(name)
        if reason:
            print(f"{name}: skipped ({reason})", file=sys.stderr)
            continue
        with tempfile.TemporaryDirectory() as workdir:
            results = run_reduced(name, Path(workdir))
        (GOLDEN / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
        print(f"{name}: wrote {GOLDEN / f'{name}.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
