"""Items with pictures made in the console reach the shopper APIs."""

from __future__ import annotations

import httpx

from tests.conftest import MemberLogin
from tests.console.conftest import Console, png_bytes


async def test_points_item_with_dropped_picture_reaches_the_shopper(
    console: Console, client: httpx.AsyncClient, member_headers: MemberLogin
) -> None:
    page = console.page
    await console.sign_in("ops", "points-mall")
    await page.click("button[data-action=new]")
    form = page.locator("form[data-form=points-item]")
    await form.locator("#f-name").fill("保温杯 500ml")
    await form.locator("#f-points_price").fill("1200")
    await form.locator("#f-marked_value").fill("69.90")
    await form.locator("#f-total_stock").fill("30")
    await form.locator("#f-limit_per_member").fill("1")
    await console.drop_files(
        "form[data-form=points-item] [data-role=dropzone]",
        [("cup.png", "image/png", png_bytes((30, 120, 200)))],
    )
    # the preview shows at once; the stored URL replaces it when the upload is done
    thumb = form.locator("figure.thumb.is-done img")
    await thumb.wait_for()
    picture = await thumb.get_attribute("src")
    assert picture and picture.startswith("/static/uploads/")
    # the stored picture loads from the server (it may still be loading just now)
    assert await thumb.evaluate(
        """img => img.complete ? img.naturalWidth > 0 : new Promise(done => {
            img.addEventListener("load", () => done(img.naturalWidth > 0), { once: true });
            img.addEventListener("error", () => done(false), { once: true });
        })"""
    )
    await form.locator("input[name=on_shelf]").check()
    await form.locator("button[data-action=save]").click()
    await page.wait_for_selector("tr[data-id] td:has-text('保温杯 500ml')")

    # the shopper sees it, with its picture, its price and its stock
    member = await member_headers("alice")
    r = await client.get("/api/v1/points-mall/items", headers=member)
    assert r.status_code == 200, r.text
    [item] = [i for i in r.json()["items"] if i["name"] == "保温杯 500ml"]
    assert item["pictures"] == [picture]
    assert item["points_price"] == 1200
    assert item["marked_value_fen"] == 6990
    assert item["stock_left"] == 30
    served = await client.get(picture)
    assert served.status_code == 200 and served.headers["content-type"].startswith("image/")

    # stock goes up by an audited adjustment with a reason
    row = page.locator(f"tr[data-id='{item['id']}']")
    await row.locator("button[data-action=adjust-stock]").click()
    stock_form = page.locator("form[data-form=stock]")
    await stock_form.locator("#f-delta").fill("20")
    await stock_form.locator("#f-reason").fill("到货入库")
    await stock_form.locator("button[type=submit]").click()
    await page.wait_for_selector(f"[data-stock='{item['id']}']:has-text('50 / 50')")
    r = await client.get(f"/api/v1/points-mall/items/{item['id']}", headers=member)
    assert r.json()["stock_left"] == 50

    # off the shelf: the shopper no longer sees it
    await row.locator("button[data-action=off-shelf]").click()
    await row.locator("button[data-action=on-shelf]").wait_for()
    r = await client.get("/api/v1/points-mall/items", headers=member)
    assert "保温杯 500ml" not in [i["name"] for i in r.json()["items"]]


async def test_product_with_picture_reaches_the_catalog(
    console: Console, client: httpx.AsyncClient, member_headers: MemberLogin
) -> None:
    page = console.page
    await console.sign_in("ops", "products")
    await page.click("button[data-action=new]")
    form = page.locator("form[data-form=product]")
    await form.locator("#f-name").fill("植萃洗衣液 2kg")
    await form.locator("#f-list_price").fill("59.90")
    await form.locator("#f-sku_specs").fill("规格:2kg")
    await form.locator("#f-sku_price").fill("59.9")
    await form.locator("#f-sku_stock").fill("100")
    await form.locator("[data-role=file-input]").set_input_files(
        files=[{"name": "bottle.png", "mimeType": "image/png", "buffer": png_bytes((20, 160, 90))}]
    )
    await form.locator("figure.thumb.is-done").wait_for()
    await form.locator("input[name=on_shelf]").check()
    await form.locator("button[data-action=save]").click()
    await page.wait_for_selector("tr[data-id] td:has-text('植萃洗衣液 2kg')")

    r = await client.get("/api/v1/catalog/products", headers=await member_headers("bob"))
    assert r.status_code == 200, r.text
    [product] = [p for p in r.json()["items"] if p["name"] == "植萃洗衣液 2kg"]
    assert product["list_price"] == 5990
    assert product["cover"] and product["cover"].startswith("/static/uploads/")
    assert product["sold_out"] is False
