"""The coupon pool: a template's quantity in Redis, on the hot-stock kit (mall.kit.stock).

Keys under the template's hash tag `{cp:ID}`: the kit's meta (the claim terms:
per_member, active, claimable, starts, ends, unlimited; `initial`: the total quantity,
0 when unlimited), stock (units left: total less issued; an unlimited template counts
on below zero, and a total ops lowered below the number issued leaves it below zero:
sold out), buyers (coupons issued per member, for the per-member limit) and returned
(take ids given back). Every issue of a coupon (claim, grant, gift pack) takes units
here in one Lua call (`lua/take.lua`); a take whose coupon row is not written is given
back, once per take id. The reconciler proves, per template:

    redis stock + coupon rows == total quantity (0 when unlimited)
    the members' counts in Redis add up to the coupons issued"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

from tortoise.functions import Count

from mall.coupons.models import Coupon, CouponTemplate
from mall.kit import clock
from mall.kit import stock as kit

POOL = kit.Pool("cp", kit.PoolKeys)


def _ts(moment: datetime | None) -> str:
    return "" if moment is None else str(int(moment.timestamp()))


async def warm_template(template: CouponTemplate) -> None:
    """Load the template's terms into Redis; when Redis has no counts yet, seed them from
    the database rows (a lost Redis may at worst re-issue coupons whose rows were still
    being written; the reconciler reports any difference)."""
    keys = POOL.keys(template.id)
    counts = (
        await Coupon.filter(template_id=template.id)
        .annotate(n=Count("id"))
        .group_by("member_id")
        .values_list("member_id", "n")
    )
    total = template.total_quantity or 0
    plan = kit.Warm(keys).terms(
        per_member=template.per_member_limit,
        active=1 if template.active else 0,
        claimable=1 if template.claimable else 0,
        starts=_ts(template.claim_starts_at),
        ends=_ts(template.claim_ends_at),
        unlimited=1 if template.total_quantity is None else 0,
    )
    plan.initial(total).stock(total - sum(int(n) for _m, n in counts))
    plan.counts(keys.buyers, {member_id: int(n) for member_id, n in counts})
    await plan.run()


@dataclass(frozen=True)
class Take:
    """One take's answer: `ok`, or why not (cold inactive not_claimable not_started
    ended sold_out limit_reached)."""

    template_id: int
    n: int
    status: str
    number: int  # units left (ok, sold_out), coupons held (limit_reached)
    take_id: str  # what its give-back names


async def take(template_id: int, member_id: int, n: int, *, shopper: bool) -> Take:
    """Take `n` coupons of a template in one Lua call (warming it first if Redis lacks
    it); `cold` when the template does not exist."""
    keys = POOL.keys(template_id)
    script = kit.script("mall.coupons", "take")
    args = [member_id, int(clock.now().timestamp()), n, 1 if shopper else 0]

    async def warm() -> None:
        template = await CouponTemplate.get_or_none(id=template_id)
        if template is not None:
            await warm_template(template)

    raw = await kit.decide(
        lambda: script(keys=[keys.meta, keys.stock, keys.buyers], args=args), warm
    )
    reply = kit.parse(raw)
    number = reply.number() if reply.values else 0
    return Take(template_id, n, reply.status, number, uuid.uuid4().hex)


async def give_back(template_id: int, member_id: int, n: int, take_id: str) -> None:
    """Undo a take whose coupon rows were not written: its units and the member's count
    go back, once per take."""
    keys = POOL.keys(template_id)
    await kit.give_back(keys, take_id, n=n, member=member_id, counters=[keys.buyers])


async def redis_counts(template_id: int) -> tuple[int, dict[int, int]] | None:
    """(issued, held per member) as Redis sees them; None when the template is not loaded."""
    keys = POOL.keys(template_id)
    flat_meta, stock, flat_buyers = await kit.snapshot(
        [(keys.meta, "hgetall"), (keys.stock, "get"), (keys.buyers, "hgetall")]
    )
    meta = dict(zip(flat_meta[::2], flat_meta[1::2], strict=True))
    if not meta or stock is None:
        return None
    held = {int(m): int(c) for m, c in zip(flat_buyers[::2], flat_buyers[1::2], strict=True)}
    return int(meta.get("initial") or 0) - int(stock), held


# --- reconciliation -------------------------------------------------------------------


@dataclass
class TemplateBalance(kit.Balance):
    """A template's equation (held = coupon rows) and its own words for the check."""

    template_id: int = 0
    issued: int = 0  # in Redis: initial - stock
    held_sum: int = 0  # the members' counts in Redis

    @property
    def loaded(self) -> bool:
        return self.redis is not None

    def describe(self) -> str:
        if not self.loaded:
            return f"template {self.template_id}: not loaded in Redis, {self.held} rows"
        if self.issued != self.held:
            return f"template {self.template_id}: redis issued={self.issued} db rows={self.held}"
        if self.held_sum != self.issued:
            return (
                f"template {self.template_id}: per-member counts sum={self.held_sum} "
                f"issued={self.issued}"
            )
        return f"template {self.template_id}: issued={self.issued} ok"

    def figures(self) -> tuple[Any, ...]:
        return (*super().figures(), self.held_sum)


async def _reading(template: CouponTemplate) -> TemplateBalance:
    keys = POOL.keys(template.id)
    flat_meta, stock, flat_buyers = await kit.snapshot(
        [(keys.meta, "hgetall"), (keys.stock, "get"), (keys.buyers, "hgetall")]
    )
    meta = dict(zip(flat_meta[::2], flat_meta[1::2], strict=True))
    rows = await Coupon.filter(template_id=template.id).count()
    loaded = bool(meta) and stock is not None
    initial = int(meta.get("initial") or 0)
    check = TemplateBalance(
        name=f"template {template.id}",
        initial=initial,
        redis=int(stock) if loaded else None,
        held=rows,
        names=("rows", "in_flight", "returns_due"),
        floor=None,
        template_id=template.id,
        issued=initial - int(stock) if loaded else 0,
        held_sum=sum(int(c) for c in flat_buyers[1::2]),
    )
    if loaded and check.held_sum != check.issued:
        check.found.append(f"per-member counts sum={check.held_sum} issued={check.issued}")
    return check


async def reconcile() -> list[TemplateBalance]:
    """Every template, each on a stable reading (a claim between its Lua win and its row
    shows as a passing difference of one)."""
    return [
        await kit.balance(partial(_reading, template))
        for template in await CouponTemplate.all().order_by("id")
    ]
