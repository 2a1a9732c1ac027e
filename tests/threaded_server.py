"""An ASGI app served by uvicorn on 127.0.0.1 (a free port) in a daemon thread: how the
tests run their fakes of WeChat's servers over real HTTP."""

from __future__ import annotations

import socket
import threading
from typing import Any

import uvicorn


class ThreadedServer:
    def __init__(self, app: Any, name: str) -> None:
        self.app = app
        self.name = name
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    def start(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=port,
            log_config=None,  # leave the tests' logging alone
            log_level="warning",
            access_log=False,  # request lines carry secrets and codes
            lifespan="off",
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name=self.name, daemon=True
        )
        self._thread.start()
        for _ in range(500):
            if self._server.started:
                break
            if not self._thread.is_alive():
                raise RuntimeError(f"{self.name} server failed to start")
            threading.Event().wait(0.01)
        else:
            raise RuntimeError(f"{self.name} server did not start in 5 s")
        self.url = f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=5)
