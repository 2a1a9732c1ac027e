"""One price truth: the level discount, the member-day rule and the points-as-cash rate
live in one rules document; what `GET /api/v1/points` shows and what the catalog and
checkout charge are read from the same numbers."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from mall import pricing
from mall.catalog.models import Product, Sku
from mall.kit import clock
from mall.members.models import Member
from mall.points import service
from mall.points.models import PointsRulesVersion
from mall.points.schemas import Rules
from tests.conftest import MemberLogin, StaffLogin

# 2025-03-11, noon in Shanghai: not member day (the 18th)
TUESDAY = datetime(2025, 3, 11, 4, tzinfo=UTC)


async def _put_rules(
    client: httpx.AsyncClient, admin: dict[str, str], change: Any
) -> httpx.Response:
    current = (await client.get("/api/admin/v1/rules", headers=admin)).json()
    rules = current["rules"]
    change(rules)
    return await client.put(
        "/api/admin/v1/rules",
        json={"rules": rules, "base_version": current["version"]},
        headers={**admin, "Accept-Language": "en"},
    )


async def _shown_and_charged(
    client: httpx.AsyncClient, headers: dict[str, str], product: Product, sku: Sku, points: int = 0
) -> tuple[dict[str, Any], int, dict[str, Any]]:
    shown = (await client.get("/api/v1/points", headers=headers)).json()
    detail = (await client.get(f"/api/v1/catalog/products/{product.id}", headers=headers)).json()
    r = await client.post(
        "/api/v1/orders/preview",
        json={"items": [{"sku_id": sku.id, "quantity": 1}], "points": points},
        headers=headers,
    )
    assert r.status_code == 200, r.text
    return shown, detail["price_today"], r.json()


async def test_each_rule_changed_through_the_api_is_shown_and_charged_alike(
    client: httpx.AsyncClient, member_headers: MemberLogin, staff_headers: StaffLogin
) -> None:
    clock.set_now(TUESDAY)
    admin = await staff_headers("admin")
    headers = await member_headers("truth")
    await Member.filter(openid="dev_truth").update(level=1, growth_value=600)
    member = await Member.get(openid="dev_truth")
    await service.earn(member.id, 5000, idempotency_key="seed", reason="t", counts_for_growth=False)
    product = await Product.create(name="大衣", list_price=12345, on_shelf=True)
    sku = await Sku.create(product_id=product.id, price=12345, stock=10)

    # the defaults agree: level 1 shown 98% and charged 98%
    shown, listed, charged = await _shown_and_charged(client, headers, product, sku)
    assert shown["discount_percent"] == 98 and shown["price_percents_today"] == [98]
    assert listed == charged["member_total_fen"] == 12098

    # 1. the level discount
    def level_90(rules: dict[str, Any]) -> None:
        rules["levels"][1]["discount_percent"] = 90

    assert (await _put_rules(client, admin, level_90)).status_code == 200
    shown, listed, charged = await _shown_and_charged(client, headers, product, sku)
    assert shown["discount_percent"] == 90 and shown["price_basis_today"] == "level"
    assert listed == charged["member_total_fen"] == 11111  # 12345 x 90%, half up

    # 2. the member-day rule: today becomes member day, level 1 pays 80% that day
    def member_day_today(rules: dict[str, Any]) -> None:
        rules["pricing"]["member_day_of_month"] = 11
        rules["levels"][1]["member_day_percent"] = 80

    assert (await _put_rules(client, admin, member_day_today)).status_code == 200
    shown, listed, charged = await _shown_and_charged(client, headers, product, sku)
    assert shown["member_day"] == {
        "day_of_month": 11, "next_date": "2025-03-11", "today": True, "percent": 80,
        "policy": "member_day",
    }  # fmt: skip
    assert shown["price_percents_today"] == [80] and charged["member_day"] is True
    assert listed == charged["member_total_fen"] == 9876

    def both_rates(rules: dict[str, Any]) -> None:
        rules["pricing"]["member_day_policy"] = "both"

    assert (await _put_rules(client, admin, both_rates)).status_code == 200
    shown, listed, charged = await _shown_and_charged(client, headers, product, sku)
    assert shown["price_percents_today"] == [80, 90] == charged["member_percents"]
    assert listed == charged["member_total_fen"] == 8888  # 9876 x 90% = 8888.4

    # 3. points as cash: 50 points = 1 yuan, at most 20% of the goods
    def cheaper_points(rules: dict[str, Any]) -> None:
        rules["pricing"]["points_per_yuan"] = 50
        rules["pricing"]["points_max_share_percent"] = 20

    assert (await _put_rules(client, admin, cheaper_points)).status_code == 200
    shown, _listed, charged = await _shown_and_charged(client, headers, product, sku, 500)
    assert shown["points_per_yuan"] == 50 and shown["points_max_share_percent"] == 20
    assert shown["points_worth_fen"] == 10000  # 5000 points x 2 fen
    assert charged["points_used"] == 500 and charged["points_fen"] == 1000
    _shown, _listed, capped = await _shown_and_charged(client, headers, product, sku, 5000)
    assert capped["points_cap_fen"] == 8888 * 20 // 100 == capped["points_fen"] == 1777
    assert capped["points_used"] == 889  # the fewest points worth 1777 fen at 2 fen each

    # the next member day moves with the rule; on other days only the level rate applies
    clock.set_now(datetime(2025, 3, 12, 4, tzinfo=UTC))
    headers = await member_headers("truth")  # a day later: a fresh token
    shown, listed, charged = await _shown_and_charged(client, headers, product, sku)
    assert shown["member_day"]["next_date"] == "2025-04-11" and not shown["member_day"]["today"]
    assert shown["price_percents_today"] == [90] and listed == charged["member_total_fen"] == 11111


async def test_a_stored_old_shape_document_keeps_charging_what_it_charged(
    client: httpx.AsyncClient, member_headers: MemberLogin
) -> None:
    """Documents saved before the move kept the level rates twice; the charged table wins,
    so nobody's price changes, and display now agrees with it."""
    clock.set_now(TUESDAY)
    old = Rules().model_dump(mode="json")
    old["levels"][1]["discount_percent"] = 90  # what the old display showed
    for level in old["levels"]:
        del level["member_day_percent"]
    old["pricing"]["level_percent_by_level"] = {"0": 100, "1": 97, "3": 85}
    old["pricing"]["member_day_percent_by_level"] = {"0": 95, "2": 89}
    await PointsRulesVersion.create(version=1, document=old, created_at=clock.now())
    rules = await service.get_rules()
    assert [lv.discount_percent for lv in rules.levels] == [100, 97, 97, 85]
    assert [lv.member_day_percent for lv in rules.levels] == [95, 95, 89, 89]
    assert "level_percent_by_level" not in rules.model_dump()["pricing"]

    headers = await member_headers("old")
    await Member.filter(openid="dev_old").update(level=1)
    product = await Product.create(name="外套", list_price=10000, on_shelf=True)
    sku = await Sku.create(product_id=product.id, price=10000, stock=1)
    shown, listed, charged = await _shown_and_charged(client, headers, product, sku)
    assert shown["discount_percent"] == 97
    assert listed == charged["member_total_fen"] == 9700


async def test_sending_the_old_tables_is_accepted_only_when_they_agree(
    client: httpx.AsyncClient, staff_headers: StaffLogin
) -> None:
    admin = await staff_headers("admin")

    def disagreeing(rules: dict[str, Any]) -> None:
        rules["levels"][1]["discount_percent"] = 90
        rules["pricing"]["level_percent_by_level"] = {"0": 100, "1": 98}

    r = await _put_rules(client, admin, disagreeing)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "VALIDATION_ERROR"
    assert "level_percent_by_level" in r.text

    def agreeing(rules: dict[str, Any]) -> None:
        rules["pricing"]["member_day_percent_by_level"] = {"0": 95, "1": 92, "2": 90, "3": 88}

    r = await _put_rules(client, admin, agreeing)
    assert r.status_code == 200, r.text
    assert "member_day_percent_by_level" not in r.json()["rules"]["pricing"]
    assert [lv["member_day_percent"] for lv in r.json()["rules"]["levels"]] == [95, 92, 90, 88]


@pytest.mark.nodb
def test_a_level_without_a_member_day_rate_pays_its_level_rate_on_member_day() -> None:
    data = Rules().model_dump(mode="json")
    data["levels"].append(
        {"level": 4, "name": "黑金会员", "threshold": 20000, "discount_percent": 85}
    )
    rules = Rules.model_validate(data)
    prices = rules.pricing_rules()
    assert prices.level_percent_by_level == {0: 100, 1: 98, 2: 95, 3: 92, 4: 85}
    assert prices.member_day_percent_by_level == {0: 95, 1: 92, 2: 90, 3: 88, 4: 85}
    member_day = datetime(2025, 3, 18, 4, tzinfo=UTC)
    assert pricing.member_unit_price(10000, 4, member_day, prices) == 8500
