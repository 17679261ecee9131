"""Names of the app's Durable functions: one place, so no string literal is scattered around."""

# Orchestrators
PIPELINE_RUN = "pipeline_run"
SERVICE_RUN = "service_run"

# Activities
SUBMIT_SERVICE = "submit_service"
POLL_SERVICE = "poll_service"
CANCEL_SERVICE = "cancel_service"
OPEN_RUN = "open_run"
REPORT_SERVICE = "report_service"
RECONCILE_RUN = "reconcile_run"
CANCEL_RUN = "cancel_run"
RUN_RESULT = "run_result"

# Triggers
PURGE = "purge"
NOTIFY_DATABRICKS = "api_notify_databricks"
NOTIFY_HTTP = "api_notify_http"

# External events
CANCEL_EVENT = "cancel"
RUN_FINISHED_EVENT = "run_finished"
REMOTE_ENDED_EVENT = "remote_ended"  # a platform said a service's remote run ended: poll now (tower.push)
