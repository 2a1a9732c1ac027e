"""Segment jobs: refresh members' auto tags, run queued (or interrupted) campaigns."""

from __future__ import annotations

from tortoise.functions import Count

from mall.config import get_settings
from mall.kit.checks import CheckReport
from mall.kit.jobs import Job
from mall.segments import service
from mall.segments.models import Campaign, CampaignRecipient


async def refresh_auto_tags() -> tuple[int, int, int]:
    return await service.refresh_auto_tags()


async def run_campaigns() -> int:
    return await service.run_queued_campaigns()


_settings = get_settings()

JOBS = [
    Job("segments.auto_tags", _settings.segments_auto_tag_interval_seconds, refresh_auto_tags),
    Job("segments.campaigns", _settings.segments_campaign_interval_seconds, run_campaigns),
]


async def check_campaigns() -> CheckReport:
    """Finished campaigns' counts equal their recipients' outcomes; recipients left in
    `sending` (a runner died mid-send: not resent, outcome unknown) are listed."""
    report = CheckReport("campaigns")
    for campaign in await Campaign.filter(status="done").order_by("id"):
        rows = (
            await CampaignRecipient.filter(campaign_id=campaign.id)
            .annotate(n=Count("id"))
            .group_by("status")
            .values("status", "n")
        )
        counts = {str(r["status"]): int(r["n"]) for r in rows}
        for name in service.OUTCOMES:
            if counts.get(name, 0) != getattr(campaign, name):
                report.fail(
                    f"campaign {campaign.id}: {name}={getattr(campaign, name)} "
                    f"recipients={counts.get(name, 0)}"
                )
        if counts.get("sending"):
            report.lines.append(
                f"campaign {campaign.id}: {counts['sending']} recipients in an unknown state"
            )
    return report


CHECKS = {"campaigns": check_campaigns}
