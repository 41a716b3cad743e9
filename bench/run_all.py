"""Every benchmark in turn (``make bench``): figures printed, JSON, logs and plots into ``--out``.

    .venv/bin/python -m bench.run_all                     # about 8 minutes
    .venv/bin/python -m bench.run_all --quick             # about 2 minutes, for a smoke test

Each script also runs on its own; docs/benchmarks.md gives the command behind each figure.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from bench._common import ROOT, machine_state


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks")
    parser.add_argument("--quick", action="store_true", help="short runs: a smoke test, not figures")
    parser.add_argument("--base", type=Path, help="checkout to compare against (bench.targets --base)")
    parser.add_argument("--litserve-python", type=Path, help="a Python with litserve (bench.targets)")
    args = parser.parse_args()
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    # Relative to the repository when inside it, so that the printed commands work from any checkout.
    shown = out.relative_to(ROOT) if out.is_relative_to(ROOT) else out
    quick = {
        "ort_alone": ["--seconds", "0.2", "--repeats", "1"],
        "throughput": ["--seconds", "3", "--rounds", "1"],
        "batching": ["--seconds", "3", "--rounds", "1"],
        "cold_start": ["--starts", "2", "--requests", "1000"],
        "profile": ["--seconds", "5"],
        "stages": ["--seconds", "0.1", "--windows", "2"],
        "denoisers": ["--rounds", "1", "--seconds", "0.05"],
        "targets": ["--rounds", "1", "--seconds", "2"],
    }
    print(f"machine at the start: {machine_state()}", flush=True)
    names = ("targets", "ort_alone", "throughput", "batching", "cold_start", "profile", "stages", "denoisers")
    for name in names:
        argv = [sys.executable, "-m", f"bench.{name}"]
        if name == "targets":
            argv += ["--json", str(shown / "targets.json"), "--granian"]
            if args.base is not None:
                argv += ["--base", str(args.base)]
            if args.litserve_python is not None:
                argv += ["--litserve-python", str(args.litserve_python)]
        elif name == "profile":
            argv += ["--svg", str(shown / "flame.svg")]
        elif name == "stages":
            pass  # prints its table only
        else:
            argv += ["--json", str(shown / f"{name}.json")]
        if args.quick:
            argv += quick[name]
        print(f"\n=== {name} ===", flush=True)
        result = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=False)
        print(result.stdout, end="")
        (out / f"{name}.txt").write_text(result.stdout)
        if result.returncode != 0:
            print(result.stderr, file=sys.stderr)
            raise SystemExit(f"bench.{name} failed with {result.returncode}")
    subprocess.run([sys.executable, "-m", "bench.plots", str(out)], cwd=ROOT, check=True)


if __name__ == "__main__":
    main()
