"""A local stand-in for the Application Insights ingestion endpoint: what the Azure Monitor exporter
POSTs to ``<IngestionEndpoint>/v2.1/track`` (a JSON array of envelopes, gzip-compressed when
``Content-Encoding: gzip`` says so), answered as the service answers a fully accepted batch.

    with IngestionStandIn() as ingestion:
        os.environ["APPLICATIONINSIGHTS_CONNECTION_STRING"] = ingestion.connection_string
        ...
        ingestion.envelopes            every envelope received, in order

Also runnable on its own (``python tests/appinsights_standin.py``) to watch what `tower run`
sends: it prints the connection string, then one line per envelope.
"""

from __future__ import annotations

import gzip
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

INSTRUMENTATION_KEY = "00000000-0000-0000-0000-000000000000"


class IngestionStandIn:
    def __init__(self, on_envelope=None):
        self.envelopes: list[dict] = []
        self.requests = 0
        self._lock = threading.Lock()
        self._on_envelope = on_envelope
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="ingestion-standin", daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def connection_string(self) -> str:
        return f"InstrumentationKey={INSTRUMENTATION_KEY};IngestionEndpoint=http://127.0.0.1:{self.port}/"

    def start(self) -> IngestionStandIn:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> IngestionStandIn:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _received(self, batch: list[dict]) -> None:
        with self._lock:
            self.requests += 1
            self.envelopes.extend(batch)
        if self._on_envelope:
            for envelope in batch:
                self._on_envelope(envelope)

    def _handler(self):
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (the stdlib's name)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Content-Encoding", "").lower() == "gzip":
                    body = gzip.decompress(body)
                if self.path.rstrip("/").endswith("/v2.1/track"):
                    batch = json.loads(body or b"[]")
                    batch = batch if isinstance(batch, list) else [batch]
                    standin._received(batch)
                    reply = {"itemsReceived": len(batch), "itemsAccepted": len(batch), "errors": []}
                else:  # live metrics and the like: not part of the stand-in
                    self.send_response(404)
                    self.end_headers()
                    return
                data = json.dumps(reply).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):  # quiet
                pass

        return Handler


def summary(envelope: dict) -> str:
    """One line per envelope: its type, name, operation id and properties."""
    base = envelope.get("data", {}).get("baseData", {})
    kind = envelope.get("name", "").rsplit(".", 1)[-1]
    return (f"{kind:16} {base.get('name') or base.get('message', '')!s:40.40} "
            f"op={envelope.get('tags', {}).get('ai.operation.id', '-')} {json.dumps(base.get('properties') or {})}")


if __name__ == "__main__":
    import time

    with IngestionStandIn(on_envelope=lambda e: print(summary(e), flush=True)) as ingestion:
        print(f"APPLICATIONINSIGHTS_CONNECTION_STRING='{ingestion.connection_string}'", flush=True)
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
