"""Ops: segments (crowd packs), their live count, auto tags, and campaigns to a segment."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from mall.deps import AdminStaff, CurrentStaff, IdempotencyKey
from mall.kit import idempotency
from mall.kit.bounds import Cursor, Id, Limit
from mall.kit.pagination import Page
from mall.kit.text import SafeLine
from mall.segments import service
from mall.segments.models import Campaign
from mall.segments.schemas import (
    AutoTagCount,
    AutoTagRefreshOut,
    CampaignIn,
    CampaignOut,
    MemberBrief,
    PreviewIn,
    PreviewOut,
    RecipientOut,
    SegmentIn,
    SegmentOut,
    SegmentPatch,
)

router = APIRouter(tags=["admin: segments"])


@router.post("/segments/preview", response_model=PreviewOut)
async def preview(body: PreviewIn, _staff: CurrentStaff) -> PreviewOut:
    """How many members match these rules right now, and the newest few of them."""
    count, sample = await service.preview(body.rules, body.sample_size)
    return PreviewOut(count=count, sample=[MemberBrief.model_validate(m) for m in sample])


@router.get("/segments", response_model=list[SegmentOut])
async def list_segments(_staff: CurrentStaff, active: bool | None = None) -> list[SegmentOut]:
    """Every segment with its size when last counted (GET one to count it now)."""
    return [SegmentOut.model_validate(s) for s in await service.list_segments(active)]


@router.post("/segments", response_model=SegmentOut, status_code=201)
async def create_segment(body: SegmentIn, staff: CurrentStaff) -> SegmentOut:
    segment, _count = await service.create_segment(
        staff, name=body.name, description=body.description, rules=body.rules
    )
    return SegmentOut.model_validate(segment)


@router.get("/segments/auto-tags", response_model=list[AutoTagCount])
async def auto_tags(_staff: CurrentStaff) -> list[AutoTagCount]:
    """Auto tags (use them in rules as written here) and how many members carry each."""
    return [AutoTagCount(tag=t, members=n) for t, n in await service.auto_tag_counts()]


@router.post("/segments/auto-tags/refresh", response_model=AutoTagRefreshOut)
async def refresh_auto_tags(staff: AdminStaff) -> AutoTagRefreshOut:
    """Recompute auto tags now instead of waiting for the job (admin only; audited)."""
    added, removed, total = await service.refresh_auto_tags_now(staff)
    return AutoTagRefreshOut(added=added, removed=removed, total=total)


@router.get("/segments/members/{member_id}/auto-tags", response_model=list[str])
async def member_auto_tags(member_id: Id, _staff: CurrentStaff) -> list[str]:
    return await service.auto_tags_of(member_id)


@router.get("/segments/{segment_id}", response_model=SegmentOut)
async def get_segment(segment_id: Id, _staff: CurrentStaff) -> SegmentOut:
    """The segment, counted now."""
    segment = await service.get_segment(segment_id)
    await service.count_segment(segment)
    return SegmentOut.model_validate(segment)


@router.get("/segments/{segment_id}/members", response_model=PreviewOut)
async def segment_members(
    segment_id: Id, _staff: CurrentStaff, size: int = Query(default=20, ge=0, le=100)
) -> PreviewOut:
    segment = await service.get_segment(segment_id)
    count, sample = await service.preview(service.rules_of(segment), size)
    return PreviewOut(count=count, sample=[MemberBrief.model_validate(m) for m in sample])


@router.patch("/segments/{segment_id}", response_model=SegmentOut)
async def update_segment(segment_id: Id, body: SegmentPatch, staff: CurrentStaff) -> SegmentOut:
    changes = body.model_dump(exclude_unset=True, by_alias=True)
    if body.rules is not None:
        changes["rules"] = body.rules
    segment = await service.update_segment(staff, segment_id, changes)
    return SegmentOut.model_validate(segment)


@router.delete("/segments/{segment_id}", response_model=SegmentOut)
async def deactivate_segment(segment_id: Id, staff: CurrentStaff) -> SegmentOut:
    """Switch a segment off (its campaigns stay on record)."""
    segment = await service.update_segment(staff, segment_id, {"active": False})
    return SegmentOut.model_validate(segment)


@router.post(
    "/segments/{segment_id}/campaigns",
    response_model=CampaignOut,
    status_code=201,
    responses={202: {"model": CampaignOut, "description": "queued for the campaign job"}},
)
async def start_campaign(
    segment_id: Id, body: CampaignIn, staff: CurrentStaff, key: IdempotencyKey = None
) -> JSONResponse:
    """Send a subscribe message or give a gift pack to every member of the segment now.
    Each member is touched at most once per campaign and within the monthly touch cap
    (shared with coupon reminders and every other one-to-one message); a message goes
    only to members who accepted its template. Small segments are sent within the request
    (201 with the counts); big ones are queued (202; poll the campaign). Audited.
    With an `Idempotency-Key`, a retry returns the same campaign and sends nothing twice."""

    async def work() -> CampaignOut:
        campaign = await service.start_campaign(staff, segment_id, body, request_key=key)
        return CampaignOut.model_validate(campaign)

    result = await idempotency.run(
        f"segments:campaign:{segment_id}",
        key,
        idempotency.fingerprint(staff.id, body.model_dump(mode="json")),
        work,
    )
    out = CampaignOut.model_validate(result)
    return JSONResponse(
        out.model_dump(mode="json"), status_code=202 if out.status != "done" else 201
    )


@router.get("/segments/{segment_id}/campaigns", response_model=list[CampaignOut])
async def list_campaigns(segment_id: Id, _staff: CurrentStaff) -> list[CampaignOut]:
    await service.get_segment(segment_id)
    return [CampaignOut.model_validate(c) for c in await service.list_campaigns(segment_id)]


async def _campaign_of(segment_id: int, campaign_id: int) -> Campaign:
    campaign = await service.get_campaign(campaign_id)
    if campaign.segment_id != segment_id:
        raise service.CAMPAIGN_NOT_FOUND()
    return campaign


@router.get("/segments/{segment_id}/campaigns/{campaign_id}", response_model=CampaignOut)
async def get_campaign(segment_id: Id, campaign_id: Id, _staff: CurrentStaff) -> CampaignOut:
    return CampaignOut.model_validate(await _campaign_of(segment_id, campaign_id))


@router.get(
    "/segments/{segment_id}/campaigns/{campaign_id}/recipients",
    response_model=Page[RecipientOut],
)
async def campaign_recipients(
    segment_id: Id,
    campaign_id: Id,
    _staff: CurrentStaff,
    status: Annotated[SafeLine | None, Query(max_length=16)] = None,
    cursor: Cursor | None = None,
    size: Limit = 50,
) -> Page[RecipientOut]:
    """Who got it, who was skipped (and why), newest first."""
    await _campaign_of(segment_id, campaign_id)
    rows, next_cursor = await service.recipients_page(campaign_id, status, cursor, size)
    return Page[RecipientOut](
        items=[RecipientOut.model_validate(r) for r in rows], next_cursor=next_cursor
    )
