"""The arithmetic of refunds by line: shares round down until the last unit, so any
sequence of partial refunds adds up to exactly what was paid."""

from __future__ import annotations

import random

import pytest

from mall.errors import MallError
from mall.orders.models import Order, OrderLine
from mall.orders.service import plan_refund, spread

pytestmark = pytest.mark.nodb


def _order(lines: list[OrderLine], *, shipping: int, wallet: int, earned: int = 0) -> Order:
    due = sum(ln.due_fen for ln in lines) + shipping
    return Order(
        id=1, number="1", shipping_fen=shipping, amount_due_fen=due, wallet_fen=wallet,
        cash_fen=due - wallet, earned_points=earned, earn_base_fen=due if earned else 0,
    )  # fmt: skip


def _line(line_id: int, quantity: int, due: int, points: int) -> OrderLine:
    return OrderLine(
        id=line_id, sku_id=line_id, quantity=quantity, due_fen=due, points_used=points,
        refunded_quantity=0, refunded_due_fen=0, refunded_points=0,
    )  # fmt: skip


def _apply(order: Order, lines: list[OrderLine], wanted: dict[int, int] | None) -> None:
    plan = plan_refund(order, lines, wanted)
    for p in plan.lines:
        line = next(ln for ln in lines if ln.id == p.line_id)
        line.refunded_quantity += p.quantity
        line.refunded_due_fen += p.due_fen
        line.refunded_points += p.points
    order.refunded_fen += plan.money_fen
    order.refunded_cash_fen += plan.cash_fen
    order.refunded_wallet_fen += plan.wallet_fen
    order.refunded_points += plan.points
    order.earned_points_reversed += plan.earned_points_reversed
    assert plan.cash_fen >= 0 and plan.wallet_fen >= 0 and plan.earned_points_reversed >= 0


def test_spread_is_exact_and_proportional() -> None:
    assert spread(3000, [9230, 2760]) == [2309, 691]
    assert spread(10, [1, 1, 1]) == [4, 3, 3]
    assert spread(5, [0, 0]) == [0, 0]
    assert sum(spread(12345, [7, 11, 13, 17])) == 12345


def test_random_partial_refunds_add_up_exactly() -> None:
    rng = random.Random(7)
    for _ in range(300):
        lines = [
            _line(i, rng.randint(1, 7), rng.randint(0, 50_000), rng.randint(0, 3000))
            for i in range(1, rng.randint(2, 5))
        ]
        order = _order(lines, shipping=rng.choice([0, 800, 1000]), wallet=0, earned=0)
        order.wallet_fen = rng.randint(0, order.amount_due_fen)
        order.cash_fen = order.amount_due_fen - order.wallet_fen
        order.earned_points = order.amount_due_fen // 1000
        order.earn_base_fen = order.amount_due_fen
        while any(ln.refunded_quantity < ln.quantity for ln in lines):
            line = rng.choice([ln for ln in lines if ln.refunded_quantity < ln.quantity])
            _apply(order, lines, {line.id: rng.randint(1, line.quantity - line.refunded_quantity)})
        assert order.refunded_fen == order.amount_due_fen
        assert order.refunded_cash_fen == order.cash_fen
        assert order.refunded_wallet_fen == order.wallet_fen
        assert order.refunded_points == sum(ln.points_used for ln in lines)
        assert order.earned_points_reversed == order.earned_points
        assert all(ln.refunded_due_fen == ln.due_fen for ln in lines)


def test_shipping_comes_back_with_the_last_unit_only() -> None:
    lines = [_line(1, 2, 1001, 0), _line(2, 1, 500, 0)]
    order = _order(lines, shipping=800, wallet=0)
    first = plan_refund(order, lines, {1: 1})
    assert (first.goods_fen, first.shipping_fen, first.everything) == (500, 0, False)
    everything = plan_refund(order, lines, None)
    assert (everything.money_fen, everything.shipping_fen) == (1001 + 500 + 800, 800)


def test_bad_refund_requests() -> None:
    lines = [_line(1, 2, 1000, 0)]
    order = _order(lines, shipping=0, wallet=0)
    with pytest.raises(MallError) as unknown:
        plan_refund(order, lines, {9: 1})
    assert unknown.value.code == "ORDER_REFUND_LINE_UNKNOWN"
    with pytest.raises(MallError) as too_many:
        plan_refund(order, lines, {1: 3})
    assert too_many.value.code == "ORDER_REFUND_TOO_MANY"
    _apply(order, lines, None)
    with pytest.raises(MallError) as nothing:
        plan_refund(order, lines, None)
    assert nothing.value.code == "ORDER_NOTHING_TO_REFUND"
