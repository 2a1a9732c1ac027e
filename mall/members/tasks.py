"""Housekeeping of login sessions: rows of lapsed and revoked sessions are kept a week
(for support questions and the reuse log), then deleted."""

from __future__ import annotations

import logging

from mall.kit.jobs import Job
from mall.members import service

log = logging.getLogger("mall.members")


async def prune_sessions_job() -> None:
    removed = await service.prune_sessions()
    if removed:
        log.info("pruned %s ended login sessions", removed)


JOBS: list[Job] = [Job("members.prune_sessions", 6 * 3600.0, prune_sessions_job)]
