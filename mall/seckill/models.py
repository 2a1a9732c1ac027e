"""Seckill sessions, their items, and the orders that winners turn into."""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING

from tortoise import fields
from tortoise.models import Model

if TYPE_CHECKING:
    from mall.members.models import Member


class SessionStatus(StrEnum):
    SCHEDULED = "scheduled"
    CLOSED = "closed"  # closed early by ops


class OrderStatus(StrEnum):
    CONFIRMED = "confirmed"  # points spent (or free): the member has it
    PENDING_PAYMENT = "pending_payment"  # cash due before pay_deadline
    PAID = "paid"
    EXPIRED = "expired"  # unpaid after the deadline; the unit went back to stock
    RELEASED = "released"  # lost at persistence (e.g. not enough points); unit went back
    REFUNDED = "refunded"  # paid, then its order was refunded: the unit went back


# Orders in these states hold a unit of stock (a refunded win's unit left with the goods).
HOLDING = (
    OrderStatus.CONFIRMED,
    OrderStatus.PENDING_PAYMENT,
    OrderStatus.PAID,
    OrderStatus.REFUNDED,
)


class SeckillSession(Model):
    id = fields.BigIntField(primary_key=True)
    name = fields.CharField(max_length=100)
    starts_at = fields.DatetimeField(db_index=True)
    ends_at = fields.DatetimeField(db_index=True)
    status = fields.CharEnumField(SessionStatus, max_length=16, default=SessionStatus.SCHEDULED)
    closed_at = fields.DatetimeField(null=True)
    # who may attempt (fair sales); checked in the attempt's Lua against token claims
    require_phone = fields.BooleanField(default=False)
    joined_before = fields.DatetimeField(null=True)
    min_level = fields.IntField(default=0)
    exclude_flagged = fields.BooleanField(default=False)
    require_booking = fields.BooleanField(default=False)
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    items: fields.ReverseRelation[SeckillItem]

    class Meta:
        table = "seckill_session"


class SeckillItem(Model):
    """A unit on sale. `stock` is the total put on sale — `sold` counts units held by
    orders and is the database's own guard against oversell (`sold < stock`)."""

    id = fields.BigIntField(primary_key=True)
    session: fields.ForeignKeyRelation[SeckillSession] = fields.ForeignKeyField(
        "models.SeckillSession", related_name="items", on_delete=fields.CASCADE
    )
    title = fields.CharField(max_length=100)
    product_id = fields.BigIntField(null=True)  # a catalog product, or None for a gift
    image_url = fields.CharField(max_length=512, default="")
    points_price = fields.BigIntField(default=0)
    cash_price_fen = fields.BigIntField(default=0)
    stock = fields.IntField()
    sold = fields.IntField(default=0)
    per_member_limit = fields.IntField(default=1)
    sort = fields.IntField(default=0)
    created_at = fields.DatetimeField(auto_now_add=True)

    session_id: int

    class Meta:
        table = "seckill_item"


class SeckillOrder(Model):
    """A persisted win, idempotent by the reservation id the attempt Lua handed out."""

    id = fields.BigIntField(primary_key=True)
    reservation_id = fields.CharField(max_length=40, unique=True)
    item: fields.ForeignKeyRelation[SeckillItem] = fields.ForeignKeyField(
        "models.SeckillItem", related_name="orders", on_delete=fields.RESTRICT
    )
    member: fields.ForeignKeyRelation[Member] = fields.ForeignKeyField(
        "models.Member", related_name="seckill_orders", on_delete=fields.RESTRICT
    )
    points_price = fields.BigIntField(default=0)
    cash_price_fen = fields.BigIntField(default=0)
    status = fields.CharEnumField(OrderStatus, max_length=16, db_index=True)
    release_reason = fields.CharField(max_length=32, default="")
    # released/expired: has the unit been handed back to the Redis stock yet?
    stock_returned = fields.BooleanField(default=False)
    pay_deadline = fields.DatetimeField(null=True, db_index=True)
    # the mall order paying this win: from then on the order's close job owns the deadline
    mall_order_id = fields.BigIntField(null=True, unique=True)
    won_at = fields.DatetimeField()
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    item_id: int
    member_id: int

    class Meta:
        table = "seckill_order"


class BookingReminder(StrEnum):
    DUE = "due"  # not reminded yet
    SENDING = "sending"  # claimed by a reminder run (never sent twice)
    SENT = "sent"
    NO_GRANT = "no_grant"  # the member allowed no message of the template
    CAPPED = "capped"  # the monthly touch cap was reached
    REFUSED = "refused"  # WeChat said the member refused (43101)
    CANCELLED = "cancelled"  # the booking was cancelled before the reminder


class SeckillBooking(Model):
    """A member's booking (预约) of a session: a reminder before it starts, and the
    ticket in when ops require booking. One row per (session, member); cancelling keeps
    the row (`cancelled_at`), booking again clears it."""

    id = fields.BigIntField(primary_key=True)
    session: fields.ForeignKeyRelation[SeckillSession] = fields.ForeignKeyField(
        "models.SeckillSession", related_name="bookings", on_delete=fields.CASCADE
    )
    member_id = fields.BigIntField()
    created_at = fields.DatetimeField(auto_now_add=True)
    cancelled_at = fields.DatetimeField(null=True)
    reminder = fields.CharEnumField(BookingReminder, max_length=16, default=BookingReminder.DUE)
    reminded_at = fields.DatetimeField(null=True)

    session_id: int

    class Meta:
        table = "seckill_booking"
        unique_together = (("session_id", "member_id"),)
        indexes = (("member_id", "created_at"),)


class MemberFlag(Model):
    """A member ops flagged as a suspected scalper: sessions with `exclude_flagged` turn
    them away. A row is the flag; unflagging deletes it (the audit log keeps both)."""

    id = fields.BigIntField(primary_key=True)
    member_id = fields.BigIntField(unique=True)
    reason = fields.CharField(max_length=200)
    flagged_by = fields.CharField(max_length=64, default="")
    flagged_at = fields.DatetimeField()

    class Meta:
        table = "member_flag"
