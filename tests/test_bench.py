"""`mall bench`: its options, its parsing of wrk's report, the bare reference app, and
(where wrk is installed) one very short run against the bare app and mall."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest

from mall import bench, bench_bare

WRK_OUT = """Running 1s test @ http://127.0.0.1:4242/
  2 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.10ms    1.00ms  30.00ms   90.00%
  Latency Distribution
     50%    1.50ms
     75%    2.00ms
     90%    3.00ms
     99%    1.20s
  2000 requests in 2.00s, 300.00KB read
  Socket errors: connect 0, read 2, write 0, timeout 3
  Non-2xx or 3xx responses: 7
Requests/sec:   1000.00
status 200 1993
status 409 5
status 500 2
result won 30
result rate_limited 1963
"""


def test_connections_take_several_levels() -> None:
    args = bench.build_parser().parse_args(
        ["--connections", "64,256", "--workers", "2", "--seconds", "3"]
    )
    assert args.connections == [64, 256]
    assert args.workers == 2 and args.seconds == 3
    assert bench.build_parser().parse_args([]).connections == [64, 256]
    assert bench.build_parser().parse_args(["--connections", "8"]).connections == [8]


@pytest.mark.parametrize("bad", ["", "64,x", "0", "64,20000"])
def test_bad_connections_are_refused(bad: str) -> None:
    with pytest.raises(SystemExit):
        bench.build_parser().parse_args(["--connections", bad])


def test_database_and_redis_urls_parse() -> None:
    args = bench.build_parser().parse_args(
        [
            "--database-url",
            "postgres://postgres:secret@127.0.0.1:5432/bench",
            "--redis-url",
            "redis://127.0.0.1:7000/0",
        ]
    )
    assert args.database_url == "postgres://postgres:secret@127.0.0.1:5432/bench"
    assert args.redis_url == "redis://127.0.0.1:7000/0"


@pytest.mark.parametrize(
    "url",
    [
        "postgres://postgres:secret@127.0.0.1:5432/bench",
        "postgres://postgres@localhost/bench",
        "redis://127.0.0.1:6379/0",
        "redis://[::1]:6379",
        "unix:///tmp/redis.sock",
        "sqlite:///tmp/bench.sqlite3",
    ],
)
def test_local_targets_are_accepted(url: str) -> None:
    bench.check_local(url)


@pytest.mark.parametrize(
    "url",
    [
        "postgres://postgres:secret@db.example.com:5432/mall",
        "redis://10.0.0.5:6379/0",
        "redis://127.0.0.1.example.com:6379",
    ],
)
def test_remote_targets_are_refused_without_the_password(url: str) -> None:
    with pytest.raises(ValueError) as e:
        bench.check_local(url)
    assert "secret" not in str(e.value)


def test_wrk_report_is_parsed() -> None:
    result = bench.parse_wrk("x", WRK_OUT)
    assert result.rate == 1000.0
    assert result.p50_ms == 1.5 and result.p99_ms == 1200.0
    assert result.statuses == {200: 1993, 409: 5, 500: 2}
    assert result.non_2xx == 7 and result.server_errors == 2
    assert result.socket_errors == 5
    assert result.results == {"won": 30, "rate_limited": 1963}
    bare = bench.Result("bare", 4000.0, 0.5, 600.0, {200: 8000})
    row = result.row(bare)
    assert "| 0.25 |" in row  # requests/s ratio to the bare app
    assert "| 2.00 |" in row  # p99 ratio
    assert "| 0.67 |" in row  # the tail's shape: (1200 / 1.5) over (600 / 0.5)
    assert row.count("|") == bench.TABLE_HEAD.splitlines()[1].count("|")
    assert "won: 30" in row


def test_lag_in_seconds_of_traffic() -> None:
    lag = bench.Lag("wins", 256, 10.0, 50_000, 12_000, 3.5, 30)
    assert lag.win_rate == 5000.0
    assert lag.max_backlog_s == 2.4
    assert "| 3.5 |" in lag.row(120)
    stuck = bench.Lag("wins", 256, 10.0, 50_000, 12_000, None, 30)
    assert "NOT EMPTY" in stuck.row(120)


async def test_the_bare_app_says_ok() -> None:
    transport = httpx.ASGITransport(app=bench_bare.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bare") as client:
        r = await client.get("/")
    assert r.status_code == 200 and r.json() == {"status": "ok"}


@pytest.mark.skipif(
    shutil.which("wrk") is None, reason="wrk is not installed (apt-get install wrk)"
)
def test_a_very_short_run(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # its own SQLite and embedded Redis, never the test suite's
    for name in ("MALL_DATABASE_URL", "MALL_REDIS_URL", "MALL_REDIS_CLUSTER"):
        monkeypatch.delenv(name, raising=False)
    code = bench.main(
        ["--seconds", "1", "--connections", "2", "--members", "2", "--drain-wait", "30"]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "### 2 connections" in out
    lines = [line for line in out.splitlines() if line.startswith("| ")]
    for name in ("winning item", "points-mall redeem", "blind-box draw", "/healthz"):
        row = next(line for line in lines if name in line)
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert float(cells[1].replace(",", "")) > 0, row  # mall answered
        assert float(cells[2].replace(",", "")) > 0, row  # so did the bare app
    # the answers with an underscore are counted too (the wrk script's pattern)
    lua = next(line for line in lines if "decided in Lua" in line and "200:" in line)
    assert "limit_reached: " in lua, lua
    # two members tap hundreds of times a second: the bench lifts the per-member rate
    # limit, so the winning burst measures wins, not cheap `rate_limited` answers
    wins = next(line for line in lines if "winning item" in line and "200:" in line)
    assert "won: " in wins and "rate_limited" not in wins, wins
    lag = next(line for line in lines if "winning item" in line and "| 2 |" in line)
    assert "NOT EMPTY" not in lag
    assert "seckill reconciliation: OK" in out


def test_the_worker_logs_warnings_are_summed_up(tmp_path: Path) -> None:
    log_file = tmp_path / "worker.log"
    assert bench.worker_warnings(log_file) == "worker log: not found"
    log_file.write_text(
        "2026-12-01 09:35:54,523 INFO mall.seckill: seckill reconcile item 3 OK\n"
        "2026-12-01 09:36:01,100 WARNING mall.pointsmall: pointsmall item 7: batch of 500 "
        "failed (boom); one by one\n"
        "2026-12-01 09:36:02,200 ERROR mall.kit.stock: pointsmall item 7: a batch of 500 "
        "entries not persisted\n"
        "Traceback (most recent call last):\n"
    )
    summary = bench.worker_warnings(log_file)
    assert summary.startswith("worker log: 2 warnings or errors, the first 2:")
    assert "batch of 500 failed" in summary and "not persisted" in summary
    assert "reconcile" not in summary
    log_file.write_text("2026-12-01 09:35:54,523 INFO mall.seckill: all good\n")
    assert bench.worker_warnings(log_file) == "worker log: no warnings or errors"
