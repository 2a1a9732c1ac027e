"""Campaigns: a subscribe message or a gift pack run to a segment within the monthly
touch cap. One runner at a time per campaign (a Redis lease); each recipient row is
claimed (pending -> sending) before anything is sent, so only one runner sends to a member."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from tortoise.functions import Count
from tortoise.transactions import in_transaction

from mall.audit import service as audit_service
from mall.audit.service import Actor
from mall.config import get_settings
from mall.coupons import service as coupons_service
from mall.errors import MallError
from mall.kit import clock
from mall.kit.pagination import cursor_page
from mall.members.models import Member
from mall.redis import get_redis
from mall.segments.evaluation import (
    _BATCH,
    _LEASE_SECONDS,
    CAMPAIGN_NOT_FOUND,
    CAMPAIGN_PACK_INACTIVE,
    CAMPAIGN_TOUCH_KIND,
    OUTCOMES,
    SEGMENT_EMPTY,
    SEGMENT_INACTIVE,
    count_segment,
    get_segment,
)
from mall.segments.models import Campaign, CampaignRecipient
from mall.segments.schemas import (
    CampaignIn,
)
from mall.touch import service as touch_service
from mall.wechat import client as wechat_client

log = logging.getLogger("mall.segments")


# --- campaigns -------------------------------------------------------------------


async def start_campaign(
    actor: Actor | None, segment_id: int, body: CampaignIn, *, request_key: str | None
) -> Campaign:
    """Snapshot the segment's members as recipients and run the campaign: inline when
    small, else queued for the campaign job. A request key already used returns (and
    resumes) the same campaign, so a retry never sends twice."""
    full_key = f"{segment_id}:{request_key}"[:191] if request_key else None
    if full_key is not None:
        existing = await Campaign.get_or_none(request_key=full_key)
        if existing is not None:
            if existing.status != "done" and existing.members <= _inline_max():
                await run_campaign(existing.id)
            return await get_campaign(existing.id)
    segment = await get_segment(segment_id)
    if not segment.active:
        raise SEGMENT_INACTIVE()
    payload: dict[str, Any]
    if body.kind == "gift_pack":
        assert body.gift_pack_id is not None
        pack = await coupons_service.get_pack(body.gift_pack_id)
        if not pack.active:
            raise CAMPAIGN_PACK_INACTIVE(gift_pack_id=pack.id)
        payload = {"gift_pack_id": pack.id}
    else:
        payload = {"template_id": body.template_id, "data": body.data, "page": body.page}
    ids = await count_segment(segment)
    if not ids:
        raise SEGMENT_EMPTY()
    async with in_transaction():
        campaign = await Campaign.create(
            segment_id=segment.id,
            kind=body.kind,
            payload=payload,
            request_key=full_key,
            members=len(ids),
            staff_id=actor.id if actor else None,
            created_at=clock.now(),
        )
        for start in range(0, len(ids), 1000):
            await CampaignRecipient.bulk_create(
                [
                    CampaignRecipient(campaign_id=campaign.id, member_id=m)
                    for m in ids[start:][:1000]
                ]
            )
        await audit_service.record(
            actor,
            "segment.campaign",
            f"segment_campaign:{campaign.id}",
            segment_id=segment.id,
            kind=body.kind,
            members=len(ids),
            **payload,
        )
    if len(ids) <= _inline_max():
        await run_campaign(campaign.id)
    return await get_campaign(campaign.id)


def _inline_max() -> int:
    return get_settings().segments_inline_campaign_max


async def get_campaign(campaign_id: int) -> Campaign:
    campaign = await Campaign.get_or_none(id=campaign_id)
    if campaign is None:
        raise CAMPAIGN_NOT_FOUND()
    return campaign


async def list_campaigns(segment_id: int) -> list[Campaign]:
    return await Campaign.filter(segment_id=segment_id).order_by("-id")


def _lease_key(campaign_id: int) -> str:
    return f"segments:campaign:{campaign_id}:runner"


async def run_campaign(campaign_id: int) -> bool:
    """Handle every pending recipient; False if another runner holds the campaign."""
    redis = get_redis()
    lease = _lease_key(campaign_id)
    if not await redis.set(lease, "1", nx=True, ex=_LEASE_SECONDS):
        return False
    try:
        campaign = await get_campaign(campaign_id)
        if campaign.status == "done":
            return True
        await Campaign.filter(id=campaign_id, status="queued").update(
            status="running", started_at=clock.now()
        )
        pack = None
        if campaign.kind == "gift_pack":
            pack = await coupons_service.get_pack(int(campaign.payload["gift_pack_id"]))
        while True:
            batch = (
                await CampaignRecipient.filter(campaign_id=campaign_id, status="pending")
                .order_by("id")
                .limit(_BATCH)
            )
            if not batch:
                break
            await _deliver_batch(campaign, batch, pack)
            await redis.expire(lease, _LEASE_SECONDS)
            await _recount(campaign_id)
        await _recount(campaign_id, done=True)
        return True
    finally:
        await redis.delete(lease)


async def _recount(campaign_id: int, *, done: bool = False) -> None:
    rows = (
        await CampaignRecipient.filter(campaign_id=campaign_id)
        .annotate(n=Count("id"))
        .group_by("status")
        .values("status", "n")
    )
    counts = {str(r["status"]): int(r["n"]) for r in rows}
    changes: dict[str, Any] = {name: counts.get(name, 0) for name in OUTCOMES}
    if done:
        changes.update(status="done", finished_at=clock.now())
    await Campaign.filter(id=campaign_id).update(**changes)


async def _deliver_batch(
    campaign: Campaign, batch: list[CampaignRecipient], pack: Any | None
) -> None:
    openids: dict[int, str] = {
        int(m): str(o)
        for m, o in await Member.filter(id__in=[r.member_id for r in batch]).values_list(
            "id", "openid"
        )
    }
    if campaign.kind == "gift_pack":
        for recipient in batch:  # packs write coupons in transactions: one at a time
            await _handle(campaign, recipient, openids, pack)
        return
    limit = asyncio.Semaphore(max(1, get_settings().segments_campaign_concurrency))

    async def one(recipient: CampaignRecipient) -> None:
        async with limit:
            await _handle(campaign, recipient, openids, pack)

    await asyncio.gather(*(one(r) for r in batch))


async def _handle(
    campaign: Campaign, recipient: CampaignRecipient, openids: dict[int, str], pack: Any | None
) -> None:
    # claim the row first: whoever wins pending -> sending is the only one who sends
    claimed = await CampaignRecipient.filter(id=recipient.id, status="pending").update(
        status="sending", updated_at=clock.now()
    )
    if not claimed:
        return
    try:
        if campaign.kind == "gift_pack":
            status, error = await _give_pack(campaign, recipient.member_id, pack)
        else:
            status, error = await _send_message(
                campaign, recipient.member_id, openids.get(recipient.member_id)
            )
    except Exception as exc:  # never leave the row claimed without an outcome
        log.exception("campaign %s member %s failed", campaign.id, recipient.member_id)
        status, error = "failed", type(exc).__name__[:64]
    await CampaignRecipient.filter(id=recipient.id).update(
        status=status, error=error, updated_at=clock.now()
    )


async def _send_message(campaign: Campaign, member_id: int, openid: str | None) -> tuple[str, str]:
    template_id = str(campaign.payload["template_id"])
    if openid is None:
        return "failed", "MEMBER_NOT_FOUND"
    if not await touch_service.use_grant(member_id, template_id):
        return "no_grant", ""
    reference = f"campaign:{campaign.id}"
    if not await touch_service.try_touch(member_id, CAMPAIGN_TOUCH_KIND, reference):
        await touch_service.give_back_grant(member_id, template_id)
        return "skipped_by_cap", ""
    try:
        await wechat_client.send_subscribe_message(
            openid,
            template_id,
            {str(k): str(v) for k, v in dict(campaign.payload.get("data") or {}).items()},
            page=campaign.payload.get("page") or None,
        )
    except MallError as exc:
        await touch_service.give_back_touch(member_id, CAMPAIGN_TOUCH_KIND, reference)
        if exc.code == "WECHAT_USER_REFUSED":
            await touch_service.refused(member_id, template_id)
            return "refused", exc.code
        await touch_service.give_back_grant(member_id, template_id)
        log.warning("campaign %s send failed member=%s code=%s", campaign.id, member_id, exc.code)
        return "failed", exc.code
    return "sent", ""


async def _give_pack(campaign: Campaign, member_id: int, pack: Any) -> tuple[str, str]:
    reference = f"campaign:{campaign.id}"
    if not await touch_service.try_touch(member_id, CAMPAIGN_TOUCH_KIND, reference):
        return "skipped_by_cap", ""
    try:
        issue = await coupons_service.issue_pack(
            pack,
            member_id,
            f"campaign:{campaign.id}:{member_id}",
            source="campaign",
            staff_id=campaign.staff_id,
        )
    except MallError as exc:
        await touch_service.give_back_touch(member_id, CAMPAIGN_TOUCH_KIND, reference)
        return "failed", exc.code
    except BaseException:
        await touch_service.give_back_touch(member_id, CAMPAIGN_TOUCH_KIND, reference)
        raise
    if issue is None:  # given under this key before: this touch is not a new one
        await touch_service.give_back_touch(member_id, CAMPAIGN_TOUCH_KIND, reference)
        return "sent", "ALREADY_ISSUED"
    if not issue.coupon_ids:  # every template sold out or ended: nothing reached them
        await touch_service.give_back_touch(member_id, CAMPAIGN_TOUCH_KIND, reference)
        return "failed", "PACK_EMPTY"
    return "sent", ""


async def run_queued_campaigns() -> int:
    """The campaign job: run queued campaigns and resume ones whose runner died."""
    ran = 0
    unfinished: list[Any] = (
        await Campaign.filter(status__in=("queued", "running"))
        .order_by("id")
        .values_list("id", flat=True)
    )
    for campaign_id in unfinished:
        if await run_campaign(int(campaign_id)):
            ran += 1
    return ran


async def recipients_page(
    campaign_id: int, status: str | None, cursor: str | None, size: int
) -> tuple[list[CampaignRecipient], str | None]:
    query = CampaignRecipient.filter(campaign_id=campaign_id)
    if status:
        query = query.filter(status=status)
    return await cursor_page(query, cursor, size)
