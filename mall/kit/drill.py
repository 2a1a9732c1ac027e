"""The harness the `mall drill ...` rehearsals share: the local-host guard, the admin
login, dev-login member tokens, and the bursts (a small keep-alive asyncio HTTP/1.1
client, httpx costing too much CPU to load a server on the same box; or `wrk`). Each
domain's drill keeps only its own setup and verdicts."""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


@dataclass
class Burst:
    name: str
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    results: Counter[str] = field(default_factory=Counter)
    wins_by_member: Counter[int] = field(default_factory=Counter)
    p50_ms: float | None = None
    p99_ms: float | None = None
    rate: float = 0.0

    def finish(self) -> None:
        total = sum(self.statuses.values())
        self.rate = total / self.seconds if self.seconds else 0.0
        if self.latencies:
            ordered = sorted(self.latencies)
            self.p50_ms = statistics.median(ordered) * 1000
            self.p99_ms = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000

    def line(self) -> str:
        p50 = f"{self.p50_ms:.1f}" if self.p50_ms is not None else "?"
        p99 = f"{self.p99_ms:.1f}" if self.p99_ms is not None else "?"
        return (
            f"{self.name}: {sum(self.statuses.values())} requests in {self.seconds:.2f}s = "
            f"{self.rate:.0f}/s, p50 {p50} ms, p99 {p99} ms, "
            f"status {dict(self.statuses)}, results {dict(self.results)}"
        )


def local_target(base_url: str) -> tuple[str, int] | None:
    """(host, port) of a plain-http 127.0.0.1/localhost URL; anything else is refused
    (printed, None): load only ever targets this machine."""
    url = urlsplit(base_url)
    host = url.hostname or ""
    if url.scheme != "http" or host not in LOCAL_HOSTS:
        print(f"refusing to drill {base_url!r}: only http://127.0.0.1 or localhost")
        return None
    return host, url.port or 80


def admin_credentials(args: argparse.Namespace) -> tuple[str, str]:
    """(user, password) from --admin-user/--admin-password, MALL_DRILL_ADMIN_*, or the
    password file `mall serve --demo` writes."""
    user = args.admin_user or os.environ.get("MALL_DRILL_ADMIN_USER") or "admin"
    password = args.admin_password or os.environ.get("MALL_DRILL_ADMIN_PASSWORD")
    if not password:
        data_dir = Path(os.environ.get("MALL_DATA_DIR", ".mall-data"))
        pw_file = data_dir / "dev-admin-password.txt"
        if pw_file.exists():
            password = pw_file.read_text().strip()
    if not password:
        raise SystemExit(
            "no admin password: pass --admin-password, set MALL_DRILL_ADMIN_PASSWORD, "
            "or run `mall serve --demo` (it writes .mall-data/dev-admin-password.txt)"
        )
    return user, password


async def admin_headers(
    client: httpx.AsyncClient, user: str, password: str
) -> dict[str, str] | None:
    """The admin's Authorization header, or None (printed) if the login fails."""
    r = await client.post("/api/admin/v1/login", json={"username": user, "password": password})
    if r.status_code != 200:
        print(f"admin login failed ({r.status_code}): {r.text[:200]}")
        return None
    return {"Authorization": f"Bearer {r.json()['token']}"}


async def issue_tokens(client: httpx.AsyncClient, run: str, members: int) -> list[str]:
    """Access tokens of `members` dev logins (`dev:<run>-<i>`)."""
    tokens: list[str] = [""] * members
    semaphore = asyncio.Semaphore(32)

    async def login(i: int) -> None:
        async with semaphore:
            r = await client.post("/api/v1/auth/wechat-login", json={"code": f"dev:{run}-{i}"})
            if r.status_code == 429:
                raise SystemExit(
                    "dev login was rate-limited: the service allows "
                    "MALL_MEMBER_LOGIN_IP_MAX_ATTEMPTS logins per address a minute (60); "
                    f"start it with MALL_MEMBER_LOGIN_IP_MAX_ATTEMPTS={members} for a drill, "
                    "or pass fewer --members"
                )
            if r.status_code != 200:
                raise SystemExit(f"dev login failed ({r.status_code}): {r.text[:200]}")
            tokens[i] = r.json()["token"]

    await asyncio.gather(*(login(i) for i in range(members)))
    return tokens


@dataclass(frozen=True)
class Target:
    """What a drill runs against: the service on this machine, an HTTP client on it, and
    the admin's Authorization header."""

    host: str
    port: int
    client: httpx.AsyncClient
    admin: dict[str, str]


async def run_drill(args: argparse.Namespace, drill: Callable[[Target], Awaitable[int]]) -> int:
    """Refuse any host but this machine, log in as the admin (--admin-user/--admin-password),
    then run `drill`; 2 if refused or the login fails, else the drill's exit code."""
    target = local_target(args.base_url)
    if target is None:
        return 2
    host, port = target
    user, password = admin_credentials(args)
    async with httpx.AsyncClient(base_url=args.base_url, timeout=30) as client:
        admin = await admin_headers(client, user, password)
        if admin is None:
            return 2
        return await drill(Target(host, port, client, admin))


def bearer_requests(method: str, path: str, host: str, tokens: list[str], n: int) -> list[bytes]:
    """n bodiless HTTP/1.1 requests, the tokens taken in turn."""
    return [
        (
            f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n"
            f"Authorization: Bearer {tokens[i % len(tokens)]}\r\nContent-Length: 0\r\n\r\n"
        ).encode()
        for i in range(n)
    ]


# what a burst does with each answer: (burst, owner of the request, status, body)
OnAnswer = Callable[[Burst, int, int, bytes], None]

_RESULT = re.compile(rb'"result":"([a-z_]+)"')


def count_results(burst: Burst, owner: int, _status: int, body: bytes) -> None:
    """The default: count each answer's `"result"`, and the wins by member."""
    found = _RESULT.search(body)
    if found:
        result = found.group(1).decode()
        burst.results[result] += 1
        if result == "won":
            burst.wins_by_member[owner] += 1


async def _connection(
    host: str, port: int, requests: list[bytes], owners: list[int], cursor: list[int],
    burst: Burst, on_answer: OnAnswer,
) -> None:  # fmt: skip
    """One keep-alive connection taking requests off the shared list."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while True:
            index = cursor[0]
            if index >= len(requests):
                return
            cursor[0] = index + 1
            started = time.perf_counter()
            writer.write(requests[index])
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _sep, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip())
            body = await reader.readexactly(length) if length else b""
            burst.latencies.append(time.perf_counter() - started)
            burst.statuses[status] += 1
            on_answer(burst, owners[index], status, body)
    finally:
        writer.close()


async def asyncio_burst(
    name: str, host: str, port: int, requests: list[bytes], owners: list[int], concurrency: int,
    on_answer: OnAnswer = count_results,
) -> Burst:  # fmt: skip
    """Send every request over `concurrency` keep-alive connections; owners[i] is the
    member (index) request i is sent for."""
    burst = Burst(name)
    cursor = [0]
    started = time.perf_counter()
    await asyncio.gather(
        *(
            _connection(host, port, requests, owners, cursor, burst, on_answer)
            for _ in range(min(concurrency, len(requests)))
        )
    )
    burst.seconds = time.perf_counter() - started
    burst.finish()
    return burst


_WRK_LUA = """
local tokens = {}
for line in io.lines(os.getenv("DRILL_TOKENS")) do tokens[#tokens + 1] = line end
local i = 0
request = function()
  i = i + 1
  local t = tokens[(i % #tokens) + 1]
  return wrk.format(os.getenv("DRILL_METHOD"), os.getenv("DRILL_PATH"),
    {["Authorization"] = "Bearer " .. t, ["Content-Length"] = "0"})
end
"""


def wrk_burst(
    name: str, base_url: str, method: str, path: str, tokens: list[str], concurrency: int,
    seconds: int,
) -> Burst:  # fmt: skip
    """wrk is duration based; wins are counted on the server side afterwards."""
    burst = Burst(name)
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "drill.lua"
        script.write_text(_WRK_LUA)
        token_file = Path(tmp) / "tokens.txt"
        token_file.write_text("\n".join(tokens) + "\n")
        env = {**os.environ, "DRILL_TOKENS": str(token_file), "DRILL_METHOD": method}
        env["DRILL_PATH"] = path
        out = subprocess.run(
            ["wrk", "-t2", f"-c{concurrency}", f"-d{seconds}s", "--latency", "-s", str(script),
             base_url + path],
            capture_output=True, text=True, env=env, check=True,
        ).stdout  # fmt: skip
    burst.seconds = float(seconds)
    total = re.search(r"(\d+) requests in", out)
    burst.statuses[200] = int(total.group(1)) if total else 0
    burst.finish()
    for label, attr in (("50%", "p50_ms"), ("99%", "p99_ms")):
        found = re.search(rf"{re.escape(label)}\s+([\d.]+)(us|ms|s)", out)
        if found:
            value = float(found.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[found.group(2)]
            setattr(burst, attr, value)
    return burst
