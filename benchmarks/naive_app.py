"""Two naive DAG schedulers, for contrast in the benchmarks only (never registered in function_app).

    naive_levels    level by level: all of level k, then all of level k+1 (task_all per level)
    naive_task_any  a loop over task_any(running) that yields newly ready work in a new task_any:
                    looks start-when-ready, but the extension awaits top-level actions one at a
                    time, so new work waits behind the earlier task_any (see the host contract note)

Each service is one `naive_work` activity that sleeps its duration and returns its wall-clock
start and end, so the harness reads a makespan from the same kind of times as Tower's runs.
Input of both orchestrators: {"deps": {name: [dep, ...]}, "durations": {name: seconds}}.
"""

from __future__ import annotations

import time

import azure.durable_functions as df

from tower import graph

NAIVE_LEVELS = "naive_levels"
NAIVE_TASK_ANY = "naive_task_any"
NAIVE_WORK = "naive_work"

app = df.DFApp()


@app.activity_trigger(input_name="job", activity=NAIVE_WORK)
def naive_work(job: dict) -> dict:
    started = time.time()
    if job["seconds"] > 0:
        time.sleep(job["seconds"])
    return {"name": job["name"], "started": started, "finished": time.time()}


def _work(context, name: str, durations: dict):
    return context.call_activity(NAIVE_WORK, {"name": name, "seconds": durations[name]})


@app.orchestration_trigger(context_name="context", orchestration=NAIVE_LEVELS)
def naive_levels(context: df.DurableOrchestrationContext):
    plan = context.get_input()
    times = {}
    for group in graph.level_groups(plan["deps"]):
        results = yield context.task_all([_work(context, name, plan["durations"]) for name in group])
        times.update({r["name"]: [r["started"], r["finished"]] for r in results})
    return times


@app.orchestration_trigger(context_name="context", orchestration=NAIVE_TASK_ANY)
def naive_task_any(context: df.DurableOrchestrationContext):
    plan = context.get_input()
    deps, durations = plan["deps"], plan["durations"]
    waiting = {name: len(d) for name, d in deps.items()}
    children = graph.dependents(deps)
    running = {}
    for name, count in waiting.items():
        if count == 0:
            running[name] = _work(context, name, durations)
    times = {}
    while running:
        done = yield context.task_any(list(running.values()))
        result = done.result
        name = result["name"]
        del running[name]
        times[name] = [result["started"], result["finished"]]
        for child in children[name]:
            waiting[child] -= 1
            if waiting[child] == 0:
                running[child] = _work(context, child, durations)
    return times
