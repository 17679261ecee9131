"""The Functions app: the file the Python worker loads at the app root. It only builds the app and
registers the blueprints; every function lives in `orchestrators/`, `activities/` or `triggers/`.
This is the composition root of a worker process: its Tower runtime (stores, platform adapters) is
built here, once per process, for the functions to share (`app_runtime`), and telemetry to
Application Insights is set up, when configured (`tower.telemetry`)."""

import azure.durable_functions as df
import azure.functions as func

import app_runtime
from activities import blueprints as activities
from orchestrators import bp as orchestrators
from tower import telemetry
from tower.runtime import Runtime
from tower.stores import require_tables
from triggers import blueprints as triggers

require_tables()  # on an Azure host, stop here with one clear error rather than use SQLite files
app_runtime.install(Runtime.from_environment())
telemetry.configure()

app = df.DFApp(http_auth_level=func.AuthLevel.FUNCTION)
for blueprint in (orchestrators, *activities, *triggers):
    app.register_functions(blueprint)
