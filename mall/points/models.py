"""Points: an append-only ledger, the lots earned points form, holds, sign-ins,
marketplace orders for binding, level changes and the versioned earning rules.

Times that business rules depend on (`created_at`, expiry) are written from
`mall.kit.clock` so tests can move time; they are never `auto_now_add`."""

from __future__ import annotations

from typing import Any

from tortoise import fields
from tortoise.models import Model

# Entry kinds. A hold is a spend-like entry written when points are reserved; a void
# gives them back; capture only closes the hold (the points already left the balance).
EARN = "earn"
SPEND = "spend"
HOLD = "hold"
VOID = "void"
EXPIRE = "expire"
REVERSE = "reverse"
ADJUST = "adjust"
ENTRY_KINDS = (EARN, SPEND, HOLD, VOID, EXPIRE, REVERSE, ADJUST)


class PointsEntry(Model):
    """One change of a member's points. Never updated or deleted."""

    id = fields.BigIntField(primary_key=True)
    # no index of its own: ("member_id", "id") below serves every lookup by member
    member: Any = fields.ForeignKeyField(
        "models.Member", related_name=False, on_delete=fields.RESTRICT
    )
    member_id: int
    delta = fields.BigIntField()
    balance_after = fields.BigIntField()
    kind = fields.CharField(max_length=16)
    reason = fields.CharField(max_length=128, default="")
    reference = fields.CharField(max_length=128, default="", db_index=True)
    idempotency_key = fields.CharField(max_length=191, unique=True)
    # the entry this one reverses or voids (a spend, hold or earn)
    reverses_id = fields.BigIntField(null=True, db_index=True)
    # growth value this entry added (or removed, when negative)
    growth_delta = fields.BigIntField(default=0)
    created_at = fields.DatetimeField(db_index=True)

    class Meta:
        table = "points_entry"
        indexes = (("member_id", "id"), ("kind", "created_at"))


class PointsLot(Model):
    """Points earned together, with their own expiry — spent soonest-expiring first."""

    id = fields.BigIntField(primary_key=True)
    # no index of its own: ("member_id", "remaining") below serves every lookup by member
    member: Any = fields.ForeignKeyField(
        "models.Member", related_name=False, on_delete=fields.RESTRICT
    )
    member_id: int
    entry_id = fields.BigIntField(db_index=True)
    points = fields.BigIntField()
    remaining = fields.BigIntField()
    expires_at = fields.DatetimeField(null=True)
    created_at = fields.DatetimeField()

    class Meta:
        table = "points_lot"
        indexes = (("member_id", "remaining"), ("expires_at", "remaining"))


class PointsLotUse(Model):
    """How many points of a lot an entry took (positive) or gave back (negative).

    `entry_id` is the consuming entry (spend, hold, expire, claw-back); a give-back
    (void or reverse) writes a negative row against the same `entry_id` with
    `by_entry_id` naming the give-back, so the net use per (entry, lot) is a sum."""

    id = fields.BigIntField(primary_key=True)
    entry_id = fields.BigIntField(db_index=True)
    lot_id = fields.BigIntField(db_index=True)
    points = fields.BigIntField()
    by_entry_id = fields.BigIntField(null=True)

    class Meta:
        table = "points_lot_use"


class PointsHold(Model):
    """Points reserved for a checkout: `held` until captured or voided (or timed out).

    The release job voids a hold still open past `expires_at` (holds from before it
    existed: `created_at` plus `points_hold_timeout_seconds`)."""

    id = fields.BigIntField(primary_key=True)
    member: Any = fields.ForeignKeyField(
        "models.Member", related_name=False, db_index=True, on_delete=fields.RESTRICT
    )
    member_id: int
    points = fields.BigIntField()
    status = fields.CharField(max_length=16, default="held")  # held | captured | voided
    entry_id = fields.BigIntField()
    idempotency_key = fields.CharField(max_length=191, unique=True)
    reason = fields.CharField(max_length=128, default="")
    reference = fields.CharField(max_length=128, default="")
    created_at = fields.DatetimeField()
    expires_at = fields.DatetimeField(null=True)
    closed_at = fields.DatetimeField(null=True)
    closed_key = fields.CharField(max_length=191, null=True)

    class Meta:
        table = "points_hold"
        indexes = (("status", "expires_at"),)


class PointsDebt(Model):
    """Points a claw-back could not take because they were already spent: owed, never a
    negative balance. New earnings settle debts first (oldest first), each settlement a
    `reverse` entry of the clawed-back earn with `reference` "debt:<id>", so
    `points == remaining + settled` always."""

    id = fields.BigIntField(primary_key=True)
    member: Any = fields.ForeignKeyField(
        "models.Member", related_name=False, db_index=True, on_delete=fields.RESTRICT
    )
    member_id: int
    # the claw-back entry that fell short, and the earn it reverses
    entry_id = fields.BigIntField(unique=True)
    original_entry_id = fields.BigIntField(db_index=True)
    points = fields.BigIntField()
    remaining = fields.BigIntField()
    reason = fields.CharField(max_length=128, default="")
    created_at = fields.DatetimeField()
    settled_at = fields.DatetimeField(null=True)

    class Meta:
        table = "points_debt"
        indexes = (("member_id", "remaining"),)


class SignIn(Model):
    """One member's sign-in on one Asia/Shanghai day — the unique pair decides races."""

    id = fields.BigIntField(primary_key=True)
    member: Any = fields.ForeignKeyField(
        "models.Member", related_name=False, on_delete=fields.RESTRICT
    )
    member_id: int
    day = fields.DateField()
    streak = fields.IntField()
    points = fields.IntField()
    created_at = fields.DatetimeField()

    class Meta:
        table = "points_sign_in"
        unique_together = (("member_id", "day"),)


class ExternalOrder(Model):
    """A marketplace order imported by ops, claimable once by one member."""

    id = fields.BigIntField(primary_key=True)
    platform = fields.CharField(max_length=32)
    order_no = fields.CharField(max_length=64)
    phone = fields.CharField(max_length=20)
    paid_fen = fields.BigIntField()
    paid_at = fields.DatetimeField(null=True)
    status = fields.CharField(max_length=16)  # paid | shipped | completed | refunded | cancelled
    member_id = fields.BigIntField(null=True, db_index=True)
    bound_at = fields.DatetimeField(null=True)
    points_awarded = fields.BigIntField(default=0)
    # refunds so far (the marketplace's cumulative figure), what had been refunded when
    # the order was bound (points were awarded on the rest), and the points clawed back
    refunded_fen = fields.BigIntField(default=0)
    refunded_at_bind_fen = fields.BigIntField(default=0)
    points_reversed = fields.BigIntField(default=0)
    imported_at = fields.DatetimeField(db_index=True)
    updated_at = fields.DatetimeField()

    class Meta:
        table = "points_external_order"
        unique_together = (("platform", "order_no"),)


class LevelChange(Model):
    """A member moved from one level to another (growth moved, or the thresholds did).

    `reason` is `growth` (earned, or clawed back: `entry_id` says which entry) or
    `rules` (ops changed the level thresholds: `rules_version` says which version)."""

    id = fields.BigIntField(primary_key=True)
    member: Any = fields.ForeignKeyField(
        "models.Member", related_name=False, db_index=True, on_delete=fields.RESTRICT
    )
    member_id: int
    from_level = fields.IntField()
    to_level = fields.IntField()
    growth_value = fields.BigIntField()
    entry_id = fields.BigIntField(null=True)
    reason = fields.CharField(max_length=16, default="growth")
    rules_version = fields.IntField(null=True)
    created_at = fields.DatetimeField()

    class Meta:
        table = "points_level_change"


class PointsRulesVersion(Model):
    """The earning rules document — every save is a new version, the newest is in force."""

    id = fields.BigIntField(primary_key=True)
    version = fields.IntField(unique=True)
    document: dict[str, Any] = fields.JSONField()  # type: ignore[assignment]
    staff_id = fields.BigIntField(null=True)
    created_at = fields.DatetimeField()

    class Meta:
        table = "points_rules"
