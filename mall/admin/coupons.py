"""Ops: coupon templates, gift packs, and giving a pack to members (audited)."""

from __future__ import annotations

import uuid

from fastapi import APIRouter

from mall.coupons import ops, service
from mall.coupons.models import CouponTemplate, GiftPack
from mall.coupons.schemas import (
    GiftPackIn,
    GiftPackOut,
    GiftPackPatch,
    IssuePackIn,
    IssuePackOut,
    TemplateIn,
    TemplateOut,
    TemplatePatch,
    VoidIn,
    VoidOut,
)
from mall.deps import CurrentStaff, IdempotencyKey
from mall.kit import idempotency
from mall.kit.bounds import Id

router = APIRouter(tags=["admin: coupons"])


async def _out(templates: list[CouponTemplate]) -> list[TemplateOut]:
    figures = await service.template_figures([t.id for t in templates])
    result = []
    for t in templates:
        issued, used = figures.get(t.id, (0, 0))
        result.append(
            TemplateOut.model_validate(t).model_copy(update={"issued": issued, "used": used})
        )
    return result


def _pack_out(pack: GiftPack) -> GiftPackOut:
    return GiftPackOut.model_validate(pack)


@router.get("/coupon-templates", response_model=list[TemplateOut])
async def list_templates(_staff: CurrentStaff, active: bool | None = None) -> list[TemplateOut]:
    """Every template with how many were issued and used."""
    return await _out(await service.list_templates(active))


@router.post("/coupon-templates", response_model=TemplateOut, status_code=201)
async def create_template(body: TemplateIn, staff: CurrentStaff) -> TemplateOut:
    return (await _out([await ops.create_template(staff, body)]))[0]


@router.get("/coupon-templates/{template_id}", response_model=TemplateOut)
async def get_template(template_id: Id, _staff: CurrentStaff) -> TemplateOut:
    return (await _out([await service.get_template(template_id)]))[0]


@router.patch("/coupon-templates/{template_id}", response_model=TemplateOut)
async def update_template(template_id: Id, body: TemplatePatch, staff: CurrentStaff) -> TemplateOut:
    """Change name, quantity, limits, claim window, validity of future issues, or switch it
    off. The money terms of a template never change."""
    return (await _out([await ops.update_template(staff, template_id, body)]))[0]


@router.delete("/coupon-templates/{template_id}", response_model=TemplateOut)
async def deactivate_template(template_id: Id, staff: CurrentStaff) -> TemplateOut:
    """Switch a template off (issued coupons keep working until they expire)."""
    return (await _out([await ops.deactivate_template(staff, template_id)]))[0]


@router.get("/gift-packs", response_model=list[GiftPackOut])
async def list_packs(_staff: CurrentStaff) -> list[GiftPackOut]:
    return [_pack_out(p) for p in await service.list_packs()]


@router.post("/gift-packs", response_model=GiftPackOut, status_code=201)
async def create_pack(body: GiftPackIn, staff: CurrentStaff) -> GiftPackOut:
    return _pack_out(await ops.create_pack(staff, body))


@router.get("/gift-packs/{pack_id}", response_model=GiftPackOut)
async def get_pack(pack_id: Id, _staff: CurrentStaff) -> GiftPackOut:
    return _pack_out(await service.get_pack(pack_id))


@router.patch("/gift-packs/{pack_id}", response_model=GiftPackOut)
async def update_pack(pack_id: Id, body: GiftPackPatch, staff: CurrentStaff) -> GiftPackOut:
    return _pack_out(await ops.update_pack(staff, pack_id, body))


@router.delete("/gift-packs/{pack_id}", response_model=GiftPackOut)
async def deactivate_pack(pack_id: Id, staff: CurrentStaff) -> GiftPackOut:
    return _pack_out(await ops.deactivate_pack(staff, pack_id))


@router.post("/gift-packs/{pack_id}/issue", response_model=IssuePackOut)
async def issue_pack(
    pack_id: Id, body: IssuePackIn, staff: CurrentStaff, idempotency_key: IdempotencyKey = None
) -> IssuePackOut:
    """Give the pack to members by id or to a segment. With an `Idempotency-Key`, a retry
    gives nothing twice (each member gets the pack once per key)."""
    request_key = idempotency_key or uuid.uuid4().hex

    async def work() -> IssuePackOut:
        return await ops.issue_pack(staff, pack_id, body, request_key=request_key)

    result = await idempotency.run(
        f"gift_pack.issue:{pack_id}",
        idempotency_key,
        idempotency.fingerprint(body.model_dump()),
        work,
    )
    return IssuePackOut.model_validate(result)


@router.post("/coupons/{coupon_id}/void", response_model=VoidOut)
async def void_coupon(
    coupon_id: Id,
    body: VoidIn,
    staff: CurrentStaff,
    idempotency_key: IdempotencyKey = None,
) -> VoidOut:
    """Void a coupon the member never used (usable or expired); audited. A coupon held by
    an unpaid order or already used is refused (`COUPON_NOT_VOIDABLE`); voiding a voided
    coupon again answers it unchanged."""

    async def work() -> VoidOut:
        coupon = await service.void(coupon_id, reason=body.reason, staff=staff)
        return VoidOut.model_validate(coupon, from_attributes=True)

    result = await idempotency.run(
        f"coupon.void:{staff.id}",
        idempotency_key,
        idempotency.fingerprint(coupon_id, body.model_dump()),
        work,
    )
    return VoidOut.model_validate(result)
