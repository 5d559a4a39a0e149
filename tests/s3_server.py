"""A moto S3 server on 127.0.0.1, in the test process (no Docker, no network).

``moto.server.ThreadedMotoServer`` serves every moto backend over HTTP from a
daemon thread; ``port=0`` lets the OS pick a free port, which
``get_host_and_port()`` reports once the server is up.
"""

from __future__ import annotations

import logging

from moto.server import ThreadedMotoServer


class MotoS3Server:
    """``with MotoS3Server() as endpoint: ...`` or ``start()`` / ``stop()``."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self._server = ThreadedMotoServer(ip_address=host, port=port, verbose=False)
        self.endpoint_url: str | None = None

    def start(self) -> str:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one log line per request otherwise
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint_url = f"http://{host}:{port}"
        return self.endpoint_url

    def stop(self) -> None:
        self._server.stop()
        self.endpoint_url = None

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_moto_server(host: str = "127.0.0.1", port: int = 0) -> MotoS3Server:
    server = MotoS3Server(host, port)
    server.start()
    return server
