"""Staff actions on coupon templates and gift packs, each recorded in the audit log.

The ops routes call these; other domains, demos and jobs use `service` directly."""

from __future__ import annotations

from tortoise.transactions import in_transaction

from mall.audit import service as audit_service
from mall.audit.service import Actor
from mall.coupons import service
from mall.coupons.models import CouponTemplate, GiftPack
from mall.coupons.schemas import (
    GiftPackIn,
    GiftPackPatch,
    IssuePackIn,
    IssuePackOut,
    IssueResult,
    TemplateIn,
    TemplatePatch,
)

# patch fields that cannot be cleared: a null among them is ignored
_NOT_CLEARABLE = ("name", "description", "per_member_limit", "valid_months", "claimable", "active")


async def create_template(actor: Actor, body: TemplateIn) -> CouponTemplate:
    async with in_transaction():
        template = await service.create_template(body.model_dump())
        await audit_service.record(
            actor,
            "coupon_template.create",
            f"coupon_template:{template.id}",
            **body.model_dump(mode="json"),
        )
    return template


async def update_template(actor: Actor, template_id: int, body: TemplatePatch) -> CouponTemplate:
    changes = body.model_dump(exclude_unset=True)
    for name in _NOT_CLEARABLE:
        if changes.get(name, 0) is None:
            changes.pop(name)
    template = await service.update_template(template_id, changes)
    await audit_service.record(
        actor, "coupon_template.update", f"coupon_template:{template_id}",
        **body.model_dump(mode="json", exclude_unset=True),
    )  # fmt: skip
    return template


async def deactivate_template(actor: Actor, template_id: int) -> CouponTemplate:
    template = await service.update_template(template_id, {"active": False})
    await audit_service.record(
        actor, "coupon_template.deactivate", f"coupon_template:{template_id}"
    )
    return template


async def create_pack(actor: Actor, body: GiftPackIn) -> GiftPack:
    pack = await service.create_pack(body.model_dump())
    await audit_service.record(
        actor, "gift_pack.create", f"gift_pack:{pack.id}", **body.model_dump(mode="json")
    )
    return pack


async def update_pack(actor: Actor, pack_id: int, body: GiftPackPatch) -> GiftPack:
    changes = {k: v for k, v in body.model_dump(exclude_unset=True).items() if v is not None}
    pack = await service.update_pack(pack_id, changes)
    await audit_service.record(
        actor, "gift_pack.update", f"gift_pack:{pack_id}",
        **body.model_dump(mode="json", exclude_unset=True),
    )  # fmt: skip
    return pack


async def deactivate_pack(actor: Actor, pack_id: int) -> GiftPack:
    pack = await service.update_pack(pack_id, {"active": False})
    await audit_service.record(actor, "gift_pack.deactivate", f"gift_pack:{pack_id}")
    return pack


async def issue_pack(
    actor: Actor, pack_id: int, body: IssuePackIn, *, request_key: str
) -> IssuePackOut:
    """Give the pack to members by id or to a segment; once per member per request key."""
    _pack, results = await service.issue_pack_to_members(
        pack_id,
        member_ids=body.member_ids,
        tag=body.tag,
        min_level=body.min_level,
        request_key=request_key,
        staff_id=actor.id,
    )
    issued = [r for r in results if r["issued"]]
    await audit_service.record(
        actor,
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
