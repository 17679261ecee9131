"""The KQL behind the alerts and the workbook asks only for events and properties Tower emits
(the telemetry contract, docs/monitoring.md), so a renamed property cannot silently empty a chart
or mute an alert."""

import re
from pathlib import Path

import pytest

from tests.deploy.bicep_tree import BICEP, ROOT

QUERIES = sorted((BICEP / "queries").glob("*.kql"))

# customEvents and the customDimensions each carries (the telemetry contract).
CONTRACT = {
    "tower.run.started": {"run_id", "pipeline", "trigger", "services", "expected_end", "deadline"},
    "tower.run.finished": {"run_id", "pipeline", "trigger", "status", "started", "finished", "duration_s",
                           "critical_path_s", "services", "succeeded", "failed", "upstream_failed", "cancelled",
                           "skipped", "failed_services"},
    "tower.service.finished": {"run_id", "pipeline", "service", "platform", "status", "attempts", "started",
                               "finished", "duration_s", "expected_s", "error_class", "remote_id"},
    "tower.schedule.tick": {"at", "started"},
}


def query_problems(path: Path, text: str) -> list[str]:
    problems = []
    events = set(re.findall(r'name == "([^"]+)"', text))
    for event in events - CONTRACT.keys():
        problems.append(f"{path.relative_to(ROOT)}: event '{event}' is not one Tower emits "
                        f"(one of {sorted(CONTRACT)})")
    allowed = set().union(*(CONTRACT[e] for e in events & CONTRACT.keys())) if events else set()
    for lineno, line in enumerate(text.splitlines(), 1):
        for prop in re.findall(r"customDimensions\.(\w+)|customDimensions\[\"(\w+)\"\]", line):
            prop = prop[0] or prop[1]
            if prop not in allowed:
                problems.append(f"{path.relative_to(ROOT)}:{lineno}: customDimensions.{prop} is not a property of "
                                f"{sorted(events)} (see the telemetry contract in docs/monitoring.md)")
    if not events:
        problems.append(f"{path.relative_to(ROOT)}: queries no Tower event")
    return problems


@pytest.mark.parametrize("path", QUERIES, ids=[p.name for p in QUERIES])
def test_query_uses_the_contract(path):
    assert query_problems(path, path.read_text()) == []


def test_a_renamed_property_is_caught():
    path = BICEP / "queries/run-duration-vs-critical-path.kql"
    problems = query_problems(path, path.read_text().replace("customDimensions.critical_path_s", "customDimensions.critical_s"))
    assert any("run-duration-vs-critical-path.kql:9: customDimensions.critical_s" in p for p in problems)
    assert query_problems(path, 'customEvents | where name == "tower.run.done"')[0].endswith(
        "(one of ['tower.run.finished', 'tower.run.started', 'tower.schedule.tick', 'tower.service.finished'])")


def test_every_query_is_used_and_documented():
    bicep = "".join(p.read_text() for p in (BICEP / "modules").glob("*.bicep"))
    docs = (ROOT / "docs/monitoring.md").read_text()
    for path in QUERIES:
        assert f"queries/{path.name}" in bicep, f"{path.name} is used by no alert or workbook"
        assert path.name in docs, f"{path.name} is not explained in docs/monitoring.md"


def test_telemetry_code_emits_the_contract_events():
    telemetry = ROOT / "tower/telemetry.py"
    if not telemetry.exists():
        pytest.skip("tower/telemetry.py is not there yet")
    text = telemetry.read_text()
    assert [e for e in CONTRACT if e not in text] == []


def test_monitoring_guide_shows_each_query_as_it_is():
    docs = (ROOT / "docs/monitoring.md").read_text()
    stale = [p.name for p in QUERIES if f"```kusto\n{p.read_text().rstrip()}\n```" not in docs]
    assert stale == [], f"docs/monitoring.md shows another text for {stale}: copy the query files into it"
