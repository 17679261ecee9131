"""A small Functions app for the host tests: HTTP, timer, Service Bus and Durable functions.

Every non-HTTP invocation appends a JSON line to $HOST_APP_RECORD, so a test can see what ran even
when the app runs in a `tower serve` subprocess.
"""

import json
import os

import azure.durable_functions as df
import azure.functions as func

app = df.DFApp(http_auth_level=func.AuthLevel.FUNCTION)


def record(**fields) -> None:
    with open(os.environ["HOST_APP_RECORD"], "a") as out:
        out.write(json.dumps(fields) + "\n")


@app.route(route="echo/{name}", methods=["GET", "POST"])
def echo(req: func.HttpRequest) -> func.HttpResponse:
    body = {
        "method": req.method,
        "name": req.route_params["name"],
        "params": dict(req.params),
        "header": req.headers.get("x-test"),
        "body": req.get_body().decode(),
    }
    return func.HttpResponse(json.dumps(body), status_code=201, mimetype="application/json", headers={"X-Echo": "yes"})


@app.route(route="echo/special", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def echo_special(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("literal route wins", status_code=200)


@app.route(route="boom")
def boom(req: func.HttpRequest) -> func.HttpResponse:
    raise RuntimeError(f"cannot reach the store with {os.environ.get('HOST_APP_SECRET_TOKEN', '')}")


@app.route(route="hello/{who}", methods=["POST"])
@app.durable_client_input(client_name="client")
async def start_hello(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    instance_id = await client.start_new("hello_orchestrator", req.params.get("id"), req.route_params["who"])
    return client.create_check_status_response(req, instance_id)


@app.route(route="hello-status/{instance_id}", methods=["GET"])
@app.durable_client_input(client_name="client")
async def hello_status(req: func.HttpRequest, client: df.DurableOrchestrationClient) -> func.HttpResponse:
    status = await client.get_status(req.route_params["instance_id"])
    if not status:
        return func.HttpResponse("not found", status_code=404)
    body = {"status": status.runtime_status.value, "output": status.output}
    return func.HttpResponse(json.dumps(body), mimetype="application/json")


@app.orchestration_trigger(context_name="context")
def hello_orchestrator(context: df.DurableOrchestrationContext):
    greeting = yield context.call_activity("say_hello", context.get_input())
    return greeting


@app.activity_trigger(input_name="who")
def say_hello(who: str) -> str:
    return f"hello {who}"


@app.timer_trigger(schedule="%HOST_APP_TIMER%", arg_name="timer", run_on_startup=False)
def every_second(timer: func.TimerRequest) -> None:
    record(function="every_second", past_due=timer.past_due, last=timer.schedule_status.get("Last"))


@app.service_bus_queue_trigger(arg_name="msg", queue_name="tower-events", connection="ServiceBusConnection")
def on_event(msg: func.ServiceBusMessage) -> None:
    body = json.loads(msg.get_body())
    data = body.get("data") or {}
    record(
        function="on_event",
        id=msg.message_id,
        type=msg.application_properties.get("type"),
        data=data,
        delivery_count=msg.delivery_count,
    )
    if data.get("poison") or msg.delivery_count <= data.get("fail_times", 0):
        raise ValueError(f"cannot handle {msg.message_id} (delivery {msg.delivery_count})")
