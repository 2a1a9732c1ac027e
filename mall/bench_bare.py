"""The reference of `mall bench`: a bare FastAPI hello app served exactly as `mall serve`
serves mall (mall/serving.py: the same server, settings and worker count).

`python -m mall.bench_bare --port N --workers W [--server granian]` serves it on
127.0.0.1. A hot path's
requests/s divided by this app's, measured in the same run, is the ratio that
docs/BENCHMARKS.md quotes: it cancels the machine and the server, leaving the cost of
mall's own code (middleware, auth, Redis, the database)."""

from __future__ import annotations

import argparse

from fastapi import FastAPI

app = FastAPI()


@app.get("/")
async def hello() -> dict[str, str]:
    return {"status": "ok"}


def main(argv: list[str] | None = None) -> int:
    from mall import serving

    parser = argparse.ArgumentParser(prog="python -m mall.bench_bare")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--server", choices=serving.SERVERS, default="uvicorn")
    args = parser.parse_args(argv)
    serving.run(
        "mall.bench_bare:app",
        factory=False,
        host="127.0.0.1",
        port=args.port,
        workers=args.workers,
        server=args.server,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
