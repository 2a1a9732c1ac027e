"""Top-ups end to end: plan -> POST /wallet/top-ups -> the member pays -> a verified
notification (or the poll job) credits principal and bonus exactly once."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import httpx

from mall.config import Settings
from mall.kit import clock
from mall.wallet import service, tasks
from mall.wallet.models import TopUp, WalletEntry
from tests.conftest import MemberLogin
from tests.wallet.fake_pay import NOTIFY_PATH, FakePay
from tests.wallet.helpers import assert_ledger_clean, member_id, plan, staff_token, start_top_up


async def _wallet(client: httpx.AsyncClient, headers: dict[str, str]) -> dict[str, Any]:
    r = await client.get("/api/v1/wallet", headers=headers)
    assert r.status_code == 200, r.text
    return dict(r.json())


async def test_top_up_end_to_end_credited_once(
    client: httpx.AsyncClient,
    fake_pay: FakePay,
    member_headers: MemberLogin,
) -> None:
    staff = await staff_token("ops")
    r = await client.post(
        "/api/admin/v1/wallet/plans",
        json={"name": "充1000送100", "amount_fen": 100000, "bonus_fen": 10000},
        headers=staff,
    )
    assert r.status_code == 201, r.text
    plan_id = r.json()["id"]
    alice = await member_headers("alice")
    offered = (await client.get("/api/v1/wallet/plans", headers=alice)).json()
    assert [(p["id"], p["amount_fen"], p["bonus_fen"]) for p in offered] == [
        (plan_id, 100000, 10000)
    ]

    started = await start_top_up(client, alice, plan_id, key="tap-1")
    replay = await start_top_up(client, alice, plan_id, key="tap-1")
    assert replay == started
    assert fake_pay.calls["jsapi"] == 1
    no = started["top_up"]["out_trade_no"]
    assert no.startswith("T") and started["top_up"]["status"] == "pending"
    assert started["payment"]["package"] == f"prepay_id={fake_pay.orders[no].prepay_id}"
    assert fake_pay.orders[no].amount == 100000
    assert (await _wallet(client, alice))["total_fen"] == 0  # nothing before WeChat says so

    resource = fake_pay.pay(no)
    for _ in range(3):  # WeChat retries; each delivery is answered 204, credited once
        r = await fake_pay.deliver(client, resource)
        assert r.status_code == 204, r.text
    wallet = await _wallet(client, alice)
    assert (wallet["principal_fen"], wallet["bonus_fen"], wallet["total_fen"]) == (
        100000,
        10000,
        110000,
    )
    assert [e["kind"] for e in wallet["entries"]] == ["topup"]
    assert (await client.get("/api/v1/me", headers=alice)).json()["wallet_balance"] == 110000
    status = await client.get(f"/api/v1/wallet/top-ups/{started['top_up']['id']}", headers=alice)
    assert status.json()["status"] == "paid"
    await assert_ledger_clean()
    report = await tasks.check_wallet()
    assert report.ok, report.lines


async def test_bad_notifications_never_credit(
    client: httpx.AsyncClient, fake_pay: FakePay, member_headers: MemberLogin
) -> None:
    alice = await member_headers("alice")
    p = await plan(50000, 5000)
    no = (await start_top_up(client, alice, p.id))["top_up"]["out_trade_no"]
    resource = fake_pay.pay(no)

    async def post(headers: dict[str, str], body: bytes) -> httpx.Response:
        return await client.post(NOTIFY_PATH, headers=headers, content=body)

    # forged: signed with a key that is not WeChat Pay's
    r = await fake_pay.deliver(client, resource, key=fake_pay.forger_key)
    assert r.status_code == 401 and r.json()["code"] == "FAIL"
    assert r.json()["error"]["code"] == "PAY_NOTIFY_SIGNATURE_INVALID"
    assert r.json()["message"] == r.json()["error"]["message"] == "签名验证失败"
    # stale: more than 5 minutes old
    old = int(clock.now().timestamp()) - 301
    assert (await fake_pay.deliver(client, resource, timestamp=old)).status_code == 401
    # tampered: the body changed after signing
    headers, body = fake_pay.notification(resource)
    tampered = json.loads(body)
    tampered["event_type"] = "TRANSACTION.SUCCESS "
    assert (await post(headers, json.dumps(tampered).encode())).status_code == 401
    # a signature probe
    probe = fake_pay.deliver(client, resource, signature="WECHATPAY/SIGNTEST/" + "A" * 300)
    assert (await probe).status_code == 401
    # an unknown key serial, and missing headers
    assert (await fake_pay.deliver(client, resource, serial="PUB_KEY_ID_0000")).status_code == 401
    assert (await post({}, body)).status_code == 401
    # a resource not encrypted with our APIv3 key (the signature itself is fine)
    envelope = json.loads(body)
    envelope["resource"]["ciphertext"] = envelope["resource"]["ciphertext"][:-8] + "AAAAAAA="
    raw = json.dumps(envelope).encode()
    r = await post(fake_pay.signed_headers(raw), raw)
    assert r.status_code == 401 and r.json()["code"] == "FAIL"
    # a decryption failure, not a signature failure (the signature holds)
    assert r.json()["error"]["code"] == "PAY_NOTIFY_UNDECRYPTABLE"
    assert r.json()["message"] == "通知内容解密失败"
    r = await post({**fake_pay.signed_headers(raw), "Accept-Language": "en"}, raw)
    assert r.json()["message"] == "The notification's resource could not be decrypted"
    # signed, but not even an envelope with a resource
    for broken in (b"[]", b'{"event_type": "TRANSACTION.SUCCESS", "resource": "x"}'):
        r = await post(fake_pay.signed_headers(broken), broken)
        assert r.status_code == 401
        assert r.json()["error"]["code"] == "PAY_NOTIFY_UNDECRYPTABLE"
    # properly signed, but the amount or the merchant differ from our record: 5xx, retry
    wrong_amount = {**resource, "amount": {**resource["amount"], "total": 1}}
    r = await fake_pay.deliver(client, wrong_amount)
    assert r.status_code == 500 and r.json()["code"] == "FAIL"
    assert r.json()["error"]["code"] == "PAY_NOTIFY_NOT_HANDLED"
    assert (await fake_pay.deliver(client, {**resource, "mchid": "1900000999"})).status_code == 500
    assert (await fake_pay.deliver(client, {**resource, "appid": "wx000other"})).status_code == 500
    # a payment for an order nobody knows
    unknown = {**resource, "out_trade_no": "T999"}
    assert (await fake_pay.deliver(client, unknown)).status_code == 500
    assert await WalletEntry.all().count() == 0
    assert (await _wallet(client, alice))["total_fen"] == 0

    # the genuine one, even under the old platform certificate, credits exactly once
    r = await fake_pay.deliver(
        client, resource, key=fake_pay.platform_key, serial=fake_pay.platform_serial
    )
    assert r.status_code == 204
    assert (await fake_pay.deliver(client, resource)).status_code == 204
    assert (await _wallet(client, alice))["total_fen"] == 55000
    assert await WalletEntry.all().count() == 1
    await assert_ledger_clean()


async def test_not_success_states_and_unknown_events_are_acknowledged(
    client: httpx.AsyncClient, fake_pay: FakePay, member_headers: MemberLogin
) -> None:
    alice = await member_headers("alice")
    p = await plan(10000)
    no = (await start_top_up(client, alice, p.id))["top_up"]["out_trade_no"]
    unpaid = fake_pay.transaction(no)
    assert (await fake_pay.deliver(client, unpaid)).status_code == 204
    r = await fake_pay.deliver(client, unpaid, event_type="SOMETHING.NEW")
    assert r.status_code == 204
    assert (await _wallet(client, alice))["total_fen"] == 0


async def test_the_poll_job_credits_a_paid_top_up_without_notification(
    client: httpx.AsyncClient, fake_pay: FakePay, member_headers: MemberLogin
) -> None:
    alice = await member_headers("alice")
    p = await plan(30000, 3000)
    paid_no = (await start_top_up(client, alice, p.id))["top_up"]["out_trade_no"]
    other = await plan(20000)
    unpaid_no = (await start_top_up(client, alice, other.id))["top_up"]["out_trade_no"]
    fake_pay.pay(paid_no)
    await tasks.settle_payments()  # too young to ask about
    assert fake_pay.calls["query"] == 0
    clock.advance(timedelta(minutes=3))
    await tasks.settle_payments()
    assert (await TopUp.get(out_trade_no=paid_no)).status == "paid"
    assert (await TopUp.get(out_trade_no=unpaid_no)).status == "pending"
    # the notification arrives late after all: still one credit
    assert (await fake_pay.deliver(client, fake_pay.transaction(paid_no))).status_code == 204
    await tasks.settle_payments()
    assert (await _wallet(client, alice))["total_fen"] == 33000
    # the unpaid one is closed at WeChat once its deadline passes
    clock.advance(timedelta(minutes=13))
    await tasks.settle_payments()
    assert (await TopUp.get(out_trade_no=unpaid_no)).status == "closed"
    assert fake_pay.orders[unpaid_no].trade_state == "CLOSED"
    assert fake_pay.calls["close"] == 1
    await assert_ledger_clean()


async def test_status_check_credits_when_the_notification_is_late(
    client: httpx.AsyncClient, fake_pay: FakePay, member_headers: MemberLogin
) -> None:
    alice = await member_headers("alice")
    p = await plan(10000, 500)
    started = await start_top_up(client, alice, p.id)
    fake_pay.pay(started["top_up"]["out_trade_no"])
    r = await client.get(f"/api/v1/wallet/top-ups/{started['top_up']['id']}", headers=alice)
    assert r.json()["status"] == "paid"
    assert (await _wallet(client, alice))["total_fen"] == 10500
    bob = await member_headers("bob")
    r = await client.get(f"/api/v1/wallet/top-ups/{started['top_up']['id']}", headers=bob)
    assert r.status_code == 404 and r.json()["error"]["code"] == "WALLET_TOPUP_NOT_FOUND"


async def test_plan_limit_reuse_and_switched_off(
    client: httpx.AsyncClient, fake_pay: FakePay, member_headers: MemberLogin
) -> None:
    alice = await member_headers("alice")
    p = await plan(200000, 30000, per_member_limit=1)
    first = await start_top_up(client, alice, p.id)
    again = await start_top_up(client, alice, p.id)  # dismissed the sheet, tapped again
    assert again["top_up"]["id"] == first["top_up"]["id"]
    assert fake_pay.calls["jsapi"] == 1
    offered = (await client.get("/api/v1/wallet/plans", headers=alice)).json()
    assert offered[0]["left_for_you"] == 0
    fake_pay.pay(first["top_up"]["out_trade_no"])
    await fake_pay.deliver(client, fake_pay.transaction(first["top_up"]["out_trade_no"]))
    r = await client.post("/api/v1/wallet/top-ups", json={"plan_id": p.id}, headers=alice)
    assert r.status_code == 409 and r.json()["error"]["code"] == "WALLET_PLAN_LIMIT"
    bob = await member_headers("bob")
    p.active = False
    await p.save()
    r = await client.post("/api/v1/wallet/top-ups", json={"plan_id": p.id}, headers=bob)
    assert r.status_code == 409 and r.json()["error"]["code"] == "WALLET_PLAN_OFF"
    r = await client.post("/api/v1/wallet/top-ups", json={"plan_id": 999}, headers=bob)
    assert r.status_code == 404 and r.json()["error"]["code"] == "WALLET_PLAN_NOT_FOUND"


async def test_a_wrong_merchant_key_surfaces_as_a_clear_error(
    client: httpx.AsyncClient, fake_pay: FakePay, member_headers: MemberLogin, settings: Settings
) -> None:
    settings.wechatpay_private_key_path = fake_pay.wrong_merchant_key_path
    alice = await member_headers("alice")
    p = await plan(10000)
    r = await client.post("/api/v1/wallet/top-ups", json={"plan_id": p.id}, headers=alice)
    assert r.status_code == 502 and r.json()["error"]["code"] == "PAY_SIGN_ERROR"
    assert r.json()["error"]["message"] == "微信支付拒绝了请求签名，请检查商户私钥和证书序列号"
    assert fake_pay.requests[-1].status == 401
    # kept open (a retry after the key is fixed reuses it); closed once past its deadline
    assert (await TopUp.get()).status == "pending"
    settings.wechatpay_private_key_path = fake_pay.private_key_path
    clock.advance(timedelta(minutes=16))
    await tasks.settle_payments()
    assert (await TopUp.get()).status == "closed"


async def test_unconfigured_pay_is_refused(
    client: httpx.AsyncClient, member_headers: MemberLogin
) -> None:
    alice = await member_headers("alice")
    p = await plan(10000)
    r = await client.post(
        "/api/v1/wallet/top-ups",
        json={"plan_id": p.id},
        headers={**alice, "Accept-Language": "en"},
    )
    assert r.status_code == 503
    assert r.json()["error"]["message"] == "WeChat Pay is not configured on this server"
    assert await TopUp.all().count() == 0
    assert await service.get_balance(await member_id(client, alice)) == service.WalletBalance(0, 0)
