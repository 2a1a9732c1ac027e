"""One `wrk` burst for `mall bench`: the Lua script (rotating member tokens, a unique
Idempotency-Key per request, status counts), running it and parsing its output into a
Result; and the persistence lag figures. Load only ever goes to 127.0.0.1."""

from __future__ import annotations

import os
import re
import secrets
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict

HOST = "127.0.0.1"
# One request per call: a rotating member token, a unique Idempotency-Key, and status
# counts reported by every thread at the end.
_WRK_LUA = r"""
local tokens = {}
for line in io.lines(os.getenv("BENCH_TOKENS")) do tokens[#tokens + 1] = line end
local method, path = os.getenv("BENCH_METHOD"), os.getenv("BENCH_PATH")
local body = os.getenv("BENCH_BODY")
-- unique per burst, so a key never replays an earlier burst's answer
local burst = os.getenv("BENCH_BURST")
local threads = {}
local n = 0
function setup(thread)
  n = n + 1
  thread:set("tid", n)
  table.insert(threads, thread)
end
function init(args)
  i = 0
  codes = {}
  results = {}
end
function request()
  i = i + 1
  local headers = {["Content-Type"] = "application/json"}
  if #tokens > 0 then
    headers["Authorization"] = "Bearer " .. tokens[((i * 7 + tid) % #tokens) + 1]
  end
  if os.getenv("BENCH_KEYS") == "1" then headers["Idempotency-Key"] = burst .. tid .. "-" .. i end
  return wrk.format(method, path, headers, body ~= "" and body or nil)
end
function response(status, headers, body)
  codes[status] = (codes[status] or 0) + 1
  -- [%w_]: the answers limit_reached, sold_out and rate_limited have an underscore
  local result = body and string.match(body, '"result":%s*"([%w_]+)"')
  if result then results[result] = (results[result] or 0) + 1 end
end
function done(summary, latency, requests)
  local merged = {}
  for _, t in ipairs(threads) do
    local c = t:get("codes")
    for k, v in pairs(c) do merged[k] = (merged[k] or 0) + v end
  end
  for k, v in pairs(merged) do io.write(string.format("status %d %d\n", k, v)) end
  local answers = {}
  for _, t in ipairs(threads) do
    for k, v in pairs(t:get("results")) do answers[k] = (answers[k] or 0) + v end
  end
  for k, v in pairs(answers) do io.write(string.format("result %s %d\n", k, v)) end
end
"""


@dataclass
class Result:
    name: str
    rate: float
    p50_ms: float
    p99_ms: float
    statuses: dict[int, int]
    socket_errors: int = 0  # connect/read/write errors and timeouts, as wrk counts them
    results: dict[str, int] = field(default_factory=dict)  # seckill's `result` answers

    @property
    def non_2xx(self) -> int:
        return sum(n for code, n in self.statuses.items() if not 200 <= code < 300)

    @property
    def server_errors(self) -> int:
        return sum(n for code, n in self.statuses.items() if code >= 500)

    def tail_ratio(self, bare: Result) -> float:
        """The tail's shape (p99 / p50) over the bare burst's. wrk keeps each connection
        busy (a closed loop), so latency is connections / requests per second: a path at
        0.4x the bare app's rate has about 2.5x its latencies, p50 and p99 alike, from
        the rate alone. This column is what the path adds to the tail beyond its rate
        (1.0: the same shape as the bare app's)."""
        if min(self.p50_ms, bare.p50_ms, bare.p99_ms) <= 0:
            return float("nan")
        return (self.p99_ms / self.p50_ms) / (bare.p99_ms / bare.p50_ms)

    def row(self, bare: Result) -> str:
        codes = ", ".join(f"{k}: {v}" for k, v in sorted(self.statuses.items()))
        if self.results:
            codes += "; " + ", ".join(f"{k}: {v}" for k, v in sorted(self.results.items()))
        ratio = self.rate / (bare.rate or 1.0)
        p99_ratio = self.p99_ms / bare.p99_ms if bare.p99_ms > 0 else float("nan")
        return (
            f"| {self.name} | {self.rate:,.0f} | {bare.rate:,.0f} | {ratio:.2f} | "
            f"{self.p50_ms:.1f} / {bare.p50_ms:.1f} | {self.p99_ms:.1f} / {bare.p99_ms:.1f} | "
            f"{p99_ratio:.2f} | {self.tail_ratio(bare):.2f} | "
            f"{self.non_2xx} | {self.server_errors} | "
            f"{self.socket_errors} / {bare.socket_errors} | {codes} |"
        )


TABLE_HEAD = (
    "| burst | req/s | paired bare req/s | ratio | p50 ms (bare) | p99 ms (bare) | "
    "p99 / bare p99 | tail (p99/p50) / bare's | non-2xx | 5xx | socket errors (bare) | "
    "statuses |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|"
)


@dataclass
class Lag:
    """Told-but-not-persisted seckill wins (the item's wins stream, which the worker
    trims after each commit) sampled during and after one burst."""

    name: str
    connections: int
    seconds: float  # the burst's length
    wins: int  # stock taken during the burst
    max_backlog: int  # most entries seen during the burst
    drain_s: float | None  # burst end to the first empty sample; None: not within the wait
    samples: int

    @property
    def win_rate(self) -> float:
        return self.wins / self.seconds if self.seconds > 0 else 0.0

    @property
    def max_backlog_s(self) -> float:
        """The largest backlog in seconds of this burst's win traffic."""
        return self.max_backlog / self.win_rate if self.win_rate else 0.0

    def row(self, wait: float) -> str:
        drain = f"{self.drain_s:.1f}" if self.drain_s is not None else f"> {wait:.0f} (NOT EMPTY)"
        return (
            f"| {self.name} | {self.connections} | {self.wins:,} | {self.win_rate:,.0f} | "
            f"{self.max_backlog:,} | {self.max_backlog_s:.2f} | {drain} |"
        )


LAG_HEAD = (
    "| burst | connections | decided | decided/s | max backlog (entries) | "
    "max backlog (s of traffic) | empty after burst (s) |\n|---|---|---|---|---|---|---|"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _ms(text: str, label: str) -> float:
    found = re.search(rf"{re.escape(label)}\s+([\d.]+)(us|ms|s|m)\b", text)
    if not found:
        return float("nan")
    unit = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[found.group(2)]
    return float(found.group(1)) * unit


def parse_wrk(name: str, out: str) -> Result:
    """wrk's report (with --latency and the status lines of _WRK_LUA) as a Result."""
    total = re.search(r"(\d+) requests in ([\d.]+)(ms|s|m)", out)
    requests = int(total.group(1)) if total else 0
    duration = 1.0
    if total:
        duration = float(total.group(2)) * {"ms": 0.001, "s": 1.0, "m": 60.0}[total.group(3)]
    statuses = {int(k): int(v) for k, v in re.findall(r"^status (\d+) (\d+)$", out, re.M)}
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    socket_errors = sum(int(n) for n in errors.groups()) if errors else 0
    results = {k: int(v) for k, v in re.findall(r"^result (\w+) (\d+)$", out, re.M)}
    return Result(
        name, requests / (duration or 1.0), _ms(out, "50%"), _ms(out, "99%"), statuses,
        socket_errors, results,
    )  # fmt: skip


def wrk(
    name: str,
    port: int,
    method: str,
    path: str,
    tokens: list[str],
    *,
    body: str = "",
    keys: bool = True,
    connections: int,
    seconds: int,
) -> Result:
    if not (1 <= port <= 65535):
        raise ValueError(port)
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "bench.lua"
        script.write_text(_WRK_LUA)
        token_file = Path(tmp) / "tokens.txt"
        token_file.write_text("".join(t + "\n" for t in tokens))
        env = {
            **os.environ,
            "BENCH_TOKENS": str(token_file),
            "BENCH_METHOD": method,
            "BENCH_PATH": path,
            "BENCH_BODY": body,
            "BENCH_KEYS": "1" if keys else "0",
            "BENCH_BURST": f"b{secrets.token_hex(4)}-",
        }
        # wrk's default 2 s timeout would drop the slowest answers from the latency
        # figures (a p99 of "1.9 s" that is really more); a request slower than 30 s is
        # counted as a socket timeout instead
        threads = max(1, min(2, connections))
        args = [
            "wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout", "30s",
            "--latency", "-s", str(script),
        ]  # fmt: skip
        # load only ever goes to 127.0.0.1
        out = subprocess.run(
            [*args, f"http://{HOST}:{port}{path}"], capture_output=True, text=True, env=env
        ).stdout
    return parse_wrk(name, out)


class Run(TypedDict):
    connections: int
    seconds: int
