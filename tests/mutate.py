"""Mutation testing of Tower's core modules with mutmut 3: ``make mutate`` (not in CI: minutes per module).

Each entry below is mutated on its own (one file, or a few that share their tests), against only the
tests that cover it, in ``.mutate/<entry>/`` (mutmut copies the tree into ``mutants/`` there and reads
its settings from a ``setup.cfg`` it finds beside it, written here). mutmut runs, for each mutant,
only those of the listed tests that reach the mutated function. Prints one row per mutated file for
``tests/MUTATION.md`` and writes every survivor's diff to ``.mutate/<entry>/survivors.diff``; a
survivor is either killed by a test that asserts behaviour or listed in MUTATION.md as equivalent,
with why.

    .venv/bin/python tests/mutate.py [entry ...]        # default: every entry below
    .venv/bin/python tests/mutate.py --every 3 ledger   # a deterministic sample: every 3rd mutant
    .venv/bin/python tests/mutate.py --again platforms  # what is not known killed, on the code and tests now
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

# entry -> (the file(s) mutated, a glob, the tests that cover them: fast ones only, each mutant runs them).
MODULES = {
    "graph": ("tower/graph.py", ["tests/graph", "tests/runs/test_scheduler.py", "tests/runs/test_scheduler_contract.py",
                                 "tests/runs/test_plan.py"]),
    # and the ledger's, the shared slots' and the deadlines' tests, whose rules it keeps
    "scheduler": ("tower/runs/scheduler.py", ["tests/runs/test_scheduler.py", "tests/runs/test_scheduler_contract.py",
                                              "tests/runs/test_ledger.py", "tests/runs/test_slots.py",
                                              "tests/test_deadlines.py"]),
    "validate": ("tower/catalog/validate.py", ["tests/catalog", "tests/cli/test_validate.py"]),
    # every adapter test calls adapter_for: mutants of __init__.py run against the settings tests only
    "platforms": ("tower/platforms/base.py tower/platforms/http.py tower/platforms/databricks.py "
                  "tower/platforms/snowflake.py tower/platforms/_auth.py", ["tests/platforms"]),
    # the platforms that run here (processes, the simulator): scored on their own, all mutants
    "local_platforms": ("tower/platforms/command.py tower/platforms/sim.py", ["tests/platforms"]),
    "platforms_init": ("tower/platforms/__init__.py", ["tests/platforms/test_settings.py",
                                                       "tests/platforms/test_sim.py"]),
    # ledger.py (the dispatch API), ledger_sqlite.py and ledger_table.py (the two stores; Azurite)
    "ledger": ("tower/runs/ledger*.py", ["tests/runs/test_ledger.py", "tests/runs/test_ledger_table.py",
                                        "tests/runs/test_slots.py"]),
    # the Azure shell, on the local engine: seconds per mutant, so sampled (SAMPLE)
    # and the suites that run the shell end to end with telemetry on, with pushes, with notifications
    "shell": ("orchestrators/*.py activities/*.py", ["tests/orchestrators", "tests/test_activities.py",
                                                    "tests/test_telemetry.py", "tests/test_push.py",
                                                    "tests/test_notify.py"]),
}
# Extra pytest arguments of every run: the suites marked slow (5000-service runs) cost minutes each.
PYTEST_ARGS = ["-m", "not slow"]
# What the tests import besides tower/ (copied into mutants/ beside it).
ALSO_COPY = ["examples", "benchmarks", "orchestrators", "activities", "triggers", "function_app.py", "host.json"]


def environment() -> dict[str, str]:
    """The tests run in mutants/, a copy without node_modules: they find Azurite through AZURITE."""
    azurite = ROOT / "node_modules/.bin/azurite-table"
    return {**os.environ, **({"AZURITE": str(azurite)} if azurite.exists() and "AZURITE" not in os.environ else {})}


def setup_cfg(path: str, tests: list[str]) -> str:
    globs = path.split()  # in tower/, or in a shell package (orchestrators, activities) mutated in place
    sources = ["tower"] + sorted({glob.split("/")[0] for glob in globs} - {"tower"})
    # forkserver: the tests run in a child of mutmut, never in mutmut itself, whose default (fork) takes
    # any child it reaps for a mutant's and stops at the first process a test left behind (command
    # platform runs, stand-in servers).
    lines = ["[mutmut]", "process_isolation = forkserver", "source_paths ="] + [f"    {source}" for source in sources]
    lines += ["only_mutate ="] + [f"    {glob}" for glob in globs] + ["pytest_add_cli_args ="] + [f"    {arg}" for arg in PYTEST_ARGS]
    lines += ["pytest_add_cli_args_test_selection ="]
    lines += [f"    {test}" for test in tests]
    lines += ["also_copy ="] + [f"    {extra}" for extra in ALSO_COPY if extra not in sources]
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


# The mutants of a file whose tests cost seconds each (stand-in servers, the local engine) are
# sampled: every N-th, in mutmut's order (function, number), so the same code gives the same sample.
SAMPLE = {"tower/platforms/http.py": 3, "tower/platforms/databricks.py": 3, "tower/platforms/snowflake.py": 6,
          "tower/runs/ledger_table.py": 3, "orchestrators/pipeline.py": 10, "activities/remote.py": 10,
          "activities/runs.py": 10, "activities/services.py": 10}


def in_order(names) -> list[str]:
    return sorted(names, key=lambda n: (n.rsplit("__mutmut_", 1)[0], int(n.rsplit("_", 1)[1])))


def sample(work: Path, every: int | None) -> list[str]:
    """The mutants to score: every ``every``-th of each file (``SAMPLE``'s own N when None, else all).
    Given a name that matches no mutant, mutmut generates them all, records which tests reach each,
    and stops (an assertion in its log) before running any."""
    with open(work / "run.log", "w") as log:
        subprocess.run([str(MUTMUT), "run", "--max-children", "1", "none__mutmut_0"], cwd=work, stdout=log,
                       stderr=subprocess.STDOUT, env=environment())
    names = results(work)
    chosen = []
    for path in sorted({file_of(mutant) for mutant in names}):
        step = every or SAMPLE.get(path, 1)
        chosen += in_order(n for n in names if file_of(n) == path)[::step]
    return chosen


def again_sample(work: Path, name: str, every: int | None) -> tuple[list[str], list[str]]:
    """After new tests or code changes: the sample drawn again from the mutants of the code as it is
    now (mutmut keeps the result of each mutant whose function did not change, and collects the
    tests that are new), and of it what is not known killed: the last survivors, and every mutant
    of a function that changed. The settings are written again, so a test list that grew counts.
    mutmut runs, for each mutant, the tests that reached its function when it last measured reach,
    and keeps that measure: it is dropped, so a test extended to reach more is run for it too."""
    (work / "setup.cfg").write_text(setup_cfg(*MODULES[name]))
    (work / "mutants" / "mutmut-stats.json").unlink(missing_ok=True)
    before = set((work / "sample").read_text().split())
    chosen = sample(work, every)
    (work / "sample").write_text("\n".join(chosen))
    statuses = results(work)
    todo = [n for n in chosen if statuses[n] in ("survived", "no tests", "not checked")]
    print(f"   {len(set(chosen) - before)} mutant(s) new to the sample (their function changed)", flush=True)
    return chosen, todo


def file_of(mutant: str) -> str:
    """tower.runs.ledger.x_open_run__mutmut_3 -> tower/runs/ledger.py (a package's: its __init__.py)"""
    module = ".".join(part for part in mutant.split(".") if "__mutmut_" not in part).replace(".", "/")
    return f"{module}/__init__.py" if (ROOT / module).is_dir() else f"{module}.py"


def run(name: str, jobs: int, every: int | None, again: bool = False, report: bool = False) -> list[str]:
    work = WORK / name
    if report:  # the last run's results as they stand (mutants it did not get to count as survived)
        chosen, todo = (work / "sample").read_text().split(), []
    elif again:  # what is not known killed, on the code and tests as they are now (`again_sample`)
        chosen, todo = again_sample(work, name, every)
        print(f"== {name}: {len(todo)} mutant(s) not known killed, run again (log: {work / 'run.log'})", flush=True)
    else:
        work = prepare(name)
        print(f"== {name}: mutating {MODULES[name][0]} (log: {work / 'run.log'})", flush=True)
        todo = chosen = sample(work, every)
        (work / "sample").write_text("\n".join(chosen))
    code = 0
    if todo:
        with open(work / "run.log", "a") as log:
            code = subprocess.run([str(MUTMUT), "run", "--max-children", str(jobs), *todo], cwd=work, stdout=log,
                                  stderr=subprocess.STDOUT, env=environment()).returncode
    if code != 0:
        sys.exit(f"mutmut failed for {name} (exit {code}): see {work / 'run.log'}")
    statuses = {mutant: status for mutant, status in results(work).items() if mutant in set(chosen)}
    statuses = {mutant: "survived" if status == "not checked" else status for mutant, status in statuses.items()}
    survivors = sorted(n for n, s in statuses.items() if s in ("survived", "no tests"))
    with open(work / "survivors.diff", "w") as diff:
        for mutant in survivors:
            shown = subprocess.run([str(MUTMUT), "show", mutant], cwd=work, capture_output=True, text=True)
            diff.write(f"# {mutant}\n{shown.stdout}\n")
    counts = {status: sum(s == status for s in statuses.values()) for status in sorted(set(statuses.values()))}
    print(f"   {counts}; survivors' diffs: {work / 'survivors.diff'}")
    rows = []
    for path in sorted({file_of(mutant) for mutant in statuses}):
        mine = [s for m, s in statuses.items() if file_of(m) == path]
        killed = sum(s in ("killed", "timeout") for s in mine)
        survived = sum(s in ("survived", "no tests") for s in mine)
        step = every or SAMPLE.get(path, 1)
        note = f" (1 in {step})" if step > 1 else ""
        rows.append(f"| `{path}`{note} | {', '.join(MODULES[name][1])} | {len(mine)} | {killed} | {survived} "
                    f"| | {100.0 * killed / len(mine):.1f} % |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", help=f"any of {', '.join(MODULES)} (default: all)")
    parser.add_argument("--jobs", type=int, default=int(os.environ.get("MUTATE_JOBS", "1")),
                        help="mutants run at once (default 1: the machine is shared)")
    parser.add_argument("--every", type=int, default=None,
                        help="score every N-th mutant of each file (default: all, or SAMPLE's N for the files there)")
    parser.add_argument("--again", action="store_true", help="run what is not known killed again: survivors, and mutants of changed code")
    parser.add_argument("--report", action="store_true", help="only print the last run's table")
    args = parser.parse_args()
    unknown = [name for name in args.modules if name not in MODULES]
    if unknown:
        parser.error(f"unknown module(s) {', '.join(unknown)}: choose from {', '.join(MODULES)}")
    rows = [row for name in args.modules or MODULES for row in run(name, args.jobs, args.every, args.again, args.report)]
    print(f"\n{date.today().isoformat()}, mutmut {version('mutmut')}; killed includes timeouts, survived includes "
          "mutants no test reached; fill in the equivalent column from the survivors' diffs")
    print("| module | tests run per mutant | mutants | killed | survived | equivalent | score |")
    print("|---|---|---:|---:|---:|---:|---:|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
