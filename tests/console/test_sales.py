"""Flash sales and blind boxes in the console: create, watch live stock, see winners."""

from __future__ import annotations

from datetime import timedelta

import httpx

from mall.kit import clock
from mall.seckill import service as seckill_service
from tests.conftest import MemberLogin
from tests.console.conftest import Console


def shanghai_local(minutes_from_now: int) -> str:
    moment = (clock.now() + timedelta(minutes=minutes_from_now)).astimezone(clock.SHANGHAI)
    return moment.strftime("%Y-%m-%dT%H:%M")


async def test_create_seckill_session_and_watch_live_stock(
    console: Console, client: httpx.AsyncClient, member_headers: MemberLogin
) -> None:
    seckill_service.forget_local_state()
    page = console.page
    await console.sign_in("ops", "seckill")
    await page.click("button[data-action=new]")
    form = page.locator("form[data-form=seckill-session]")
    await form.locator("#f-name").fill("周五积分秒杀")
    # entered in Shanghai time: started a minute ago, so it is live
    await form.locator("#f-starts_at").fill(shanghai_local(-1))
    await form.locator("#f-ends_at").fill(shanghai_local(60))
    await form.locator("#f-item_title").fill("限量礼盒")
    await form.locator("#f-item_points").fill("500")
    await form.locator("#f-item_stock").fill("5")
    await form.locator("#f-item_limit").fill("1")
    await form.locator("button[data-action=save]").click()

    # the console moves to the session's live page
    await page.wait_for_url("**/admin#/seckill/*")
    session_id = int(page.url.rsplit("/", 1)[1])
    session = await seckill_service.get_session(session_id)
    assert session.name == "周五积分秒杀"
    assert abs((session.starts_at - clock.now()).total_seconds() + 60) < 120
    [item] = (await seckill_service.session_items_live(session_id))[1]
    assert item.item.stock == 5 and item.item.points_price == 500
    live = page.locator(f"[data-live-stock='{item.item.id}']")
    assert await live.text_content() == "5"
    await page.click("button[data-action=warm]")

    # a member wins one unit; the page's polling shows the stock fall and the winner
    from mall.points import service as points_service

    headers = await member_headers("carol")
    me = (await client.get("/api/v1/me", headers=headers)).json()
    await points_service.earn(me["id"], 1000, idempotency_key="console-test", reason="test")
    r = await client.post(f"/api/v1/seckill/items/{item.item.id}/attempt", headers=headers)
    assert r.json()["result"] == "won", r.text
    await page.wait_for_selector(f"[data-live-stock='{item.item.id}']:text-is('4')")
    await seckill_service.drain()
    await page.locator(f"tr[data-item='{item.item.id}'] button[data-action=winners]").click()
    await page.wait_for_selector(f"dialog td:text-is('#{me['id']}')")


async def test_create_blind_box_open_it_and_see_the_draw_log(
    console: Console, client: httpx.AsyncClient, member_headers: MemberLogin
) -> None:
    page = console.page
    await console.sign_in("ops", "blind-boxes")
    await page.click("button[data-action=new]")
    form = page.locator("form[data-form=blind-box]")
    await form.locator("#f-name").fill("夏日盲盒")
    await form.locator("#f-points_cost").fill("100")
    await form.locator("#f-prize_name").fill("帆布包")
    await form.locator("#f-prize_tier").fill("common")
    await form.locator("#f-prize_weight").fill("100")
    await form.locator("#f-prize_stock").fill("3")
    await form.locator("button[data-action=save]").click()
    await page.wait_for_url("**/admin#/blind-boxes/*")
    series_id = int(page.url.rsplit("/", 1)[1])
    await page.click("button[data-action=on-sale]")
    await page.locator("button[data-action=off-sale]").wait_for()

    from mall.blindbox import service as blindbox_service
    from mall.points import service as points_service

    blindbox_service.forget_local_state()
    headers = await member_headers("dave")
    r = await client.patch("/api/v1/me", json={"birthday": "1990-05-01"}, headers=headers)
    assert r.status_code == 200, r.text
    me = r.json()
    await points_service.earn(me["id"], 500, idempotency_key="console-bb", reason="test")
    r = await client.post(f"/api/v1/blind-boxes/{series_id}/draw", headers=headers)
    assert r.status_code == 200, r.text
    prize_id = r.json()["prize"]["id"]
    await blindbox_service.drain()  # the worker's consumer records the draw
    # polled: live stock falls to 2 and the draw shows in the log
    await page.wait_for_selector(f"[data-live-stock='{prize_id}']:text-is('2')")
    await page.wait_for_selector(f"[data-role=draws] td:text-is('#{me['id']}')")
