"""tower.logcontext: log lines from pool threads and hand-off tasks keep their invocation, run and
service, the way the Python worker reads them (azure-functions-python-worker dispatcher.py)."""

import asyncio
import contextvars
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

from tower import logcontext

WORKER_LOCAL = threading.local()  # what the worker hands every function as context.thread_local_storage
TASK_ID = "__azure_function_invocation_id__"


class WorkerTask(asyncio.Task):
    """The worker's task factory (ContextEnabledTask): a task takes the invocation id of the task
    that created it; `set_azure_invocation_id` sets it."""

    def __init__(self, coro, loop, context=None):
        super().__init__(coro, loop=loop, context=context)
        parent = asyncio.current_task(loop)
        if parent is not None and getattr(parent, TASK_ID, None) is not None:
            self.set_azure_invocation_id(getattr(parent, TASK_ID))

    def set_azure_invocation_id(self, invocation_id):
        setattr(self, TASK_ID, invocation_id)


def worker_invocation_id():
    """`get_current_invocation_id`: the current task's id, else the thread-local one."""
    try:
        task = asyncio.current_task()
    except RuntimeError:
        task = None
    if task is not None and getattr(task, TASK_ID, None) is not None:
        return getattr(task, TASK_ID)
    return getattr(WORKER_LOCAL, "invocation_id", None)


class Lines(logging.Handler):
    def __init__(self):
        super().__init__()
        self.seen = []

    def emit(self, record):
        self.seen.append((record.getMessage(), worker_invocation_id(), getattr(record, logcontext.RUN_ID, None),
                          getattr(record, logcontext.SERVICE, None)))


def a_logger():
    logger = logging.getLogger("tower.test.logcontext")
    logger.handlers, logger.filters = [], []
    logger.addFilter(logcontext.RunFields())
    logger.addHandler(lines := Lines())
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger, lines


def test_a_pool_thread_logs_as_the_invocation_that_handed_it_work_and_then_forgets_it():
    log, lines = a_logger()
    pool = ThreadPoolExecutor(1)
    context = SimpleNamespace(invocation_id="inv-1", thread_local_storage=WORKER_LOCAL)

    async def activity():
        logcontext.begin(context, "run-1")
        await asyncio.wrap_future(pool.submit(logcontext.carried(lambda: log.info("from the pool"))))
        await asyncio.wrap_future(pool.submit(lambda: log.info("not handed out by Tower")))

    asyncio.run(activity())
    assert lines.seen == [("from the pool", "inv-1", "run-1", None), ("not handed out by Tower", None, None, None)]


def test_a_task_started_from_a_thread_by_a_loop_callback_is_tagged_with_the_invocation():
    log, lines = a_logger()
    context = SimpleNamespace(invocation_id="inv-2", thread_local_storage=WORKER_LOCAL)

    async def act():
        log.info("act")

    async def activity():
        loop = asyncio.get_running_loop()
        loop.set_task_factory(lambda loop, coro, context=None: WorkerTask(coro, loop, context))
        logcontext.begin(context, "run-2")
        done = loop.create_future()

        def start():  # on the loop, from a callback: no current task to inherit the id from
            task = logcontext.tag_task(asyncio.ensure_future(act()))
            task.add_done_callback(lambda _: done.set_result(None))

        def report():  # a platform thread, as the early report
            logcontext.about(service="b")
            loop.call_soon_threadsafe(start)

        threading.Thread(target=logcontext.carried(report)).start()
        await done

    asyncio.run(activity())
    assert lines.seen == [("act", "inv-2", "run-2", "b")]


def test_a_line_about_another_service_keeps_its_own_fields():
    log, lines = a_logger()

    def activity():
        logcontext.begin(None, "run-3", "a")
        log.info("about a")
        log.info("about c", extra=logcontext.fields("run-3", "c"))

    contextvars.copy_context().run(activity)
    assert lines.seen == [("about a", None, "run-3", "a"), ("about c", None, "run-3", "c")]
