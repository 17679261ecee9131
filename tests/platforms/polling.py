"""Drive an adapter's poll until the remote work is done, as service_run would (without the waits)."""


def poll_to_end(adapter, handle, limit=20):
    """(final status, every state seen); fails the test if the work never ends within `limit` polls."""
    states = []
    for _ in range(limit):
        status = adapter.poll(handle)
        states.append(status.state)
        if status.done:
            return status, states
    raise AssertionError(f"never finished: {states}")
