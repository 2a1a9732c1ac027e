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
