"""Names of the app's Durable functions: one place, so no string literal is scattered around."""

# Orchestrators
PIPELINE_RUN = "pipeline_run"
SERVICE_RUN = "service_run"

# Activities
SUBMIT_SERVICE = "submit_service"
POLL_SERVICE = "poll_service"
CANCEL_SERVICE = "cancel_service"
RECORD_SERVICE_RESULT = "record_service_result"
SIGNAL_INSTANCES = "signal_instances"

# External events
CANCEL_EVENT = "cancel"
