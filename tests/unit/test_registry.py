"""The Schema Registry lookup of the Avro decoder, against a local HTTP server that
answers as a Confluent Schema Registry does (GET /schemas/ids/<id>)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from replicator.errors import ConfigurationError, TransientError
from replicator.local.processes import free_port
from replicator.stream.source.decode_avro import registry_lookup

SCHEMA = {"type": "record", "name": "Key", "fields": [{"name": "id", "type": "string"}]}
ANSWERS: dict[str, tuple[int, dict]] = {
    "/schemas/ids/1": (200, {"schema": json.dumps(SCHEMA)}),
    "/schemas/ids/2": (404, {"error_code": 40403, "message": "Schema not found"}),
    "/schemas/ids/3": (401, {"error_code": 401, "message": "Unauthorized"}),
    "/schemas/ids/4": (500, {"error_code": 50001, "message": "Error in the backend"}),
    "/schemas/ids/5": (200, {"schema": "syntax = 'proto3';", "schemaType": "PROTOBUF"}),
}


class Registry(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        status, body = ANSWERS.get(self.path.split("?")[0], (404, {"error_code": 40403}))
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def registry() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Registry)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_registered_schema_is_returned(registry: str) -> None:
    assert registry_lookup(registry)(1) == SCHEMA


@pytest.mark.parametrize(
    ("schema_id", "error", "words"),
    [
        (2, LookupError, "has no schema with id 2"),
        (3, ConfigurationError, "refused access"),
        (4, TransientError, "failed"),
        (5, LookupError, "PROTOBUF, not AVRO"),
    ],
)
def test_each_registry_answer_becomes_the_right_error(
    registry: str, schema_id: int, error: type[Exception], words: str
) -> None:
    with pytest.raises(error, match=words):
        registry_lookup(registry)(schema_id)


def test_an_unreachable_registry_is_transient() -> None:
    with pytest.raises(TransientError, match=r"unreachable|failed"):
        registry_lookup(f"http://127.0.0.1:{free_port()}")(1)
