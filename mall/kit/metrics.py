"""Prometheus metrics of one node, summed over its uvicorn workers.

`mall serve` runs several worker processes; a scrape lands on one of them. So that it
sees the whole node, every worker writes its counts to memory-mapped files in one folder
(prometheus-client's multiprocess mode, chosen by `PROMETHEUS_MULTIPROC_DIR` before
`prometheus_client` is first imported) and a scrape sums the files of every worker,
living or dead (a counter of a worker that died still counted its requests). Without the
folder (tests, an app built in-process) the process's own registry is read."""

from __future__ import annotations

import atexit
import os
from pathlib import Path

ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare_dir(data_dir: Path) -> Path:
    """Called by `mall serve` before any worker starts: the folder the workers write to,
    emptied (files of a previous run would be summed in). An operator's own
    PROMETHEUS_MULTIPROC_DIR is honoured, and only its metric files are removed."""
    given = os.environ.get(ENV)
    folder = Path(given) if given else data_dir / "metrics"
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.db"):
        old.unlink(missing_ok=True)
    os.environ[ENV] = str(folder.resolve())
    return folder


def multiprocess() -> bool:
    """True when this process writes its metrics to the shared folder."""
    from prometheus_client import values

    return values.ValueClass is not values.MutexValue


def latest(registry: object) -> bytes:
    """The Prometheus text of the node: the sum over every worker's files, or `registry`
    when this process is not in multiprocess mode."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    if not multiprocess():
        return generate_latest(registry)  # type: ignore[arg-type]
    # a fresh registry per scrape, as prometheus-client documents for multiprocess mode
    summed = CollectorRegistry()
    MultiProcessCollector(summed)
    return generate_latest(summed)


def _mark_dead(pid: int) -> None:
    from prometheus_client.multiprocess import mark_process_dead

    if os.environ.get(ENV):
        mark_process_dead(pid)  # drops its live-gauge files; counters keep their counts


def register_worker() -> None:
    """In each worker (at app start): mark it dead on a clean exit."""
    if os.environ.get(ENV) and multiprocess():
        atexit.register(_mark_dead, os.getpid())


register_worker()  # imported by mall.app in every worker
