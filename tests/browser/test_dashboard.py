"""The dashboard under `tower serve`, as a user opens it: a run of a simulated catalog whose
lakehouse has 2 slots for 4 loads (so the board has a queue), watched in headless Chromium while it
runs and after it ended; then repaired from the page. Screenshots go to $TOWER_SCREENSHOTS (else the
test's temporary folder)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.ports import free_port

REPO = Path(__file__).resolve().parents[2]

CATALOG = """
platforms:
  lakehouse: {type: sim, max_concurrency: 2}
  warehouse: {type: sim, max_concurrency: 2}
  crm: {type: sim}
services:
  load_orders:    {platform: lakehouse, expected_duration: 6, duration: 10, tags: [shop]}
  load_customers: {platform: lakehouse, expected_duration: 6, duration: 8, tags: [shop]}
  load_products:  {platform: lakehouse, expected_duration: 5, duration: 5, tags: [shop]}
  load_stores:    {platform: lakehouse, expected_duration: 4, duration: 4, tags: [shop]}
  load_fx_rates:  {platform: warehouse, expected_duration: 1, duration: 1, tags: [shop]}
  stg_orders:     {platform: warehouse, depends_on: [load_orders], expected_duration: 2, duration: 2, tags: [shop]}
  stg_customers:  {platform: warehouse, depends_on: [load_customers], expected_duration: 2, duration: 2, tags: [shop]}
  fct_sales:      {platform: warehouse, depends_on: [stg_orders, stg_customers, load_products, load_fx_rates], expected_duration: 3, duration: 3, tags: [shop]}
  dim_store:      {platform: warehouse, depends_on: [load_stores], expected_duration: 1, duration: 1, tags: [shop]}
  sync_crm:       {platform: crm, depends_on: [fct_sales], expected_duration: 1, duration: 1, outcome: fail, tags: [shop]}
  publish_bi:     {platform: crm, depends_on: [fct_sales, dim_store], expected_duration: 2, duration: 2, tags: [shop]}
{big}
pipelines:
  backfill:
    services: [tag:big]
  nightly:
    services: [tag:shop]
    schedule: {cron: "30 2 * * *", timezone: Europe/London}
  orders_arrived:
    services: [load_orders+]
    on_event: orders.landed
"""


def big_services(layers: int = 10, width: int = 100) -> str:
    """1,000 services in 10 layers, each depending on two of the layer before: a graph no page can
    draw whole and stay readable."""
    lines = []
    for layer in range(layers):
        for i in range(width):
            deps = f", depends_on: [b{layer - 1}_{i}, b{layer - 1}_{(i * 7 + 3) % width}]" if layer else ""
            lines.append(f"  b{layer}_{i}: {{platform: lakehouse, expected_duration: {1 + (i * layer) % 9}, tags: [big]{deps}}}")
    return "\n".join(lines)


def call(url: str, method: str = "GET", body: dict | None = None) -> tuple[int, dict, dict]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.loads(exc.read() or b"null")


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """`tower serve` on a free port, a fresh home and the catalog above; its base URL."""
    root = tmp_path_factory.mktemp("dashboard")
    (root / "catalog.yaml").write_text(textwrap.dedent(CATALOG).replace("{big}", big_services()))
    env = {**os.environ, "TOWER_HOME": str(root / "home"), "TOWER_CATALOG": str(root / "catalog.yaml")}
    for name in ("TOWER_HISTORY_TABLE_URL", "TOWER_LEDGER_TABLE_URL", "TOWER_RUNS_TABLE_URL",
                 "APPLICATIONINSIGHTS_CONNECTION_STRING"):
        env.pop(name, None)
    port = free_port()
    log = open(root / "serve.log", "w")  # noqa: SIM115 (closed in teardown)
    process = subprocess.Popen([sys.executable, "-m", "tower", "serve", "--port", str(port)], cwd=REPO, env=env,
                               stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 40
        while True:
            try:
                urllib.request.urlopen(f"{base}/api/pipelines", timeout=1).read()
                break
            except OSError:
                assert process.poll() is None, (root / "serve.log").read_text()
                assert time.monotonic() < deadline, "tower serve did not start within 40 s"
                time.sleep(0.2)
        yield base
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        log.close()


@pytest.fixture
def shots(tmp_path) -> Path:
    return Path(os.environ.get("TOWER_SCREENSHOTS") or tmp_path)


@pytest.mark.slow
def test_the_dashboard_routes_serve_its_files_and_the_pipelines(served):
    with urllib.request.urlopen(f"{served}/", timeout=10) as response:  # `/` redirects to the page
        assert response.url == f"{served}/api/dashboard"
        assert "default-src 'none'; script-src 'self'" in response.headers["Content-Security-Policy"]
        page = response.read().decode()
    assert '<script src="/api/dashboard/app.js">' in page and "cdn" not in page.lower()
    with urllib.request.urlopen(f"{served}/api/dashboard/?code=k", timeout=10) as response:  # a trailing slash
        assert 'href="/api/dashboard/style.css"' in response.read().decode()
    with urllib.request.urlopen(f"{served}/api/dashboard/app.js", timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/javascript")
        assert "function boardView" in response.read().decode()
    for missing in ("nope.js", "..%2Ffunction_app.py", "index.html"):  # only its scripts and styles
        assert call(f"{served}/api/dashboard/{missing}")[0] == 404

    status, _, body = call(f"{served}/api/pipelines")
    assert status == 200
    pipelines = {p["name"]: p for p in body["pipelines"]}
    assert pipelines["nightly"]["schedule"] == {"cron": "30 2 * * *", "timezone": "Europe/London", "catchup": "latest"}
    assert len(pipelines["nightly"]["next_due"]) == 3 and pipelines["nightly"]["services"] == 11
    assert pipelines["orders_arrived"]["on_event"] == ["orders.landed"] and pipelines["orders_arrived"]["next_due"] == []
    assert pipelines["backfill"]["services"] == 1000

    status, _, one = call(f"{served}/api/pipelines/nightly")
    assert status == 200
    assert one["critical_path"] == ["load_orders", "stg_orders", "fct_sales", "publish_bi"]
    assert one["critical_path_seconds"] == 13
    # 4 loads of 21 s over 2 slots; then what waits on them: as `tower plan` predicts it
    assert one["predicted_makespan"] == 16 and one["services"]["fct_sales"]["deps"] == ["stg_orders", "stg_customers", "load_products", "load_fx_rates"]
    status, _, error = call(f"{served}/api/pipelines/nighty")
    assert status == 404 and "did you mean 'nightly'" in error["error"]
    assert call(f"{served}/api/runs/run~nope/board")[0] == 404
    assert call(f"{served}/api/runs/run~nope/repair", "POST", {})[0] == 404
    status, _, error = call(f"{served}/api/runs/run~nope/repair", "POST", {"again": "yes"})
    assert status == 400 and '{"again": true}' in error["error"]


@pytest.mark.slow
def test_a_run_watched_on_the_dashboard_while_it_runs_and_after_then_repaired(served, browser, shots):
    status, _, started = call(f"{served}/api/runs/nightly", "POST", {})
    assert status == 202, started
    run_id = started["run_id"]

    # the board's data, straight from the API, while the lakehouse is full
    deadline = time.monotonic() + 20
    while True:
        status, _, view = call(f"{served}/api/runs/{run_id}/board")
        if status == 200 and view["board"]["runways"]:
            lake = next(r for r in view["board"]["runways"] if r["platform"] == "lakehouse")
            if lake["busy"] == 2:
                break
        assert time.monotonic() < deadline, view
        time.sleep(0.1)
    assert lake["limit"] == 2 and lake["queue"] == ["load_products", "load_stores"]
    assert view["board"]["waiting"]["stg_orders"] == "waiting for load_orders"
    assert view["board"]["waiting"]["load_stores"] == "no slot on lakehouse: 2/2 busy, 2nd in queue"

    page = browser.page
    page.goto(f"{served}/api/dashboard#/run/{run_id}")
    page.wait_for("document.querySelector('#board [data-platform=lakehouse]')")
    assert "2/2 slots busy" in page.text("#board [data-platform=lakehouse]")
    assert page.eval("[...document.querySelectorAll('#board [data-platform=lakehouse] [data-queued]')].map(e => e.dataset.queued)") \
        == ["load_products", "load_stores"]
    assert page.eval("[...document.querySelectorAll('#board [data-platform=lakehouse] [data-running]')].map(e => e.dataset.running).sort()") \
        == ["load_customers", "load_orders"]
    assert page.text("#waiting [data-service=stg_orders]").endswith("waiting for load_orders")
    assert "no slot on lakehouse: 2/2 busy, 1st in queue" in page.text("#waiting [data-service=load_products]")
    assert page.eval("document.querySelector('#run').dataset.status") == "running"
    assert page.eval("!!document.querySelector('#cancel') && !document.querySelector('#repair')")
    assert page.text("#eta")  # a running run shows when it should end
    assert page.eval("document.querySelectorAll('#services tr[data-service]').length") == 11
    # load_fx_rates ends after 1 s, while the lakehouse queue waits for 6 s: the page updates by itself
    page.wait_for("document.querySelector('#services tr[data-service=load_fx_rates][data-state=succeeded]')")
    assert page.eval("document.querySelectorAll('#board [data-platform=lakehouse] [data-queued]').length") == 2
    fx = page.eval("[...document.querySelectorAll('#services tr[data-service=load_fx_rates] td')].map(td => td.innerText)")
    assert fx[2] == "1" and re.fullmatch(r"1\.\d s / ~1\.0 s", fx[3]) and fx[5].startswith("sim-")  # attempts, took, remote id
    page.screenshot(shots / "dashboard-run-running.png")
    # searching while the page refreshes itself: the box keeps its focus and the filter holds
    page.eval("(() => { const box = document.querySelector('#search'); box.focus(); box.value = 'stg';"
              " box.dispatchEvent(new Event('input')); })()")
    refreshed = page.eval("document.querySelector('#board').innerText")
    page.wait_for(f"document.querySelector('#board').innerText !== {json.dumps(refreshed)}")  # a refresh came
    assert page.eval("document.activeElement.id") == "search"
    assert page.eval("[...document.querySelectorAll('#services tr[data-service]')].map(r => r.dataset.service)") == \
        ["stg_orders", "stg_customers"]
    page.eval("(() => { const box = document.querySelector('#search'); box.value = '';"
              " box.dispatchEvent(new Event('input')); box.blur(); })()")
    page.click("[data-tab=graph]")
    page.wait_for("document.querySelectorAll('#dag [data-node]').length === 11")
    critical = page.eval("[...document.querySelectorAll('#dag .node.crit')].map(n => n.dataset.node)")
    assert critical[-2:] == ["fct_sales", "publish_bi"]  # the chain of what is left ends there, whatever came first
    page.screenshot(shots / "dashboard-run-graph.png")
    page.click("[data-tab=timeline]")
    page.wait_for("document.querySelector('#gantt [data-group=lakehouse]')")

    # it refreshes by itself until the run ends (sync_crm fails: the run fails, and can be repaired)
    page.click("[data-tab=services]")
    page.wait_for("document.querySelector('#run').dataset.status === 'failed'", timeout=60)
    page.wait_for("document.querySelector('#repair')")
    assert not page.eval("!!document.querySelector('#board')")  # no board once nothing runs
    states = page.eval("Object.fromEntries([...document.querySelectorAll('#services tr[data-service]')].map(r => [r.dataset.service, r.dataset.state]))")
    assert states == {**dict.fromkeys(["load_orders", "load_customers", "load_products", "load_stores", "load_fx_rates", "stg_orders",
                                       "stg_customers", "fct_sales", "dim_store", "publish_bi"], "succeeded"),
                      "sync_crm": "failed"}
    assert "simulated failure" in page.text("#services tr[data-service=sync_crm] .err")
    assert page.text("#services tr[data-service=sync_crm] td:nth-child(6)").startswith("sim-")  # its remote id
    page.click("[data-tab=timeline]")
    page.wait_for("document.querySelectorAll('#gantt .row .act').length === 11")
    page.screenshot(shots / "dashboard-run-finished.png")

    # the runs page lists it with its failed count and links to it
    page.goto(f"{served}/api/dashboard#/runs")
    page.wait_for(f"document.querySelector('#runs [data-run=\"{run_id}\"]')")
    row = page.text(f'#runs [data-run="{run_id}"]')
    assert "nightly" in row and "failed" in row and "api" in row  # its trigger
    assert page.text(f'#runs [data-run="{run_id}"] td:last-child') == "1"  # one failed service
    page.screenshot(shots / "dashboard-runs.png")
    page.eval("(() => { const s = document.querySelector('select[data-filter=status]'); s.value = 'succeeded';"
              " s.dispatchEvent(new Event('change')); })()")
    page.wait_for("document.querySelector('#no-runs')")  # filtered out: it failed
    assert page.text("#no-runs") == "No runs match these filters."
    page.eval("(() => { const s = document.querySelector('select[data-filter=status]'); s.value = 'failed';"
              " s.dispatchEvent(new Event('change')); })()")
    page.wait_for(f"document.querySelector('#runs [data-run=\"{run_id}\"]')")
    page.goto(f"{served}/api/dashboard#/pipelines")
    page.wait_for("document.querySelector('#pipelines [data-pipeline=nightly]')")
    assert "30 2 * * *" in page.text("#pipelines [data-pipeline=nightly]")
    assert "orders.landed" in page.text("#pipelines [data-pipeline=orders_arrived]")
    page.screenshot(shots / "dashboard-pipelines.png")

    # repair from the page: asked to confirm, then on the new run's page, which has only sync_crm
    page.goto(f"{served}/api/dashboard#/run/{run_id}")
    page.wait_for("document.querySelector('#repair')")
    page.click("#repair")
    page.wait_for(f"location.hash.startsWith('#/run/') && !location.hash.includes({json.dumps(run_id.split('@')[1])})")
    assert page.dialogs and page.dialogs[-1].startswith(f"Repair run {run_id}?")
    page.wait_for("document.querySelectorAll('#services tr[data-service]').length === 1")
    assert page.eval("document.querySelector('#services tr[data-service]').dataset.service") == "sync_crm"
    repair_id = page.eval("decodeURIComponent(location.hash.slice('#/run/'.length))")
    page.wait_for("document.body.innerText.includes('Repair of')")
    page.wait_for("document.querySelector('#run').dataset.status === 'failed'", timeout=30)  # sync_crm fails again

    # the original now points to its repair; a second repair must be asked for as such
    status, _, refused = call(f"{served}/api/runs/{run_id}/repair", "POST", {})
    assert status == 409 and repair_id in refused["error"]
    page.goto(f"{served}/api/dashboard#/run/{run_id}")
    page.wait_for(f"document.body.innerText.includes('Repaired by') && document.body.innerText.includes({json.dumps(repair_id)})")
    assert page.text("#repair") == "Repair again"
    page.goto(f"{served}/api/dashboard#/runs")
    page.wait_for(f"document.querySelector('#runs [data-run=\"{repair_id}\"]')")
    assert "repair" in page.text(f'#runs [data-run="{repair_id}"] td:first-child')
    assert "repaired" in page.text(f'#runs [data-run="{run_id}"] td:first-child')
    assert page.errors == []


@pytest.mark.slow
def test_cancel_from_the_page_passes_on_the_function_key_it_was_opened_with(served, browser, shots):
    page = browser.page
    page.goto(f"{served}/api/dashboard?code=k3y#/pipeline/nightly")
    page.wait_for("document.querySelector('#platforms [data-platform=lakehouse]')")
    assert page.text("#platforms [data-platform=lakehouse]").split("\t") == ["lakehouse", "4", "2", "21 s", "10.5 s"]
    page.click("#start")  # Run now, confirmed: the page goes to the new run
    page.wait_for("location.hash.startsWith('#/run/') && !!document.querySelector('#cancel')")
    run_id = page.eval("decodeURIComponent(location.hash.slice('#/run/'.length))")
    assert run_id.startswith("run~nightly@")
    status, _, refused = call(f"{served}/api/runs/{run_id}/repair", "POST", {})
    assert status == 409 and "still running" in refused["error"]
    page.click("#cancel")
    page.wait_for("document.querySelector('#run').dataset.status === 'cancelled'", timeout=60)
    assert page.dialogs == ["Start a run of nightly now (11 services)?",
                            f"Cancel run {run_id}? Services not started are cancelled, running ones are stopped."]
    calls = page.eval("performance.getEntriesByType('resource').map(e => e.name).filter(u => u.includes('/api/runs'))")
    assert calls and all("code=k3y" in url for url in calls), calls
    assert any(url.split("?")[0].endswith("/cancel") for url in calls)
    assert any(url.split("?")[0].endswith("/api/runs/nightly") for url in calls)  # the start
    assert page.eval("document.querySelectorAll('#services tr[data-state=cancelled]').length") >= 1
    assert page.errors == []


@pytest.mark.slow
def test_a_thousand_service_graph_draws_the_critical_path_and_a_focused_neighbourhood(served, browser, shots):
    page = browser.page
    page.goto(f"{served}/api/dashboard/#/pipeline/backfill")  # a trailing slash: API calls still reach /api
    page.wait_for("document.querySelector('#dag [data-node]')")
    drawn = page.eval("[...document.querySelectorAll('#dag [data-node]')].map(n => n.dataset.node)")
    _, _, pipeline = call(f"{served}/api/pipelines/backfill")
    assert len(pipeline["critical_path"]) == 10 and set(pipeline["critical_path"]) <= set(drawn)
    assert 10 < len(drawn) <= 120
    assert "1000 services" in page.text("#dag-note")
    page.screenshot(shots / "dashboard-pipeline-1000.png")
    target = "b5_42"  # not drawn: finding it focuses it
    assert target not in drawn
    page.eval(f"(() => {{ const box = document.querySelector('#search'); box.value = {json.dumps(target)};"
              " box.dispatchEvent(new Event('input')); })()")
    services = pipeline["services"]

    def neighbourhood(name):
        return {name, *services[name]["deps"], *(n for n, s in services.items() if name in s["deps"])}

    def focused_on(name):
        page.wait_for(f"document.querySelector('#dag-note b') && document.querySelector('#dag-note b').textContent === {json.dumps(name)}")
        return set(page.eval("[...document.querySelectorAll('#dag [data-node]')].map(n => n.dataset.node)"))

    assert focused_on(target) == neighbourhood(target)
    below = next(n for n, s in services.items() if target in s["deps"])
    page.eval(f"document.querySelector('#dag [data-node={below}]').dispatchEvent(new MouseEvent('click', {{bubbles: true}}))")
    assert focused_on(below) == neighbourhood(below)  # a click moves the focus
    assert page.errors == []
