"""Wall time of a trivial `tower run` (one simulated service of 0 s), and where its start-up goes.

What a person waits for between Enter and the prompt: interpreter start, imports, catalog and
plan, the local engine's start, the run, its end being noticed, the summary, the engine's stop.
Each command runs N times as a fresh process (`.venv/bin/tower`, as the README says); we report
the median and the range. The import breakdown is Python's own `-X importtime`, top-level modules
of one `tower run` ranked by cumulative time.

Run: .venv/bin/python benchmarks/bench_cli.py [--repeat N]   (prints markdown)
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOWER = Path(sys.executable).with_name("tower")
NORMAL_EXIT = "import sys; from tower.cli.main import main; sys.argv[0] = 'tower'; sys.exit(main(sys.argv[1:]))"
CATALOG = """\
platforms:
  lake: {type: sim}
services:
  only: {platform: lake, duration: 0}
pipelines:
  trivial: {}
"""


def timed(argv: list[str], env: dict) -> float:
    started = time.perf_counter()
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - started


def import_breakdown(argv: list[str], env: dict, top: int = 8) -> list[tuple[str, float]]:
    done = subprocess.run([sys.executable, "-X", "importtime", *argv], env=env, capture_output=True, text=True)
    rows = []
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative_us, name = line[len("import time:"):].split("|")
        if not name.startswith("  "):  # top level only (one space of padding): the times do not overlap
            rows.append((name.strip(), int(cumulative_us) / 1e6))
    return sorted(rows, key=lambda row: -row[1])[:top]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=9)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        catalog = Path(tmp) / "catalog.yaml"
        catalog.write_text(CATALOG)
        env = {**os.environ, "TOWER_HOME": str(Path(tmp) / "home"), "TOWER_CATALOG": str(catalog)}
        env.pop("TOWER_HISTORY_TABLE_URL", None)
        commands = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "tower --version": [str(TOWER), "--version"],
            "tower validate": [str(TOWER), "validate"],
            "tower run trivial": [str(TOWER), "run", "trivial"],
            # the same run ended by a normal interpreter exit (module teardown): what `entry` skips
            "tower run trivial, full interpreter exit": [sys.executable, "-c", NORMAL_EXIT, "run", "trivial"],
        }
        timed(commands["tower run trivial"], env)  # warm the page cache and the .pyc files
        times: dict[str, list[float]] = {label: [] for label in commands}
        for _ in range(args.repeat):  # interleaved, so a busy moment of the machine hits every command
            for label, argv in commands.items():
                times[label].append(timed(argv, env))
        print("| command | median s | min s | max s | runs |\n|---|---:|---:|---:|---:|")
        for label, measured in times.items():
            print(f"| `{label}` | {statistics.median(measured):.3f} | {min(measured):.3f} | {max(measured):.3f}"
                  f" | {len(measured)} |")
        print("\nimports of `tower run trivial` (top level, cumulative):\n\n| module | s |\n|---|---:|")
        for name, seconds in import_breakdown(["-m", "tower", "run", "trivial"], {**env, "PYTHONPATH": str(ROOT)}):
            print(f"| `{name}` | {seconds:.3f} |")


if __name__ == "__main__":
    main()
