"""`python -m tests.soak --minutes 60`: the long soak, with figures printed as JSON.

Needs what the tests need (PulseAudio, the project installed); writes its tiny
checkpoints and config to a scratch folder. Exit status 1 if a criterion failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path

from tests.engine.tiny import write_all
from tests.sink import headless_pulse
from tests.soak.harness import Criteria, SoakPlan, run_soak


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.soak", description=__doc__)
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=50.0, help="chat messages per second")
    parser.add_argument("--fault-every", type=float, default=10.0, help="seconds; 0 = none")
    parser.add_argument("--lag-p99-ms", type=float, default=Criteria().lag_p99_ms)
    args = parser.parse_args(argv)
    plan = SoakPlan(
        seconds=args.minutes * 60,
        rate=args.rate,
        fault_every_s=args.fault_every or None,
        warmup_s=min(60.0, args.minutes * 60 / 6),
    )
    with tempfile.TemporaryDirectory(prefix="ishowtts-soak-") as scratch:
        work = Path(scratch)
        with headless_pulse(work):
            report = asyncio.run(run_soak(plan, write_all(work / "ckpt"), work / "run"))
    failures = report.failures(Criteria(lag_p99_ms=args.lag_p99_ms))
    print(json.dumps({"figures": report.figures(), "failures": failures}, indent=2))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
