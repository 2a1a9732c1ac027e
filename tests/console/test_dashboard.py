"""The dashboard figures (API) and their charts (browser, with a screenshot kept)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.conftest import StaffLogin
from tests.console.conftest import Console
from tests.console.seed import label, month_start, seed

CHARTS = ["points", "binding", "signups", "repurchase", "sell-through", "coupons", "stored-value"]


@pytest.mark.clock
async def test_dashboard_figures(client: httpx.AsyncClient, staff_headers: StaffLogin) -> None:
    seeded = await seed()
    r = await client.get(
        "/api/admin/v1/dashboard", params={"months": 3}, headers=await staff_headers("ops")
    )
    assert r.status_code == 200, r.text
    d = r.json()
    months = [label(month_start(o)) for o in (-2, -1, 0)]
    assert d["months"] == months
    assert d["consumption_band"] == [0.3, 0.5]
    points = {p["month"]: p for p in d["points"]}
    assert (points[months[0]]["issued"], points[months[0]]["spent"]) == (1000, 400)
    assert points[months[0]]["consumption_rate"] == 0.4
    assert points[months[1]]["consumption_rate"] == 0.1
    assert (points[months[2]]["issued"], points[months[2]]["spent"]) == (500, 300)
    assert points[months[2]]["consumption_rate"] == 0.6
    assert d["totals"]["points_issued"] == 2500 and d["totals"]["points_spent"] == 800
    assert d["totals"]["consumption_rate"] == 0.32

    # 4 orders imported this month, 3 bound
    assert d["binding"][-1] == {"month": months[2], "imported": 4, "bound": 3, "rate": 0.75}
    assert [b["imported"] for b in d["binding"][:2]] == [0, 0]
    # two members joined two months ago, one this month
    assert [s["members"] for s in d["signups"]] == [2, 0, 1]
    assert d["totals"]["members"] == 3
    # this quarter: m1 bought twice, m2 once -> 1 of 2 buyers came back
    this_quarter = d["repurchase"][-1]
    assert (this_quarter["buyers"], this_quarter["repeat_buyers"]) == (2, 1)
    assert this_quarter["rate"] == 0.5
    assert len(d["repurchase"]) == 4
    # 2 of 10 flash-sale units sold
    [sale] = d["seckill"]
    assert (sale["stock"], sale["sold"], sale["rate"]) == (10, 2, 0.2)
    assert sale["state"] == "live"
    # 3 coupons issued, 1 used
    assert (d["coupons"]["issued"], d["coupons"]["used"]) == (3, 1)
    assert d["coupons"]["rate"] == 0.3333
    # stored value: 50 last month, 160 now (100 + 10 bonus + 50)
    sv = d["stored_value"]
    assert sv["available"] is True
    assert (sv["outstanding_fen"], sv["principal_fen"], sv["bonus_fen"]) == (16000, 15000, 1000)
    assert [m["outstanding_fen"] for m in sv["months"]] == [0, 5000, 16000]
    assert seeded.members


async def test_dashboard_needs_staff(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/admin/v1/dashboard")
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "UNAUTHORIZED"


async def test_dashboard_renders_its_charts(console: Console, artifacts: Path) -> None:
    await seed(rich=True)
    page = console.page
    await console.sign_in("ops", "dashboard")
    await page.wait_for_selector("svg.chart[data-chart=stored-value]")
    for name in CHARTS:
        assert await page.locator(f"svg.chart[data-chart='{name}']").count() == 1, name
    points = page.locator("svg[data-chart=points]")
    # 12 months x (issued, spent) bars, the 30%-50% band and the consumption-rate line
    assert await points.locator("rect.bar").count() == 24
    assert await points.locator("rect.band[data-band='0.3-0.5']").count() == 1
    assert await points.locator("polyline.rate-line").count() == 1
    assert await points.locator("circle.rate-dot.in-band").count() >= 1
    assert await points.locator("circle.rate-dot.off-band").count() >= 1
    assert await page.locator("svg[data-chart=binding] rect.bar").count() == 1
    assert await page.locator("svg[data-chart=signups] rect.bar").count() >= 10
    assert await page.locator("svg[data-chart=repurchase] rect.bar").count() == 1
    assert await page.locator("svg[data-chart=sell-through] rect.bar").count() == 4
    assert await page.locator("svg[data-chart=coupons] rect.bar").count() == 1
    assert await page.locator("svg[data-chart=stored-value] polyline.area-line").count() == 1
    # the KPI cards: 160 yuan owed; the period's consumption rate with its band verdict
    assert "¥160.00" in (await page.text_content("[data-kpi=stored-value]") or "")
    assert await page.locator("[data-kpi=consumption].kpi-good").count() == 1
    # the bars are drawn to scale: the tallest issued bar is the 1700-point month
    heights = await points.locator("rect.bar-a").evaluate_all(
        "bars => bars.map(b => [Number(b.dataset.value), b.getBBox().height])"
    )
    tallest = max(heights, key=lambda vh: vh[1])
    assert tallest[0] == 1700
    await page.screenshot(path=str(artifacts / "dashboard.png"), full_page=True)
    # the English switch redraws the charts in English
    await page.click("button[data-lang=en]")
    await page.wait_for_selector("[data-card=points] h2:text-is('Points issued vs spent')")
    assert await page.locator("svg.chart").count() == len(CHARTS)
    assert await points.locator("text.legend").all_text_contents() == [
        "Issued",
        "Spent",
        "Consumption rate",
    ]
    await page.screenshot(path=str(artifacts / "dashboard-en.png"), full_page=True)
