"""Run the engine on durable_app in this process until instance `crash-1` finishes (the crash test
kills it with SIGKILL mid-run and runs it again). Usage: run_engine.py HOME SIDE_EFFECT_FILE"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from tests.local.apps.durable_app import make_app  # noqa: E402
from tower.local.engine import Engine  # noqa: E402
from tower.local.store import read_status  # noqa: E402

home, side_file = sys.argv[1], sys.argv[2]
engine = Engine(make_app(), home, activity_workers=4).start()
if read_status(home, "crash-1") is None:
    engine.start_new("crashy", "crash-1", json.dumps({"file": side_file, "steps": 6, "fan": 4, "secs": 0.3}))
status = engine.wait("crash-1", timeout=60)
engine.stop()
print(json.dumps({"runtimeStatus": status["runtimeStatus"], "output": status["output"]}))
