"""The ASGI server under `mall serve` and under `mall bench`'s bare reference app, so
both always run the same way. uvicorn is the default; granian (a Rust HTTP server,
`pip install 'mall[granian]'`) is the option `--server granian` / MALL_SERVER=granian.

Both run with uvloop, no access log, and no proxy headers: the client address is
decided by mall.kit.clientip (MALL_TRUSTED_PROXIES) alone."""

from __future__ import annotations

from typing import Literal

from mall.config import UVICORN_OPTIONS, ConfigError

Server = Literal["uvicorn", "granian"]
SERVERS: tuple[Server, ...] = ("uvicorn", "granian")


def run(target: str, *, factory: bool, host: str, port: int, workers: int, server: Server) -> None:
    """Serve `target` ("module:attr") until SIGINT/SIGTERM, then return."""
    if server == "granian":
        try:
            from granian import Granian
            from granian.constants import Interfaces, Loops
        except ImportError as exc:
            hint = "pip install 'mall[granian]'"
            raise ConfigError(f"--server granian needs granian: {hint}") from exc
        Granian(
            target,
            address=host,
            port=port,
            interface=Interfaces.ASGI,  # with the lifespan protocol (startup, shutdown)
            workers=workers,
            loop=Loops.uvloop,
            log_access=False,
            factory=factory,
        ).serve()
        return
    import uvicorn

    try:
        uvicorn.run(
            target, factory=factory, host=host, port=port, workers=workers, **UVICORN_OPTIONS
        )
    except KeyboardInterrupt:
        pass  # uvicorn shut down gracefully, then re-raised the SIGINT/SIGTERM it caught
