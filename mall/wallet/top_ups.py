"""Top-up plans and top-ups paid through WeChat Pay; a paid top-up credits the wallet once."""

from __future__ import annotations

import logging
import secrets
from datetime import timedelta
from typing import Any

from tortoise.exceptions import IntegrityError
from tortoise.expressions import Q
from tortoise.functions import Count
from tortoise.transactions import in_transaction

from mall.audit import service as audit_service
from mall.config import get_settings
from mall.errors import MallError
from mall.kit import clock
from mall.kit.money import fmt_yuan
from mall.members import service as members_service
from mall.members.models import Member
from mall.wallet.ledger import (
    WALLET_PLAN_IN_USE,
    WALLET_PLAN_LIMIT,
    WALLET_PLAN_NOT_FOUND,
    WALLET_PLAN_OFF,
    WALLET_TOPUP_NOT_FOUND,
    PaymentMismatch,
    _append,
    _ensure_wallet,
    _key,
    _lock,
)
from mall.wallet.models import (
    CLOSED,
    PAID,
    PENDING,
    TOPUP,
    TopUp,
    TopUpPlan,
    WalletEntry,
)
from mall.wechat import pay as wechat_pay

log = logging.getLogger("mall.wallet")


# --- top-up plans --------------------------------------------------------------------


async def list_plans(*, active_only: bool) -> list[TopUpPlan]:
    query = TopUpPlan.all()
    if active_only:
        query = query.filter(active=True)
    return await query.order_by("sort", "amount_fen", "id")


async def get_plan(plan_id: int) -> TopUpPlan:
    plan = await TopUpPlan.get_or_none(id=plan_id)
    if plan is None:
        raise WALLET_PLAN_NOT_FOUND()
    return plan


async def _used_count(member_id: int, plan_id: int) -> int:
    """Top-ups of a plan that count against its limit: paid ones and open ones."""
    return await TopUp.filter(
        Q(status=PAID) | Q(status=PENDING, expires_at__gt=clock.now()),
        member_id=member_id,
        plan_id=plan_id,
    ).count()


async def plans_for_member(member_id: int) -> list[tuple[TopUpPlan, int | None]]:
    """Active plans with how many more times this member may buy each (None = any)."""
    plans = await list_plans(active_only=True)
    limited = [p.id for p in plans if p.per_member_limit is not None]
    used: dict[int, int] = {}
    if limited:
        rows = (
            await TopUp.filter(
                Q(status=PAID) | Q(status=PENDING, expires_at__gt=clock.now()),
                member_id=member_id,
                plan_id__in=limited,
            )
            .annotate(n=Count("id"))
            .group_by("plan_id")
            .values("plan_id", "n")
        )
        used = {int(r["plan_id"]): int(r["n"]) for r in rows}
    return [
        (
            p,
            None if p.per_member_limit is None else max(p.per_member_limit - used.get(p.id, 0), 0),
        )
        for p in plans
    ]


async def create_plan(data: dict[str, Any], *, staff: Any) -> TopUpPlan:
    async with in_transaction():
        plan = await TopUpPlan.create(**data)
        await audit_service.record(staff, "wallet.plan.create", f"topup_plan:{plan.id}", **data)
    return plan


async def update_plan(plan_id: int, changes: dict[str, Any], *, staff: Any) -> TopUpPlan:
    async with in_transaction():
        plan = await get_plan(plan_id)
        before = {k: getattr(plan, k) for k in changes}
        if changes:
            await TopUpPlan.filter(id=plan_id).update(**changes)
        await audit_service.record(
            staff, "wallet.plan.update", f"topup_plan:{plan_id}", before=before, after=changes
        )
    return await get_plan(plan_id)


async def delete_plan(plan_id: int, *, staff: Any) -> None:
    async with in_transaction():
        plan = await get_plan(plan_id)
        if await TopUp.filter(plan_id=plan_id).exists():
            raise WALLET_PLAN_IN_USE()
        await plan.delete()
        await audit_service.record(staff, "wallet.plan.delete", f"topup_plan:{plan_id}")


# --- top-ups -------------------------------------------------------------------------


def _new_number(prefix: str) -> str:
    stamp = clock.local_now().strftime("%y%m%d%H%M%S")
    return f"{prefix}{stamp}{secrets.token_hex(5)}"


async def create_top_up(member_id: int, plan_id: int) -> tuple[TopUp, dict[str, str]]:
    """Open a top-up and its WeChat Pay payment; returns it with the wx.requestPayment
    parameters. An open top-up of the same plan is reused (fresh parameters), so a
    member who dismissed the payment sheet can simply try again."""
    plan = await get_plan(plan_id)
    if not plan.active:
        raise WALLET_PLAN_OFF()
    if not wechat_pay.is_configured():
        raise wechat_pay.PAY_NOT_CONFIGURED()
    member = await Member.get_or_none(id=member_id)
    if member is None:
        raise members_service.MEMBER_NOT_FOUND()
    await _ensure_wallet(member_id)
    now = clock.now()
    async with in_transaction():
        await _lock(member_id)  # one top-up decision per member at a time
        top_up = (
            await TopUp.filter(
                member_id=member_id,
                plan_id=plan_id,
                status=PENDING,
                expires_at__gt=now + timedelta(seconds=60),
            )
            .order_by("-id")
            .first()
        )
        if top_up is None:
            limit = plan.per_member_limit
            if limit is not None and await _used_count(member_id, plan_id) >= limit:
                raise WALLET_PLAN_LIMIT(limit=limit)
            top_up = await TopUp.create(
                member_id=member_id,
                plan_id=plan.id,
                out_trade_no=_new_number("T"),
                amount_fen=plan.amount_fen,
                bonus_fen=plan.bonus_fen,
                openid=member.openid,
                status=PENDING,
                expires_at=now + timedelta(seconds=get_settings().wallet_topup_expire_seconds),
                created_at=now,
            )
    if top_up.prepay_id:
        return top_up, wechat_pay.request_payment_params(top_up.prepay_id)
    try:
        params = await wechat_pay.create_jsapi_payment(
            out_trade_no=top_up.out_trade_no,
            description=f"储值充值-{plan.name}",
            amount_fen=top_up.amount_fen,
            openid=top_up.openid,
            expires_at=top_up.expires_at,
            attach=f"topup:{top_up.id}",
        )
    except MallError as exc:
        if exc.error in wechat_pay.FINAL_ERRORS:
            await TopUp.filter(id=top_up.id, status=PENDING).update(status=CLOSED)
        raise
    top_up.prepay_id = params["package"].removeprefix("prepay_id=")
    await TopUp.filter(id=top_up.id).update(prepay_id=top_up.prepay_id)
    return top_up, params


async def get_top_up(top_up_id: int, *, member_id: int | None = None) -> TopUp:
    query = TopUp.filter(id=top_up_id)
    if member_id is not None:
        query = query.filter(member_id=member_id)
    top_up = await query.first()
    if top_up is None:
        raise WALLET_TOPUP_NOT_FOUND()
    return top_up


async def on_top_up_paid(result: wechat_pay.PaymentResult) -> None:
    """PAYMENT_HANDLERS["T"]: credit a paid top-up exactly once. Raises PaymentMismatch
    (the notification is answered 5xx) when WeChat's record disagrees with ours."""
    top_up = await TopUp.get_or_none(out_trade_no=result.out_trade_no)
    if top_up is None:
        raise PaymentMismatch(f"unknown top-up {result.out_trade_no!r}")
    problems = []
    if result.trade_state != "SUCCESS":
        problems.append(f"trade_state {result.trade_state}")
    if result.amount_total_fen != top_up.amount_fen:
        problems.append(f"amount {result.amount_total_fen} != {top_up.amount_fen}")
    if result.mchid != get_settings().wechatpay_mchid:
        problems.append("mchid differs")
    if result.appid != wechat_pay.pay_appid():
        problems.append("appid differs")
    if problems:
        log.error("top-up %s NOT credited: %s", top_up.out_trade_no, "; ".join(problems))
        raise PaymentMismatch(f"top-up {top_up.out_trade_no}: " + "; ".join(problems))
    if top_up.status == PAID:
        return
    await _ensure_wallet(top_up.member_id)
    key = _key(TOPUP, top_up.out_trade_no)
    try:
        async with in_transaction():
            wallet = await _lock(top_up.member_id)
            # a CLOSED top-up can still be paid when the member paid as we closed it
            moved = await TopUp.filter(id=top_up.id, status__in=[PENDING, CLOSED]).update(
                status=PAID,
                transaction_id=result.transaction_id[:64],
                paid_at=result.success_time or clock.now(),
            )
            if not moved:
                return
            entry = await _append(
                wallet,
                top_up.amount_fen,
                top_up.bonus_fen,
                TOPUP,
                key,
                reference=top_up.out_trade_no,
                reason=f"top-up {fmt_yuan(top_up.amount_fen)} + bonus {fmt_yuan(top_up.bonus_fen)}",
            )
            await TopUp.filter(id=top_up.id).update(entry_id=entry.id)
    except IntegrityError:
        if not await WalletEntry.filter(idempotency_key=key).exists():
            raise
    log.info("top-up %s credited to member %s", top_up.out_trade_no, top_up.member_id)


async def refresh_top_up(top_up: TopUp) -> TopUp:
    """Ask WeChat Pay about a pending top-up and settle it (credit, close) if it is done."""
    if top_up.status != PENDING:
        return top_up
    now = clock.now()
    result = await wechat_pay.query_payment(top_up.out_trade_no)
    await TopUp.filter(id=top_up.id).update(last_queried_at=now)
    if result is None:
        if now >= top_up.expires_at:  # never opened at WeChat (the create call failed)
            await TopUp.filter(id=top_up.id, status=PENDING).update(status=CLOSED)
    elif result.trade_state == "SUCCESS":
        await on_top_up_paid(result)
    elif result.trade_state in ("CLOSED", "REVOKED", "PAYERROR"):
        await TopUp.filter(id=top_up.id, status=PENDING).update(status=CLOSED)
    elif result.trade_state == "NOTPAY" and now >= top_up.expires_at:
        try:
            await wechat_pay.close_payment(top_up.out_trade_no)
        except MallError as exc:
            if exc.error is wechat_pay.PAY_ORDER_PAID:  # paid at the last moment: credit next round
                return await get_top_up(top_up.id)
            if exc.error is not wechat_pay.PAY_ORDER_CLOSED:
                raise
        await TopUp.filter(id=top_up.id, status=PENDING).update(status=CLOSED)
    return await get_top_up(top_up.id)


async def poll_top_ups(limit: int = 100) -> int:
    """The job: query pending top-ups older than `wallet_query_after_seconds` (and every
    one past its deadline), credit the paid, close the expired. Returns how many."""
    now = clock.now()
    wait = timedelta(seconds=get_settings().wallet_query_after_seconds)
    due = (
        await TopUp.filter(
            Q(expires_at__lte=now)
            | Q(
                Q(last_queried_at__isnull=True) | Q(last_queried_at__lte=now - wait),
                created_at__lte=now - wait,
            ),
            status=PENDING,
        )
        .order_by("id")
        .limit(limit)
    )
    for top_up in due:
        try:
            await refresh_top_up(top_up)
        except Exception:
            log.exception("top-up %s could not be settled", top_up.out_trade_no)
    return len(due)
