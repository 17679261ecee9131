"""The summary's small print: words not cut in half, seconds without microseconds, a 0 s service
drawn as the short thing it is, plurals."""

from tower.cli.common import plural
from tower.cli.render import clip, gantt, runs_table, services_table


def test_an_error_is_cut_between_words():
    error = "exit code 3: relation orders_staging does not exist in schema analytics_prod_reporting_v2 today"
    row = services_table({"started": None, "services": {"load": {"status": "failed", "error": error}}})
    note = row.splitlines()[-1].split("failed", 1)[1].split("  ")[-1].strip()
    assert note.endswith("…") and error.startswith(note[:-1]) and error[len(note) - 1] == " "
    assert clip("short", 70) == "short"
    assert len(clip("x" * 100, 70)) == 70  # one long word: cut where it must be


def test_times_in_tables_are_to_the_second():
    table = runs_table([{"run_id": "r", "pipeline": "p", "status": "succeeded",
                         "started": "2026-11-24T02:30:05.123456Z", "finished": "2026-11-24T02:31:05Z"}])
    assert "2026-11-24T02:30:05Z" in table and ".123456" not in table


def test_a_zero_second_service_is_one_cell_not_a_long_bar():
    result = {"started": "2026-01-01T00:00:00Z", "finished": "2026-01-01T00:00:00.100Z", "services": {
        "a": {"status": "succeeded", "started": "2026-01-01T00:00:00.050Z", "finished": "2026-01-01T00:00:00.070Z"}}}
    bar = gantt(result, width=40).splitlines()[0]
    assert bar.count("█") == 1


def test_plurals():
    assert [plural(1, "pipeline"), plural(0, "pipeline"), plural(3, "pipeline")] == \
        ["1 pipeline", "0 pipelines", "3 pipelines"]


def test_a_summary_ends_with_a_blank_line_so_the_next_command_stays_apart():
    from tower.cli.render import run_summary

    result = {"run_id": "r", "pipeline": "p", "status": "succeeded", "started": "2026-01-01T00:00:00Z",
              "finished": "2026-01-01T00:00:01Z",
              "services": {"a": {"status": "succeeded", "started": "2026-01-01T00:00:00Z",
                                 "finished": "2026-01-01T00:00:01Z"}}}
    text = run_summary(result)
    assert text.endswith("running\n")  # the legend, then (with print's newline) one empty line
