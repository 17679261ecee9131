"""The Functions app: the file the Python worker loads at the app root. It only builds the app and
registers the blueprints; every function lives in `orchestrators/`, `activities/` or `triggers/`.
Telemetry to Application Insights is set up here, once per worker process, when configured
(`tower.telemetry`)."""

import azure.durable_functions as df
import azure.functions as func

from activities import blueprints as activities
from orchestrators import bp as orchestrators
from tower import telemetry
from tower.stores import require_tables
from triggers import blueprints as triggers

require_tables()  # on an Azure host, stop here with one clear error rather than use SQLite files
telemetry.configure()

app = df.DFApp(http_auth_level=func.AuthLevel.FUNCTION)
for blueprint in (orchestrators, *activities, *triggers):
    app.register_functions(blueprint)
