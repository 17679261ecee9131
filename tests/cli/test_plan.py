"""`tower graph` and `tower plan` on a small catalog: output, JSON and exit codes."""

import json
import textwrap

import pytest

from tower.cli.main import main

# lake (limit 2): a 1m, b 1m, c 2m, d 2m after c.  wh (unlimited): e after a (no expected
# duration: the default 1m), slow 3m.  By hand: critical path c -> d = 4m; lake work 6m / 2 = 3m,
# so the lower bound is 4m. Critical-path first starts c and a at 0 (4m); FIFO starts a and b
# first, so c ends at 3 and d at 5; level by level waits for slow (3m) before d: 5m.
CATALOG = """\
platforms:
  lake:
    type: sim
    max_concurrency: 2
  wh:
    type: sim
services:
  a: {platform: lake, expected_duration: 1m}
  b: {platform: lake, expected_duration: 60}
  c: {platform: lake, expected_duration: 2m}
  d: {platform: lake, expected_duration: 2m, depends_on: [c], retries: 2}
  e: {platform: wh, depends_on: [a]}
  slow: {platform: wh, expected_duration: 3m}
pipelines:
  nightly:
    services: ["*"]
  tail:
    services: ["+e"]
"""


@pytest.fixture
def catalog(tmp_path, monkeypatch):
    path = tmp_path / "catalog.yaml"
    path.write_text(CATALOG)
    monkeypatch.delenv("TOWER_CATALOG", raising=False)
    return str(path)


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_plan_prints_critical_path_bounds_and_makespans(catalog, capsys):
    code, out, err = run(capsys, "--catalog", catalog, "plan", "nightly")
    assert (code, err) == (0, "")
    assert out == textwrap.dedent(
        """\
        pipeline nightly: 6 services on 2 platforms

        critical path: 2 services, 4m
          c  lake  2m
          d  lake  2m

        platforms:
          platform  limit  services  work  work/limit
          lake      2      4         6m    3m
          wh        none   2         4m    -

        total work:   10m
        lower bound:  4m  (max of the critical path and work/limit per platform)

        predicted makespan:
          schedule             makespan  vs lower bound
          critical-path first  4m        1.00x
          FIFO                 5m        1.25x
          level by level       5m        1.25x

        retries (services with `retries:` try again after these failures):
          lake  1 with retries  the failures of `fail_attempts`
          wh    0 with retries  the failures of `fail_attempts`
          never after configuration, authentication, permission and not-found errors (and 4xx answers)

        note: no expected_duration for 1 service (e); assumed 1m each
        """
    )


def test_plan_json_is_one_object_in_seconds(catalog, capsys):
    code, out, err = run(capsys, "--catalog", catalog, "plan", "nightly", "--json")
    assert (code, err) == (0, "")
    report = json.loads(out)
    assert report["critical_path"] == [
        {"service": "c", "platform": "lake", "expected_duration": 120.0},
        {"service": "d", "platform": "lake", "expected_duration": 120.0},
    ]
    assert report["critical_path_length"] == 240
    assert [(r["platform"], r["services_with_retries"]) for r in report["retries"]] == [("lake", 1), ("wh", 0)]
    assert report["total_work"] == 600
    assert report["lower_bound"] == 240
    assert report["makespan"] == {"critical_path_first": 240, "fifo": 300, "level_by_level": 300}
    assert report["ratio_to_lower_bound"] == {
        "critical_path_first": 1.0,
        "fifo": 1.25,
        "level_by_level": 1.25,
    }
    assert report["platforms"] == [
        {"platform": "lake", "limit": 2, "services": 4, "work": 360.0, "work_per_slot": 180.0},
        {"platform": "wh", "limit": None, "services": 2, "work": 240.0, "work_per_slot": None},
    ]
    assert report["assumed_expected_duration"] == ["e"]


def test_concurrency_override_changes_the_bound_and_the_simulation(catalog, capsys):
    # lake limited to 1: work 6m is the bound; c, then a (ties with d at 2m, file order), d, b
    code, out, _ = run(capsys, "--catalog", catalog, "plan", "nightly", "--concurrency", "lake=1", "--json")
    report = json.loads(out)
    assert code == 0
    assert report["lower_bound"] == 360
    assert report["makespan"]["critical_path_first"] == 360
    # lake unlimited and wh limited to 1: e and slow share one slot
    code, out, _ = run(
        capsys,
        "--catalog",
        catalog,
        "plan",
        "nightly",
        "--concurrency",
        "lake=none",
        "--concurrency",
        "wh=1",
        "--json",
    )
    report = json.loads(out)
    assert code == 0
    assert [p["limit"] for p in report["platforms"]] == [None, 1]
    assert report["lower_bound"] == 240
    assert report["makespan"]["critical_path_first"] == 240


def test_plan_of_a_selection_treats_outside_dependencies_as_satisfied(catalog, capsys):
    code, out, _ = run(capsys, "--catalog", catalog, "plan", "tail", "--json")
    report = json.loads(out)
    assert code == 0
    assert report["services"] == 2
    assert [s["service"] for s in report["critical_path"]] == ["a", "e"]
    assert report["makespan"]["critical_path_first"] == 120


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["plan", "nightlly"], "unknown pipeline 'nightlly' in "),
        (["plan", "nightlly"], "did you mean 'nightly'? pipelines: nightly, tail"),
        (["graph", "nope"], "unknown pipeline 'nope'"),
        (
            ["plan", "nightly", "--concurrency", "laek=2"],
            "unknown platform 'laek' (did you mean 'lake'? platforms: lake, wh)",
        ),
        (["plan", "nightly", "--concurrency", "lake=two"], "N must be a whole number >= 1, or 0 / 'none'"),
        (["plan", "nightly", "--concurrency", "lake=-1"], "N must be a whole number"),
        (["plan", "nightly", "--concurrency", "lake"], "write PLATFORM=N"),
        (["plan", "nightly", "--concurrency", "=3"], "write PLATFORM=N"),
    ],
)
def test_bad_input_is_a_clear_error_with_exit_2(catalog, capsys, argv, message):
    code, out, err = run(capsys, "--catalog", catalog, *argv)
    assert code == 2
    assert out == ""
    assert message in err
    assert "Traceback" not in err


def test_graph_text_marks_the_critical_path(catalog, capsys):
    code, out, err = run(capsys, "--catalog", catalog, "graph", "nightly")
    assert (code, err) == (0, "")
    assert out == textwrap.dedent(
        """\
        level 0
           a     (lake, 1m)
           b     (lake, 1m)
         * c     (lake, 2m)
           slow  (wh, 3m)
        level 1
         * d     (lake, 2m)  <- c
           e     (wh, 1m)    <- a
        """
    )


def test_graph_mermaid_and_dot(catalog, capsys):
    code, out, _ = run(capsys, "--catalog", catalog, "graph", "tail", "--format", "mermaid")
    assert code == 0
    assert out == (
        "flowchart LR\n"
        '  s_a["a<br/>lake, 1m"]\n'
        '  s_e["e<br/>wh, 1m"]\n'
        "  s_a --> s_e\n"
        "  classDef critical stroke-width:3px\n"
        "  class s_a,s_e critical\n"
    )
    code, out, _ = run(capsys, "--catalog", catalog, "graph", "tail", "--format", "dot")
    assert code == 0
    assert '"a" -> "e";' in out
    assert out.startswith("digraph pipeline {\n")


def test_graph_rejects_an_unknown_format(catalog, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--catalog", catalog, "graph", "nightly", "--format", "svg"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'svg'" in capsys.readouterr().err


def test_pipelines_the_validator_would_reject_still_fail_cleanly():
    # Built in code, past the validator: a selector with bad syntax, and one that selects nothing.
    from tower.catalog.model import DEFAULT_EXPECTED_DURATION, Catalog, Pipeline, Platform, Service
    from tower.cli.plan_cmds import pipeline_graph
    from tower.errors import UsageError

    catalog = Catalog(
        path="c.yaml",
        platforms={"p": Platform("p", "sim")},
        services={"a": Service("a", "p")},
        pipelines={"bad": Pipeline("bad", ("a++",)), "empty": Pipeline("empty", ("tag:none",))},
    )
    with pytest.raises(UsageError, match=r"pipeline 'bad': bad selector 'a\+\+'"):
        pipeline_graph(catalog, "bad")
    with pytest.raises(UsageError, match="pipeline 'empty' selects no services"):
        pipeline_graph(catalog, "empty")
    catalog.pipelines["all"] = Pipeline("all", ("*",))
    assert pipeline_graph(catalog, "all").durations == {"a": DEFAULT_EXPECTED_DURATION}
    assert pipeline_graph(catalog, "all").assumed == ("a",)


def test_plan_keeps_heavy_packages_out_of_its_import_path(catalog):
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from tower.cli import plan_cmds\n"
        "from tower.catalog import load_catalog\n"
        f"report = plan_cmds.plan_report(plan_cmds.pipeline_graph(load_catalog({catalog!r}), 'nightly'))\n"
        "plan_cmds.format_plan(report)\n"
        "heavy = ('rich', 'azure', 'databricks', 'snowflake', 'aiohttp')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_several_pipelines_are_planned_as_runs_sharing_each_platforms_slots(catalog, capsys):
    # nightly (lake work 6m) and tail (a 1m on lake, e after it): 7m of lake work on the 2 slots
    # they share; with lake=1 the two runs together take at least 7m, one alone 6m
    code, out, _ = run(capsys, "--catalog", catalog, "plan", "nightly", "tail", "--concurrency", "lake=1", "--json")
    report = json.loads(out)
    assert code == 0 and report["pipeline"] == "nightly + tail" and report["services"] == 8
    assert report["platforms"][0] == {"platform": "lake", "limit": 1, "services": 5, "work": 420.0,
                                      "work_per_slot": 420.0}
    assert report["lower_bound"] == 420 and report["makespan"]["critical_path_first"] == 420
    assert [s["service"] for s in report["critical_path"]] == ["nightly:c", "nightly:d"]
    assert "tail:e" in report["assumed_expected_duration"]
    code, _, err = run(capsys, "--catalog", catalog, "plan", "tail", "tail")
    assert code != 0 and "pipeline 'tail' named twice" in err
