"""Episode cost against history length, and activity throughput, for the local Durable engine.

An orchestrator runs N sequential no-op activities (each episode adds 4 history events); we record,
per episode, the SDK handle's CPU time (the orchestrator replaying its whole history, which is
inherent to out-of-process Durable) and the engine's own CPU time (context JSON, shim replay,
bookkeeping). Both grow linearly with history length; their per-event slope stays flat as N grows.
Run: .venv/bin/python benchmarks/bench_engine.py   (prints a markdown table)
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import azure.durable_functions as df  # noqa: E402
import azure.functions as func  # noqa: E402

from tower.local.engine import Engine  # noqa: E402


def make_app() -> df.DFApp:
    app = df.DFApp(http_auth_level=func.AuthLevel.ANONYMOUS)
    bp = df.Blueprint()

    @bp.activity_trigger(input_name="i")
    def noop(i: int) -> int:
        return i

    @bp.orchestration_trigger(context_name="context")
    def chain(context: df.DurableOrchestrationContext):
        total = 0
        for i in range(context.get_input()):
            total += yield context.call_activity("noop", i)
        return total

    @bp.orchestration_trigger(context_name="context")
    def fan(context: df.DurableOrchestrationContext):
        return sum((yield context.task_all([context.call_activity("noop", i) for i in range(context.get_input())])))

    app.register_functions(bp)
    return app


def chain_run(n: int) -> dict:
    with tempfile.TemporaryDirectory() as home:
        engine = Engine(make_app(), home).start()
        engine.episode_samples = []
        started = time.perf_counter()
        engine.wait(engine.start_new("chain", "c", json.dumps(n)), timeout=600)
        wall = time.perf_counter() - started
        samples = engine.episode_samples
        engine.stop()
    last = samples[-max(1, len(samples) // 10):]          # the last 10% of episodes: the longest histories
    events = sum(s[0] for s in last) / len(last)
    handle = sum(s[1] for s in last) / len(last)
    own = sum(s[2] for s in last) / len(last)
    return {"n": n, "episodes": len(samples), "events": events, "handle_ms": handle * 1e3, "own_ms": own * 1e3,
            "handle_us_per_event": handle / events * 1e6, "own_us_per_event": own / events * 1e6, "wall": wall}


def fan_run(n: int, workers: int) -> dict:
    with tempfile.TemporaryDirectory() as home:
        engine = Engine(make_app(), home, activity_workers=workers).start()
        started = time.perf_counter()
        engine.wait(engine.start_new("fan", "f", json.dumps(n)), timeout=600)
        wall = time.perf_counter() - started
        episodes = engine.stats["episodes"]
        engine.stop()
    return {"n": n, "workers": workers, "wall": wall, "per_second": n / wall, "episodes": episodes}


def main() -> None:
    print("### Episode cost against history length (sequential activities)\n")
    print("| activities | episodes | history events (last 10%) | SDK handle ms/episode | engine ms/episode "
          "| handle µs/event | engine µs/event | run wall s |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n in (50, 200, 400):
        r = chain_run(n)
        print(f"| {r['n']} | {r['episodes']} | {r['events']:.0f} | {r['handle_ms']:.2f} | {r['own_ms']:.2f} "
              f"| {r['handle_us_per_event']:.1f} | {r['own_us_per_event']:.1f} | {r['wall']:.2f} |")
    print("\n### Activity throughput (one fan-out of no-op activities, results batched into episodes)\n")
    print("| activities | workers | wall s | activities/s | episodes |")
    print("|---:|---:|---:|---:|---:|")
    for n, workers in ((500, 8), (2000, 8)):
        r = fan_run(n, workers)
        print(f"| {r['n']} | {r['workers']} | {r['wall']:.2f} | {r['per_second']:.0f} | {r['episodes']} |")


if __name__ == "__main__":
    main()
