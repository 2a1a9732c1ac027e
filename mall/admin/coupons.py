"""Ops: coupon templates, gift packs, and giving a pack to members (audited)."""

from __future__ import annotations

import uuid

from fastapi import APIRouter
from tortoise.transactions import in_transaction

from mall.audit import service as audit_service
from mall.coupons import service
from mall.coupons.models import CouponTemplate, GiftPack
from mall.coupons.schemas import (
    GiftPackIn,
    GiftPackOut,
    GiftPackPatch,
    IssuePackIn,
    IssuePackOut,
    IssueResult,
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
    async with in_transaction():
        template = await service.create_template(body.model_dump())
        await audit_service.record(
            staff,
            "coupon_template.create",
            f"coupon_template:{template.id}",
            **body.model_dump(mode="json"),
        )
    return (await _out([template]))[0]


@router.get("/coupon-templates/{template_id}", response_model=TemplateOut)
async def get_template(template_id: Id, _staff: CurrentStaff) -> TemplateOut:
    return (await _out([await service.get_template(template_id)]))[0]


@router.patch("/coupon-templates/{template_id}", response_model=TemplateOut)
async def update_template(template_id: Id, body: TemplatePatch, staff: CurrentStaff) -> TemplateOut:
    """Change name, quantity, limits, claim window, validity of future issues, or switch it
    off. The money terms of a template never change."""
    changes = body.model_dump(exclude_unset=True)
    for name in ("name", "description", "per_member_limit", "valid_months", "claimable", "active"):
        if changes.get(name, 0) is None:
            changes.pop(name)
    template = await service.update_template(template_id, changes)
    await audit_service.record(
        staff, "coupon_template.update", f"coupon_template:{template_id}",
        **body.model_dump(mode="json", exclude_unset=True),
    )  # fmt: skip
    return (await _out([template]))[0]


@router.delete("/coupon-templates/{template_id}", response_model=TemplateOut)
async def deactivate_template(template_id: Id, staff: CurrentStaff) -> TemplateOut:
    """Switch a template off (issued coupons keep working until they expire)."""
    template = await service.update_template(template_id, {"active": False})
    await audit_service.record(
        staff, "coupon_template.deactivate", f"coupon_template:{template_id}"
    )
    return (await _out([template]))[0]


@router.get("/gift-packs", response_model=list[GiftPackOut])
async def list_packs(_staff: CurrentStaff) -> list[GiftPackOut]:
    return [_pack_out(p) for p in await service.list_packs()]


@router.post("/gift-packs", response_model=GiftPackOut, status_code=201)
async def create_pack(body: GiftPackIn, staff: CurrentStaff) -> GiftPackOut:
    pack = await service.create_pack(body.model_dump())
    await audit_service.record(
        staff, "gift_pack.create", f"gift_pack:{pack.id}", **body.model_dump(mode="json")
    )
    return _pack_out(pack)


@router.get("/gift-packs/{pack_id}", response_model=GiftPackOut)
async def get_pack(pack_id: Id, _staff: CurrentStaff) -> GiftPackOut:
    return _pack_out(await service.get_pack(pack_id))


@router.patch("/gift-packs/{pack_id}", response_model=GiftPackOut)
async def update_pack(pack_id: Id, body: GiftPackPatch, staff: CurrentStaff) -> GiftPackOut:
    changes = {k: v for k, v in body.model_dump(exclude_unset=True).items() if v is not None}
    pack = await service.update_pack(pack_id, changes)
    await audit_service.record(
        staff, "gift_pack.update", f"gift_pack:{pack_id}",
        **body.model_dump(mode="json", exclude_unset=True),
    )  # fmt: skip
    return _pack_out(pack)


@router.delete("/gift-packs/{pack_id}", response_model=GiftPackOut)
async def deactivate_pack(pack_id: Id, staff: CurrentStaff) -> GiftPackOut:
    pack = await service.update_pack(pack_id, {"active": False})
    await audit_service.record(staff, "gift_pack.deactivate", f"gift_pack:{pack_id}")
    return _pack_out(pack)


@router.post("/gift-packs/{pack_id}/issue", response_model=IssuePackOut)
async def issue_pack(
    pack_id: Id, body: IssuePackIn, staff: CurrentStaff, idempotency_key: IdempotencyKey = None
) -> IssuePackOut:
    """Give the pack to members by id or to a segment. With an `Idempotency-Key`, a retry
    gives nothing twice (each member gets the pack once per key)."""
    request_key = idempotency_key or uuid.uuid4().hex

    async def work() -> IssuePackOut:
        _pack, results = await service.issue_pack_to_members(
            pack_id,
            member_ids=body.member_ids,
            tag=body.tag,
            min_level=body.min_level,
            request_key=request_key,
            staff_id=staff.id,
        )
        issued = [r for r in results if r["issued"]]
        await audit_service.record(
            staff,
            "gift_pack.issue",
            f"gift_pack:{pack_id}",
            request_key=request_key,
            members=len(results),
            issued=len(issued),
            member_ids=[r["member_id"] for r in issued][:1000],
        )
        return IssuePackOut(
            pack_id=pack_id,
            members=len(results),
            issued=len(issued),
            results=[IssueResult.model_validate(r) for r in results],
        )

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
