"""Mutation testing of Tower's core modules with mutmut 3: ``make mutate`` (not in CI: minutes per module).

Each module is mutated on its own, against only the tests that cover it, in ``.mutate/<module>/``
(mutmut copies the tree into ``mutants/`` there and reads its settings from a ``setup.cfg`` it finds
beside it, written here). Prints one row per module for ``tests/MUTATION.md`` and writes every
survivor's diff to ``.mutate/<module>/survivors.diff``; a survivor is either killed by a test that
asserts behaviour or listed in MUTATION.md as equivalent, with why.

    .venv/bin/python tests/mutate.py [module ...]       # default: every module below
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from datetime import date
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / ".mutate"
MUTMUT = Path(sys.executable).with_name("mutmut")

# module name -> (the file mutated, the tests that cover it: fast ones only, each mutant runs them).
MODULES = {
    "graph": ("tower/graph.py", ["tests/graph", "tests/runs/test_scheduler.py", "tests/runs/test_scheduler_contract.py",
                                 "tests/runs/test_plan.py"]),
    # not tests/runs/test_ledger.py: one of its tests fails under mutmut's trampolines even unmutated
    "scheduler": ("tower/runs/scheduler.py", ["tests/runs/test_scheduler.py", "tests/runs/test_scheduler_contract.py"]),
    "validate": ("tower/catalog/validate.py", ["tests/catalog", "tests/cli/test_validate.py"]),
}
# What the tests import besides tower/ (copied into mutants/ beside it).
ALSO_COPY = ["examples", "benchmarks", "orchestrators", "activities", "triggers", "function_app.py", "host.json"]


def setup_cfg(path: str, tests: list[str]) -> str:
    lines = ["[mutmut]", "source_paths = tower", f"only_mutate = {path}", "pytest_add_cli_args_test_selection ="]
    lines += [f"    {test}" for test in tests]
    lines += ["also_copy ="] + [f"    {extra}" for extra in ALSO_COPY]
    return "\n".join(lines) + "\n"


def prepare(name: str) -> Path:
    """A fresh work directory whose entries point at the repository, plus mutmut's settings."""
    path, tests = MODULES[name]
    work = WORK / name
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    for entry in ["tower", "tests", "pyproject.toml", *ALSO_COPY]:
        (work / entry).symlink_to(ROOT / entry)
    (work / "setup.cfg").write_text(setup_cfg(path, tests))
    return work


def results(work: Path) -> dict[str, str]:
    """mutant name -> status (killed, survived, timeout, ...), as mutmut recorded them."""
    out = subprocess.run([str(MUTMUT), "results", "--all", "true"], cwd=work, capture_output=True, text=True,
                         check=True).stdout
    return dict(re.findall(r"^\s*(\S+__mutmut_\d+): (.+?)\s*$", out, re.MULTILINE))


def run(name: str, jobs: int) -> str:
    work = prepare(name)
    print(f"== {name}: mutating {MODULES[name][0]} (log: {work / 'run.log'})", flush=True)
    with open(work / "run.log", "w") as log:
        code = subprocess.run([str(MUTMUT), "run", "--max-children", str(jobs)], cwd=work, stdout=log,
                              stderr=subprocess.STDOUT).returncode
    if code != 0:
        sys.exit(f"mutmut failed for {name} (exit {code}): see {work / 'run.log'}")
    statuses = results(work)
    survivors = sorted(n for n, s in statuses.items() if s in ("survived", "no tests"))
    with open(work / "survivors.diff", "w") as diff:
        for mutant in survivors:
            shown = subprocess.run([str(MUTMUT), "show", mutant], cwd=work, capture_output=True, text=True)
            diff.write(f"# {mutant}\n{shown.stdout}\n")
    counts = {status: sum(s == status for s in statuses.values()) for status in sorted(set(statuses.values()))}
    killed = counts.get("killed", 0) + counts.get("timeout", 0)
    score = 100.0 * killed / len(statuses) if statuses else 0.0
    print(f"   {counts}; survivors' diffs: {work / 'survivors.diff'}")
    return (f"| `{MODULES[name][0]}` | {len(statuses)} | {killed} | {len(survivors)} | {score:.1f} % "
            f"| {date.today().isoformat()} | mutmut {version('mutmut')} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", help=f"any of {', '.join(MODULES)} (default: all)")
    parser.add_argument("--jobs", type=int, default=int(os.environ.get("MUTATE_JOBS", "2")))
    args = parser.parse_args()
    unknown = [name for name in args.modules if name not in MODULES]
    if unknown:
        parser.error(f"unknown module(s) {', '.join(unknown)}: choose from {', '.join(MODULES)}")
    rows = [run(name, args.jobs) for name in args.modules or MODULES]
    print("\n| module | mutants | killed (incl. timeouts) | survived (incl. no tests) | score | date | tool |")
    print("|---|---:|---:|---:|---:|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
