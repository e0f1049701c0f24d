"""The local AWS endpoint: moto's server, with DynamoDB writes made atomic as they are on AWS.

moto's server answers requests on many threads, and its DynamoDB backend checks a condition
expression and then applies the update as two steps with no lock between them. Two
concurrent conditional writes can therefore both pass a check that only one of them should
(two requests both reserving the last dollar of a budget, two partition jobs both taking the
same day's lease). On AWS each conditional write is atomic. This module serves the same moto
application, but runs DynamoDB operations one at a time, so conditional writes behave here as
they do there. Every other service keeps moto's concurrency.

Run it like moto's own server: `python -m local.aws_endpoint -H 127.0.0.1 -p 4566`.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Sequence
from types import FrameType
from typing import Any

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import run_simple

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

# DynamoDB's JSON protocol names the operation in this header ("DynamoDB_20120810.UpdateItem").
_DYNAMODB_TARGET = "DynamoDB_"


class SerializedDynamoDB:
    """WSGI middleware: DynamoDB requests run one at a time; everything else passes through."""

    def __init__(self, app: WsgiApp) -> None:
        self._app = app
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if not environ.get("HTTP_X_AMZ_TARGET", "").startswith(_DYNAMODB_TARGET):
            return self._app(environ, start_response)
        with self._lock:
            # The body is produced inside the lock: the response iterable may still be lazy.
            return list(self._app(environ, start_response))


def make_app() -> WsgiApp:
    """moto's dispatcher application behind the DynamoDB serializer."""
    return SerializedDynamoDB(DomainDispatcherApplication(create_backend_app))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local.aws_endpoint", description=__doc__)
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=4566)
    args = parser.parse_args(argv)
    # moto builds some URLs it hands out (queue URLs, for one) from this, as its own server does.
    os.environ.setdefault("MOTO_PORT", str(args.port))

    def stop(_signum: int, _frame: FrameType | None) -> None:
        sys.exit(0)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    run_simple(
        args.host,
        args.port,
        make_app(),
        threaded=True,
        request_handler=MotoRequestHandler,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
