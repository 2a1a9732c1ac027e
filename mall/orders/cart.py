"""Pricing a cart: lines, member prices, discounts and how a total spreads over lines."""

from __future__ import annotations

from dataclasses import dataclass, field

from mall.catalog import service as catalog_service
from mall.coupons import service as coupons_service
from mall.kit import clock
from mall.members.models import Member
from mall.orders.common import DELIVERY_UNAVAILABLE, ITEM_UNAVAILABLE
from mall.orders.schemas import (
    CheckoutBreakdown,
)
from mall.points import service as points_service
from mall.pricing import CartLine, PricingInput, PricingRules, price_cart
from mall.wallet import service as wallet_service

# --- pricing a cart ---------------------------------------------------------------


async def pricing_rules() -> PricingRules:
    """The rules document ops edit (`/api/admin/v1/rules`): its pricing section and the
    levels' rates, the same numbers `GET /api/v1/points` shows."""
    return (await points_service.get_rules()).pricing_rules()


async def _ancestors() -> dict[int, list[int]]:
    parents = {c.id: c.parent_id for c in await catalog_service.list_categories()}
    chains: dict[int, list[int]] = {}
    for category_id in parents:
        chain, current = [], category_id
        while current is not None and current not in chain:
            chain.append(current)
            current = parents.get(current)
        chains[category_id] = chain
    return chains


@dataclass
class _Cart:
    lines: list[CartLine]
    specs: dict[int, dict[str, str]] = field(default_factory=dict)


async def _cart(items: list[tuple[int, int]], delivery: str) -> _Cart:
    merged: dict[int, int] = {}
    for sku_id, quantity in items:
        merged[sku_id] = merged.get(sku_id, 0) + quantity
    chains = await _ancestors()
    cart = _Cart(lines=[])
    for sku_id, quantity in merged.items():
        sku = await catalog_service.get_sku(sku_id)
        product = await catalog_service.get_product(sku.product_id)
        if not product.on_shelf:
            raise ITEM_UNAVAILABLE(name=product.name)
        if product.delivery_modes and delivery not in product.delivery_modes:
            raise DELIVERY_UNAVAILABLE(name=product.name)
        cart.specs[sku.id] = dict(sku.specs or {})
        cart.lines.append(
            CartLine(
                sku_id=sku.id,
                product_id=product.id,
                category_ids=chains.get(product.category_id or 0, []),
                quantity=quantity,
                list_price_fen=sku.price,
                name=product.name,
            )
        )
    return cart


async def cart_lines(items: list[tuple[int, int]], delivery: str) -> list[CartLine]:
    """The cart as pricing sees it; SKUs named twice are merged."""
    return (await _cart(items, delivery)).lines


async def _price(
    member: Member,
    cart: _Cart,
    *,
    coupon_id: int | None,
    points: int,
    delivery: str,
    use_wallet: bool,
    placing: bool,
) -> CheckoutBreakdown:
    """The breakdown and how it is paid. When placing an order, the points asked for are
    priced as asked (the hold then fails if the balance is short) and a wallet that does
    not exist is an error; a preview caps points at the balance and only notes it."""
    await member.refresh_from_db(fields=["points_balance", "level"])
    priced = price_cart(
        PricingInput(
            lines=cart.lines,
            at=clock.now(),
            member_level=member.level,
            coupons=await coupons_service.offers_for(member.id, also=coupon_id),
            coupon_id=coupon_id,
            points_requested=points,
            points_available=points if placing else max(member.points_balance, 0),
            delivery=delivery,  # type: ignore[arg-type]
            rules=await pricing_rules(),
        )
    )
    out = CheckoutBreakdown.model_validate({**priced.model_dump(), "use_wallet": use_wallet})
    out.wallet_balance_fen = int((await wallet_service.get_balance(member.id)).total_fen)
    if use_wallet:
        out.wallet_fen = min(out.wallet_balance_fen or 0, out.amount_due_fen)
    out.cash_fen = out.amount_due_fen - out.wallet_fen
    return out


async def preview(
    member: Member,
    items: list[tuple[int, int]],
    *,
    coupon_id: int | None,
    points: int,
    delivery: str,
    use_wallet: bool = False,
) -> CheckoutBreakdown:
    """The full breakdown, line by line, with every coupon the member holds and why it
    does or does not apply, and what the wallet would pay. Nothing is reserved."""
    return await _price(
        member,
        await _cart(items, delivery),
        coupon_id=coupon_id,
        points=points,
        delivery=delivery,
        use_wallet=use_wallet,
        placing=False,
    )


def spread(total: int, weights: list[int]) -> list[int]:
    """Split `total` in proportion to `weights` (largest remainder; sums exactly)."""
    weight_sum = sum(weights)
    if total <= 0 or weight_sum <= 0:
        return [0] * len(weights)
    shares = [total * w // weight_sum for w in weights]
    by_remainder = sorted(
        range(len(weights)), key=lambda i: (-(total * weights[i] % weight_sum), i)
    )
    for i in by_remainder[: total - sum(shares)]:
        shares[i] += 1
    return shares
