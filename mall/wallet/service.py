"""Stored value: wallet balances, top-ups through WeChat Pay, paying and refunding orders.

Rules (documented for ops and the front end):
- **Principal and bonus are kept apart.** Principal is money the member paid in; bonus
  is what a top-up plan added on top. Only principal is ever paid back out.
- **Spending order** is `MALL_WALLET_SPEND_ORDER`: `principal_first` (default; bonus is
  used once the principal is gone) or `bonus_first`.
- **An order refund** returns to the wallet in the proportion the payment was made,
  counted cumulatively over partial refunds (principal share rounded up), so a full
  refund returns exactly what was taken from each.
- **A top-up refund** (ops) sends back principal only, at most what is unspent: the
  top-up's principal not yet refunded, capped by the wallet's principal now. The
  top-up's bonus is forfeited in the same proportion (rounded up, cumulatively): if
  that much bonus is no longer in the wallet (it was spent), the part spent is kept
  back from the cash refund ("clawback"), since it was spent as if it were money.
- **A top-up is credited only** by a verified WeChat Pay notification or by the poll
  job's query, exactly once (a conditional status change plus a unique ledger key).

Every balance change locks the wallet row (FOR UPDATE on PostgreSQL), moves the
balances with a conditional UPDATE (never below zero) and writes an append-only
WalletEntry with a unique idempotency key, all in one transaction."""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from tortoise.exceptions import IntegrityError
from tortoise.expressions import F, Q
from tortoise.functions import Count, Sum
from tortoise.transactions import in_transaction

from mall.audit import service as audit_service
from mall.config import get_settings
from mall.errors import IDEMPOTENCY_KEY_REUSED, ErrorCode, MallError
from mall.i18n import _
from mall.kit import clock
from mall.kit.money import fmt_yuan
from mall.kit.pagination import cursor_page
from mall.members import service as members_service
from mall.members.models import Member
from mall.wallet.models import (
    ADJUST,
    CLOSED,
    PAID,
    PAY,
    PENDING,
    REFUND,
    REFUND_ABNORMAL,
    REFUND_FAILED,
    REFUND_OFFLINE,
    REFUND_PENDING,
    REFUND_PROCESSING,
    REFUND_SUCCEEDED,
    TOPUP,
    TOPUP_REFUND,
    TOPUP_REFUND_RETURN,
    TopUp,
    TopUpPlan,
    TopUpRefund,
    Wallet,
    WalletEntry,
)
from mall.wechat import pay as wechat_pay

log = logging.getLogger("mall.wallet")

WALLET_INSUFFICIENT = ErrorCode(
    "WALLET_INSUFFICIENT", 409, _("Your stored value ({balance}) is not enough to pay {amount}")
)
WALLET_AMOUNT_INVALID = ErrorCode(
    "WALLET_AMOUNT_INVALID", 422, _("The amount must be a positive whole number of fen")
)
WALLET_PAYMENT_NOT_FOUND = ErrorCode(
    "WALLET_PAYMENT_NOT_FOUND", 404, _("Stored-value payment not found")
)
WALLET_REFUND_TOO_LARGE = ErrorCode(
    "WALLET_REFUND_TOO_LARGE", 409, _("At most {left} of this payment can still be refunded")
)
WALLET_PLAN_NOT_FOUND = ErrorCode("WALLET_PLAN_NOT_FOUND", 404, _("Top-up plan not found"))
WALLET_PLAN_OFF = ErrorCode("WALLET_PLAN_OFF", 409, _("This top-up plan is no longer offered"))
WALLET_PLAN_LIMIT = ErrorCode(
    "WALLET_PLAN_LIMIT", 409, _("This top-up plan can be bought {limit} times per member")
)
WALLET_PLAN_IN_USE = ErrorCode(
    "WALLET_PLAN_IN_USE", 409, _("This plan already has top-ups; switch it off instead")
)
WALLET_TOPUP_NOT_FOUND = ErrorCode("WALLET_TOPUP_NOT_FOUND", 404, _("Top-up not found"))
WALLET_TOPUP_NOT_REFUNDABLE = ErrorCode(
    "WALLET_TOPUP_NOT_REFUNDABLE", 409, _("Only a paid top-up can be refunded")
)
WALLET_TOPUP_REFUND_TOO_LARGE = ErrorCode(
    "WALLET_TOPUP_REFUND_TOO_LARGE",
    409,
    _("At most {left} of this top-up's principal can be refunded now"),
)
WALLET_TOPUP_NOTHING_TO_REFUND = ErrorCode(
    "WALLET_TOPUP_NOTHING_TO_REFUND",
    409,
    _("Nothing would be paid back: the bonus already spent is worth as much as this refund"),
)
WALLET_ADJUST_INVALID = ErrorCode(
    "WALLET_ADJUST_INVALID", 422, _("Give a non-zero change of principal or bonus")
)
WALLET_ADJUST_BELOW_ZERO = ErrorCode(
    "WALLET_ADJUST_BELOW_ZERO", 409, _("This adjustment would take the balance below zero")
)

WALLET_REFUND_NOT_FOUND = ErrorCode("WALLET_REFUND_NOT_FOUND", 404, _("Top-up refund not found"))
WALLET_REFUND_NOT_ABNORMAL = ErrorCode(
    "WALLET_REFUND_NOT_ABNORMAL",
    409,
    _("Only a refund WeChat Pay could not pay out (abnormal) can be resolved this way"),
)
WALLET_REFUND_RETRY_REFUSED = ErrorCode(
    "WALLET_REFUND_RETRY_REFUSED",
    409,
    _(
        "WeChat Pay would not pay this refund to the original account again "
        "({wechat_code}); pay it out another way and mark it paid offline"
    ),
)

_KEY_MAX = 191


class PaymentMismatch(Exception):
    """A verified payment that does not match our record; answered 5xx and logged."""


@dataclass(frozen=True)
class WalletBalance:
    principal_fen: int
    bonus_fen: int

    @property
    def total_fen(self) -> int:
        return self.principal_fen + self.bonus_fen


@dataclass(frozen=True)
class WalletPayment:
    """Money taken from (pay) or returned to (refund) a wallet, by part; all positive."""

    entry_id: int
    idempotency_key: str
    principal_fen: int
    bonus_fen: int

    @property
    def amount_fen(self) -> int:
        return self.principal_fen + self.bonus_fen


# --- the ledger core -------------------------------------------------------------------


def _key(kind: str, key: str) -> str:
    if not key:
        raise ValueError("an idempotency key is required")
    full = f"{kind}:{key}"
    if len(full) <= _KEY_MAX:
        return full
    return full[:150] + ":" + hashlib.sha256(full.encode()).hexdigest()[:32]


def _positive(amount_fen: int) -> None:
    if not isinstance(amount_fen, int) or isinstance(amount_fen, bool) or amount_fen <= 0:
        raise WALLET_AMOUNT_INVALID()


async def _ensure_wallet(member_id: int) -> None:
    if await Wallet.filter(member_id=member_id).exists():
        return
    if not await Member.filter(id=member_id).exists():
        raise members_service.MEMBER_NOT_FOUND()
    try:
        async with in_transaction():
            await Wallet.create(member_id=member_id)
    except IntegrityError:  # created by a concurrent call
        pass


async def _lock(member_id: int) -> Wallet:
    """The member's wallet row, locked until the transaction ends. Call in a transaction."""
    wallet = await Wallet.filter(member_id=member_id).select_for_update().first()
    if wallet is None:
        raise RuntimeError(f"member {member_id} has no wallet; call _ensure_wallet first")
    return wallet


async def _append(
    wallet: Wallet,
    principal_delta: int,
    bonus_delta: int,
    kind: str,
    key: str,
    *,
    reference: str = "",
    reason: str = "",
    original_id: int | None = None,
    staff_id: int | None = None,
) -> WalletEntry:
    """Move the balances (never below zero) and write the entry. Wallet locked."""
    query = Wallet.filter(id=wallet.id)
    if principal_delta < 0:
        query = query.filter(principal_fen__gte=-principal_delta)
    if bonus_delta < 0:
        query = query.filter(bonus_fen__gte=-bonus_delta)
    moved = await query.update(
        principal_fen=F("principal_fen") + principal_delta,
        bonus_fen=F("bonus_fen") + bonus_delta,
    )
    if not moved:
        raise WALLET_INSUFFICIENT(
            balance=fmt_yuan(wallet.principal_fen + wallet.bonus_fen),
            amount=fmt_yuan(-min(principal_delta, 0) - min(bonus_delta, 0)),
        )
    wallet.principal_fen += principal_delta
    wallet.bonus_fen += bonus_delta
    return await WalletEntry.create(
        member_id=wallet.member_id,
        kind=kind,
        principal_delta=principal_delta,
        bonus_delta=bonus_delta,
        principal_after=wallet.principal_fen,
        bonus_after=wallet.bonus_fen,
        reference=reference[:128],
        reason=reason[:255],
        idempotency_key=key,
        original_id=original_id,
        staff_id=staff_id,
        created_at=clock.now(),
    )


async def get_balance(member_id: int) -> WalletBalance:
    row = await Wallet.filter(member_id=member_id).values("principal_fen", "bonus_fen")
    if not row:
        return WalletBalance(0, 0)
    return WalletBalance(int(row[0]["principal_fen"]), int(row[0]["bonus_fen"]))


async def entries_page(
    member_id: int, cursor: str | None, size: int
) -> tuple[list[WalletEntry], str | None]:
    return await cursor_page(WalletEntry.filter(member_id=member_id), cursor, size)


# --- paying and refunding orders (called by orders) --------------------------------------


def _split(wallet: Wallet, amount_fen: int) -> tuple[int, int]:
    """(principal, bonus) to take for `amount_fen`, in the configured spending order."""
    if get_settings().wallet_spend_order == "bonus_first":
        bonus = min(amount_fen, wallet.bonus_fen)
        return amount_fen - bonus, bonus
    principal = min(amount_fen, wallet.principal_fen)
    return principal, amount_fen - principal


def _as_payment(entry: WalletEntry, sign: int) -> WalletPayment:
    return WalletPayment(
        entry_id=entry.id,
        idempotency_key=entry.idempotency_key,
        principal_fen=sign * entry.principal_delta,
        bonus_fen=sign * entry.bonus_delta,
    )


def _same(entry: WalletEntry, kind: str, member_id: int | None, amount_fen: int) -> None:
    """A repeated key must describe the same change."""
    total = abs(entry.principal_delta + entry.bonus_delta)
    if entry.kind != kind or total != amount_fen or (member_id and entry.member_id != member_id):
        raise IDEMPOTENCY_KEY_REUSED()


async def pay(
    member_id: int, amount_fen: int, *, idempotency_key: str, reference: str
) -> WalletPayment:
    """Take `amount_fen` from the wallet (principal/bonus in the configured order), or
    raise WALLET_INSUFFICIENT and change nothing. Idempotent on `idempotency_key`;
    joins the caller's transaction (as a savepoint) when there is one."""
    _positive(amount_fen)
    key = _key(PAY, idempotency_key)
    found = await WalletEntry.get_or_none(idempotency_key=key)
    if found is not None:
        _same(found, PAY, member_id, amount_fen)
        return _as_payment(found, -1)
    await _ensure_wallet(member_id)
    try:
        async with in_transaction():
            wallet = await _lock(member_id)
            found = await WalletEntry.get_or_none(idempotency_key=key)
            if found is None:
                principal, bonus = _split(wallet, amount_fen)
                if principal > wallet.principal_fen or bonus > wallet.bonus_fen:
                    raise WALLET_INSUFFICIENT(
                        balance=fmt_yuan(wallet.principal_fen + wallet.bonus_fen),
                        amount=fmt_yuan(amount_fen),
                    )
                found = await _append(wallet, -principal, -bonus, PAY, key, reference=reference)
    except IntegrityError:
        found = await WalletEntry.get_or_none(idempotency_key=key)
        if found is None:
            raise
    _same(found, PAY, member_id, amount_fen)
    return _as_payment(found, -1)


async def refund(
    original_idempotency_key: str, amount_fen: int, *, idempotency_key: str, reason: str
) -> WalletPayment:
    """Return `amount_fen` of a wallet payment (partial allowed) in the payment's
    principal/bonus proportion. Idempotent on `idempotency_key`."""
    _positive(amount_fen)
    key = _key(REFUND, idempotency_key)
    found = await WalletEntry.get_or_none(idempotency_key=key)
    if found is not None:
        _same(found, REFUND, None, amount_fen)
        return _as_payment(found, 1)
    original = await WalletEntry.get_or_none(
        idempotency_key=_key(PAY, original_idempotency_key), kind=PAY
    )
    if original is None:
        raise WALLET_PAYMENT_NOT_FOUND()
    try:
        async with in_transaction():
            wallet = await _lock(original.member_id)
            found = await WalletEntry.get_or_none(idempotency_key=key)
            if found is None:
                principal, bonus = await _refund_split(original, amount_fen)
                found = await _append(
                    wallet,
                    principal,
                    bonus,
                    REFUND,
                    key,
                    reference=original.reference,
                    reason=reason,
                    original_id=original.id,
                )
    except IntegrityError:
        found = await WalletEntry.get_or_none(idempotency_key=key)
        if found is None:
            raise
    _same(found, REFUND, original.member_id, amount_fen)
    return _as_payment(found, 1)


async def _refund_split(original: WalletEntry, amount_fen: int) -> tuple[int, int]:
    paid_principal, paid_bonus = -original.principal_delta, -original.bonus_delta
    paid = paid_principal + paid_bonus
    back = await WalletEntry.filter(original_id=original.id, kind=REFUND).values_list(
        "principal_delta", "bonus_delta"
    )
    back_principal = sum(int(p) for p, _b in back)
    back_total = back_principal + sum(int(b) for _p, b in back)
    left = paid - back_total
    if amount_fen > left:
        raise WALLET_REFUND_TOO_LARGE(left=fmt_yuan(left))
    # cumulative, principal rounded up: the refunds of one payment add up exactly
    principal_total = -(-paid_principal * (back_total + amount_fen) // paid)
    principal = principal_total - back_principal
    return principal, amount_fen - principal


async def paid_from_wallet(idempotency_key: str) -> WalletPayment | None:
    """The wallet payment made under `idempotency_key`, if any."""
    entry = await WalletEntry.get_or_none(idempotency_key=_key(PAY, idempotency_key), kind=PAY)
    return _as_payment(entry, -1) if entry else None


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


# --- top-up refunds (ops) --------------------------------------------------------------


def refundable_fen(top_up: TopUp, balance: WalletBalance) -> int:
    """Principal of this top-up that can go back now: not yet refunded and unspent."""
    if top_up.status != PAID:
        return 0
    return max(0, min(top_up.amount_fen - top_up.refunded_principal_fen, balance.principal_fen))


async def refund_top_up(
    top_up_id: int,
    *,
    principal_fen: int | None,
    reason: str,
    staff: Any,
    idempotency_key: str | None,
) -> TopUpRefund:
    """Refund principal of a paid top-up through WeChat Pay (see the module rules)."""
    key = _key("topup_refund_request", idempotency_key or secrets.token_hex(16))
    found = await TopUpRefund.get_or_none(idempotency_key=key)
    if found is not None:
        return found
    top_up = await get_top_up(top_up_id)
    if top_up.status != PAID:
        raise WALLET_TOPUP_NOT_REFUNDABLE()
    if principal_fen is not None:
        _positive(principal_fen)
    now = clock.now()
    async with in_transaction():
        wallet = await _lock(top_up.member_id)
        top_up = await get_top_up(top_up_id)
        left = refundable_fen(top_up, WalletBalance(wallet.principal_fen, wallet.bonus_fen))
        want = left if principal_fen is None else principal_fen
        if want <= 0 or want > left:
            raise WALLET_TOPUP_REFUND_TOO_LARGE(left=fmt_yuan(left))
        refunded_after = top_up.refunded_principal_fen + want
        bonus_due = (
            -(-top_up.bonus_fen * refunded_after // top_up.amount_fen) - top_up.forfeited_bonus_fen
        )
        bonus_taken = min(bonus_due, wallet.bonus_fen)
        clawback = bonus_due - bonus_taken
        cash = want - clawback
        if cash <= 0:
            raise WALLET_TOPUP_NOTHING_TO_REFUND()
        out_refund_no = _new_number("RT")
        entry = await _append(
            wallet,
            -want,
            -bonus_taken,
            TOPUP_REFUND,
            _key(TOPUP_REFUND, out_refund_no),
            reference=top_up.out_trade_no,
            reason=reason,
            staff_id=getattr(staff, "id", None),
        )
        await TopUp.filter(id=top_up.id).update(
            refunded_principal_fen=F("refunded_principal_fen") + want,
            forfeited_bonus_fen=F("forfeited_bonus_fen") + bonus_due,
        )
        refund_row = await TopUpRefund.create(
            top_up_id=top_up.id,
            member_id=top_up.member_id,
            out_refund_no=out_refund_no,
            idempotency_key=key,
            principal_fen=want,
            bonus_fen=bonus_taken,
            clawback_fen=clawback,
            cash_fen=cash,
            status=REFUND_PENDING,
            reason=reason[:255],
            staff_id=getattr(staff, "id", None),
            entry_id=entry.id,
            created_at=now,
            updated_at=now,
        )
        await audit_service.record(
            staff,
            "wallet.topup.refund",
            f"topup:{top_up.id}",
            out_refund_no=out_refund_no,
            principal_fen=want,
            bonus_fen=bonus_taken,
            clawback_fen=clawback,
            cash_fen=cash,
            reason=reason,
        )
    await _send_refund(refund_row, top_up)
    return await TopUpRefund.get(id=refund_row.id)


def wechat_refund_no(refund_row: TopUpRefund) -> str:
    """The number WeChat Pay knows the refund's current attempt by."""
    if refund_row.attempt == 0:
        return refund_row.out_refund_no
    return f"{refund_row.out_refund_no}-{refund_row.attempt}"


async def _find_refund(wechat_no: str) -> TopUpRefund | None:
    """The refund row of a number WeChat reports, if it is the row's current attempt
    (an answer about an attempt ops have since replaced is old news)."""
    found = await TopUpRefund.get_or_none(out_refund_no=wechat_no)
    if found is not None:
        return found if found.attempt == 0 else None
    base, _dash, attempt = wechat_no.rpartition("-")
    if not base or not attempt.isdigit():
        return None
    found = await TopUpRefund.get_or_none(out_refund_no=base)
    return found if found is not None and found.attempt == int(attempt) else None


async def _send_refund(refund_row: TopUpRefund, top_up: TopUp) -> None:
    """Ask WeChat Pay to pay the refund out (again: out_refund_no makes it one refund)."""
    await TopUpRefund.filter(id=refund_row.id).update(updated_at=clock.now())
    try:
        result = await wechat_pay.refund(
            out_trade_no=top_up.out_trade_no,
            out_refund_no=wechat_refund_no(refund_row),
            refund_fen=refund_row.cash_fen,
            total_fen=top_up.amount_fen,
            reason=refund_row.reason,
        )
    except MallError as exc:
        final = exc.error in wechat_pay.FINAL_ERRORS or exc.error is wechat_pay.PAY_NOT_ENOUGH
        if final and refund_row.attempt > 0:
            # a retry of an abnormal refund: the money is still out, back to abnormal
            await TopUpRefund.filter(id=refund_row.id, status=REFUND_PENDING).update(
                status=REFUND_ABNORMAL, error_code=exc.code, updated_at=clock.now()
            )
            raise WALLET_REFUND_RETRY_REFUSED(
                wechat_code=str(exc.params.get("wechat_code") or exc.code)
            ) from None
        if final:
            await _return_refund(refund_row, exc.code)
            raise
        # busy, rate-limited, unverifiable, misconfigured: the poll job sends it again
        log.warning("top-up refund %s not sent yet: %s", refund_row.out_refund_no, exc.code)
        await TopUpRefund.filter(id=refund_row.id, status=REFUND_PENDING).update(
            error_code=exc.code
        )
        return
    await apply_refund_result(refund_row, result)


async def apply_refund_result(refund_row: TopUpRefund, result: wechat_pay.RefundResult) -> None:
    if result.refund_fen and result.refund_fen != refund_row.cash_fen:
        log.error(
            "top-up refund %s: WeChat reports %s fen, we asked %s",
            refund_row.out_refund_no,
            result.refund_fen,
            refund_row.cash_fen,
        )
        raise PaymentMismatch(f"refund {refund_row.out_refund_no}: amount differs")
    open_states = [REFUND_PENDING, REFUND_PROCESSING]
    now = clock.now()
    if result.status == "SUCCESS":
        await TopUpRefund.filter(id=refund_row.id, status__in=open_states).update(
            status=REFUND_SUCCEEDED, refund_id=result.refund_id[:64], error_code="", updated_at=now
        )
    elif result.status == "PROCESSING":
        await TopUpRefund.filter(id=refund_row.id, status=REFUND_PENDING).update(
            status=REFUND_PROCESSING, refund_id=result.refund_id[:64], error_code="", updated_at=now
        )
    elif result.status == "ABNORMAL":
        log.error("top-up refund %s is ABNORMAL: settle it by hand", refund_row.out_refund_no)
        await TopUpRefund.filter(id=refund_row.id, status__in=open_states).update(
            status=REFUND_ABNORMAL, refund_id=result.refund_id[:64], updated_at=now
        )
    elif result.status == "CLOSED":
        await _return_refund(refund_row, "REFUND_CLOSED")


async def _return_refund(refund_row: TopUpRefund, error_code: str) -> None:
    """WeChat Pay will not pay this refund out: put the money back in the wallet."""
    async with in_transaction():
        wallet = await _lock(refund_row.member_id)
        moved = await TopUpRefund.filter(
            id=refund_row.id, status__in=[REFUND_PENDING, REFUND_PROCESSING, REFUND_ABNORMAL]
        ).update(status=REFUND_FAILED, error_code=error_code[:64], updated_at=clock.now())
        if not moved:
            return
        top_up = await get_top_up(refund_row.top_up_id)
        await _append(
            wallet,
            refund_row.principal_fen,
            refund_row.bonus_fen,
            TOPUP_REFUND_RETURN,
            _key(TOPUP_REFUND_RETURN, refund_row.out_refund_no),
            reference=top_up.out_trade_no,
            reason=f"refund {refund_row.out_refund_no} failed: {error_code}",
        )
        await TopUp.filter(id=top_up.id).update(
            refunded_principal_fen=F("refunded_principal_fen") - refund_row.principal_fen,
            forfeited_bonus_fen=F("forfeited_bonus_fen")
            - (refund_row.bonus_fen + refund_row.clawback_fen),
        )
    log.warning(
        "top-up refund %s failed (%s); wallet restored", refund_row.out_refund_no, error_code
    )


async def on_top_up_refund(result: wechat_pay.RefundResult) -> None:
    """REFUND_HANDLERS["T"]: a refund notification for a top-up."""
    refund_row = await _find_refund(result.out_refund_no)
    if refund_row is None:
        if await TopUpRefund.filter(
            out_refund_no=result.out_refund_no.rpartition("-")[0] or result.out_refund_no
        ).exists():
            log.info("refund %s: an attempt since replaced; ignored", result.out_refund_no)
            return
        raise PaymentMismatch(f"unknown top-up refund {result.out_refund_no!r}")
    if result.mchid and result.mchid != get_settings().wechatpay_mchid:
        raise PaymentMismatch(f"refund {result.out_refund_no}: mchid differs")
    await apply_refund_result(refund_row, result)


async def poll_refunds(limit: int = 100) -> int:
    """The job: send again refunds WeChat never accepted, query those in flight."""
    now = clock.now()
    due = (
        await TopUpRefund.filter(
            status__in=[REFUND_PENDING, REFUND_PROCESSING],
            updated_at__lte=now - timedelta(seconds=get_settings().wallet_query_after_seconds),
        )
        .order_by("id")
        .limit(limit)
    )
    for refund_row in due:
        try:
            if refund_row.status == REFUND_PENDING:
                await _send_refund(refund_row, await get_top_up(refund_row.top_up_id))
                continue
            await TopUpRefund.filter(id=refund_row.id).update(updated_at=now)
            result = await wechat_pay.query_refund(wechat_refund_no(refund_row))
            if result is not None:
                await apply_refund_result(refund_row, result)
        except Exception:
            log.exception("top-up refund %s could not be settled", refund_row.out_refund_no)
    return len(due)


async def resolve_abnormal_refund(
    refund_id: int, *, action: str, note: str, staff: Any
) -> TopUpRefund:
    """Ops settle a refund WeChat Pay reported ABNORMAL (the member's account refused it,
    e.g. a closed bank card). Audited, and idempotent: asking again for what was done
    answers the row as it is.

    - `retry`: WeChat Pay is asked about the refund first (it may have gone through
      since); if it still did not, the refund is sent again to the original payment as
      a new attempt ("<out_refund_no>-<n>"). If WeChat Pay refuses (typically: the
      abnormal refund still holds the amount), the row stays abnormal and the answer
      says to pay it out another way.
    - `offline`: ops paid the member another way (bank transfer, cash); `note` says how.
      The wallet is not touched (the principal left it when the refund was made)."""
    refund_row = await TopUpRefund.get_or_none(id=refund_id)
    if refund_row is None:
        raise WALLET_REFUND_NOT_FOUND()
    if refund_row.resolution == action and refund_row.status != REFUND_ABNORMAL:
        return refund_row  # done already (a retry in flight or settled, or paid offline)
    if refund_row.status != REFUND_ABNORMAL:
        raise WALLET_REFUND_NOT_ABNORMAL(status=refund_row.status)
    now = clock.now()
    if action == "offline":
        async with in_transaction():
            moved = await TopUpRefund.filter(id=refund_row.id, status=REFUND_ABNORMAL).update(
                status=REFUND_OFFLINE,
                resolution="offline",
                resolution_note=note[:255],
                resolved_by=getattr(staff, "id", None),
                resolved_at=now,
                updated_at=now,
            )
            if not moved:
                return await _resolved_meanwhile(refund_row.id, action)
            await audit_service.record(
                staff,
                "wallet.topup_refund.offline",
                f"topup_refund:{refund_row.id}",
                out_refund_no=refund_row.out_refund_no,
                cash_fen=refund_row.cash_fen,
                note=note,
            )
        return await TopUpRefund.get(id=refund_row.id)

    # retry: first what WeChat Pay says now about the current attempt
    result = await wechat_pay.query_refund(wechat_refund_no(refund_row))
    if result is not None and result.status in ("SUCCESS", "PROCESSING"):
        async with in_transaction():
            moved = await TopUpRefund.filter(id=refund_row.id, status=REFUND_ABNORMAL).update(
                status=REFUND_SUCCEEDED if result.status == "SUCCESS" else REFUND_PROCESSING,
                error_code="",
                resolution="retry",
                resolved_by=getattr(staff, "id", None),
                resolved_at=now,
                updated_at=now,
            )
            if moved:
                await audit_service.record(
                    staff,
                    "wallet.topup_refund.retry",
                    f"topup_refund:{refund_row.id}",
                    out_refund_no=wechat_refund_no(refund_row),
                    wechat_status=result.status,
                )
        return await TopUpRefund.get(id=refund_row.id)
    attempt = refund_row.attempt + 1
    async with in_transaction():
        moved = await TopUpRefund.filter(
            id=refund_row.id, status=REFUND_ABNORMAL, attempt=refund_row.attempt
        ).update(
            status=REFUND_PENDING,
            attempt=attempt,
            error_code="",
            resolution="retry",
            resolution_note=note[:255],
            resolved_by=getattr(staff, "id", None),
            resolved_at=now,
            updated_at=now,
        )
        if not moved:
            return await _resolved_meanwhile(refund_row.id, action)
        await audit_service.record(
            staff,
            "wallet.topup_refund.retry",
            f"topup_refund:{refund_row.id}",
            out_refund_no=f"{refund_row.out_refund_no}-{attempt}",
            previous=wechat_refund_no(refund_row),
            previous_status=result.status if result is not None else "",
            cash_fen=refund_row.cash_fen,
        )
    refund_row = await TopUpRefund.get(id=refund_row.id)
    await _send_refund(refund_row, await get_top_up(refund_row.top_up_id))
    return await TopUpRefund.get(id=refund_row.id)


async def _resolved_meanwhile(refund_id: int, action: str) -> TopUpRefund:
    fresh = await TopUpRefund.get(id=refund_id)
    if fresh.resolution == action:
        return fresh
    raise WALLET_REFUND_NOT_ABNORMAL(status=fresh.status)


async def abnormal_refunds() -> list[TopUpRefund]:
    """Top-up refunds waiting for ops: WeChat Pay could not pay them out."""
    return await TopUpRefund.filter(status=REFUND_ABNORMAL).order_by("id")


# --- ops -------------------------------------------------------------------------------


async def adjust(
    member_id: int,
    *,
    principal_fen: int,
    bonus_fen: int,
    reason: str,
    staff: Any,
    idempotency_key: str | None,
) -> WalletEntry:
    """A manual change with a reason; audited; never below zero."""
    if principal_fen == 0 and bonus_fen == 0:
        raise WALLET_ADJUST_INVALID()
    key = _key(ADJUST, idempotency_key or secrets.token_hex(16))
    found = await WalletEntry.get_or_none(idempotency_key=key)
    if found is not None:
        return found
    await _ensure_wallet(member_id)
    try:
        async with in_transaction():
            wallet = await _lock(member_id)
            try:
                entry = await _append(
                    wallet,
                    principal_fen,
                    bonus_fen,
                    ADJUST,
                    key,
                    reason=reason,
                    staff_id=getattr(staff, "id", None),
                )
            except MallError as exc:
                if exc.error is WALLET_INSUFFICIENT:
                    raise WALLET_ADJUST_BELOW_ZERO() from None
                raise
            await audit_service.record(
                staff,
                "wallet.adjust",
                f"member:{member_id}",
                principal_fen=principal_fen,
                bonus_fen=bonus_fen,
                reason=reason,
                entry_id=entry.id,
            )
    except IntegrityError:
        found = await WalletEntry.get_or_none(idempotency_key=key)
        if found is None:
            raise
        return found
    return entry


@dataclass(frozen=True)
class Liability:
    principal_fen: int
    bonus_fen: int
    wallets_with_balance: int
    pending_top_ups: int
    refunds_in_flight_fen: int


async def liability() -> Liability:
    """Stored value owed to members, principal and bonus apart."""
    rows = await Wallet.all().annotate(p=Sum("principal_fen"), b=Sum("bonus_fen")).values("p", "b")
    principal = int(rows[0]["p"] or 0) if rows else 0
    bonus = int(rows[0]["b"] or 0) if rows else 0
    holders = await Wallet.filter(Q(principal_fen__gt=0) | Q(bonus_fen__gt=0)).count()
    pending = await TopUp.filter(status=PENDING).count()
    in_flight = (
        await TopUpRefund.filter(status__in=[REFUND_PENDING, REFUND_PROCESSING])
        .annotate(c=Sum("cash_fen"))
        .values("c")
    )
    return Liability(
        principal_fen=principal,
        bonus_fen=bonus,
        wallets_with_balance=holders,
        pending_top_ups=pending,
        refunds_in_flight_fen=int(in_flight[0]["c"] or 0) if in_flight else 0,
    )


async def list_top_ups(
    *, member_id: int | None, status: str | None, cursor: str | None, size: int
) -> tuple[list[TopUp], str | None]:
    query = TopUp.all()
    if member_id is not None:
        query = query.filter(member_id=member_id)
    if status:
        query = query.filter(status=status)
    return await cursor_page(query, cursor, size)


async def refunds_of(top_up_id: int) -> list[TopUpRefund]:
    return await TopUpRefund.filter(top_up_id=top_up_id).order_by("-id")


# --- the check ---------------------------------------------------------------------------


async def check_ledger() -> list[str]:
    """Problems found (empty = the ledger and the balances agree)."""
    problems: list[str] = []
    sums = {
        int(r["member_id"]): (int(r["p"] or 0), int(r["b"] or 0))
        for r in await WalletEntry.annotate(p=Sum("principal_delta"), b=Sum("bonus_delta"))
        .group_by("member_id")
        .values("member_id", "p", "b")
    }
    wallets = {
        int(r["member_id"]): (int(r["principal_fen"]), int(r["bonus_fen"]))
        for r in await Wallet.all().values("member_id", "principal_fen", "bonus_fen")
    }
    for member_id in sorted(set(sums) | set(wallets)):
        entries = sums.get(member_id, (0, 0))
        balance = wallets.get(member_id)
        if balance is None:
            problems.append(f"member {member_id}: entries {entries} but no wallet")
            continue
        if entries[0] != balance[0]:
            problems.append(
                f"member {member_id}: principal entries {entries[0]} != balance {balance[0]}"
            )
        if entries[1] != balance[1]:
            problems.append(
                f"member {member_id}: bonus entries {entries[1]} != balance {balance[1]}"
            )
        if balance[0] < 0 or balance[1] < 0:
            problems.append(f"member {member_id}: negative balance {balance}")
    paid = set(await TopUp.filter(status=PAID).values_list("out_trade_no", flat=True))
    credited = [
        str(ref) for ref in await WalletEntry.filter(kind=TOPUP).values_list("reference", flat=True)
    ]
    if len(credited) != len(set(credited)):
        problems.append("a top-up was credited more than once")
    if set(credited) != paid:
        problems.append(
            f"paid top-ups without credit {sorted(paid - set(credited))[:5]}, "
            f"credits without a paid top-up {sorted(set(credited) - paid)[:5]}"
        )
    return problems


async def _profile_extra(member: Member) -> dict[str, object]:
    return {"wallet_balance": (await get_balance(member.id)).total_fen}


members_service.profile_extras.append(_profile_extra)
wechat_pay.PAYMENT_HANDLERS["T"] = on_top_up_paid
wechat_pay.REFUND_HANDLERS["T"] = on_top_up_refund
