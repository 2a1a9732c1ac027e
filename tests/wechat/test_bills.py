"""WeChat Pay's daily bills: read (backtick CSV with totals), fetched from the fake over
real HTTP (signed request, unsigned gzip file checked by SHA1), and reconciled with top-ups
and their refunds (orders use the same books: tests/orders)."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import httpx
import pytest

from mall import domains
from mall.errors import MallError
from mall.kit import clock
from mall.kit.checks import check_day
from mall.wallet.models import PAID, TopUp
from mall.wechat import bills, reconcile
from mall.wechat.models import FAILED, MISMATCH, OK, PayReconciliation
from mall.wechat.tasks import check_pay, reconcile_yesterday
from tests.wallet.fake_pay import FakeOrder, FakePay, FakeRefund
from tests.wallet.helpers import member_id, paid_top_up, staff_token

ALL_TEXT = (
    "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,"
    "交易状态,付款银行,货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,"
    "充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注\r\n"
    "`2024-07-09 10:06:33,`wxe1696e7c7db8e7f4,`1579507281,`0,`,`4200002360202407091150650780,"
    "`O20240709001,`oVgfJ5TrnzDOSuaxbFc33mw-5LUY,`JSAPI,`SUCCESS,`OTHERS,`CNY,`60.00,`0.00,"
    "`0,`0,`0.00,`0.00,`,`,`会员商城,`a,b,c,`0.36000,`0.60%,`60.00,`0.00,`\r\n"
    "`2024-07-09 11:00:00,`wxe1696e7c7db8e7f4,`1579507281,`0,`,`4200002360202407091150650781,"
    "`T20240709002,`oVgfJ5TrnzDOSuaxbFc33mw-5LUY,`JSAPI,`REFUND,`OTHERS,`CNY,`0.00,`0.00,"
    "`50302709992024070991956632208,`RT20240709,`50.00,`0.00,`ORIGINAL,`SUCCESS,`储值,`,"
    "`-0.30000,`0.60%,`0.00,`50.00,`\r\n"
    "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额\r\n"
    "`2,`60.00,`50.00,`0.00,`0.06000,`60.00,`50.00\r\n"
)


@pytest.mark.nodb
def test_a_trade_bill_is_read_by_its_header_with_amounts_in_fen() -> None:
    bill = bills.parse(ALL_TEXT, date(2024, 7, 9), "ALL")
    assert (bill.count, bill.settlement_fen, bill.refund_fen) == (2, 6000, 5000)
    paid, refunded = bill.rows
    assert (paid.out_trade_no, paid.trade_state, paid.total_fen) == (
        "O20240709001",
        "SUCCESS",
        6000,
    )
    assert paid.out_refund_no == "" and paid.refund_id == ""
    assert paid.trade_time == datetime(2024, 7, 9, 10, 6, 33, tzinfo=clock.SHANGHAI)
    assert (refunded.out_refund_no, refunded.applied_refund_fen) == ("RT20240709", 5000)
    assert refunded.refund_status == "SUCCESS"


@pytest.mark.nodb
def test_a_bill_whose_totals_disagree_or_whose_rows_are_cut_is_refused() -> None:
    with pytest.raises(ValueError, match="totals say"):
        bills.parse(ALL_TEXT.replace("`2,`60.00", "`3,`60.00"), date(2024, 7, 9), "ALL")
    with pytest.raises(ValueError, match="settlement"):
        bills.parse(
            ALL_TEXT.replace("`60.00,`0.00,`0,`0", "`61.00,`0.00,`0,`0"), date(2024, 7, 9), "ALL"
        )
    with pytest.raises(ValueError, match="no summary"):
        bills.parse(ALL_TEXT.split("总交易单数")[0], date(2024, 7, 9), "ALL")
    with pytest.raises(ValueError, match="whole fen"):
        bills.parse(
            ALL_TEXT.replace("`60.00,`0.00,`", "`60.001,`0.00,`", 1), date(2024, 7, 9), "ALL"
        )
    assert bills.parse("", date(2024, 7, 9), "ALL").rows == []


@pytest.mark.clock
async def test_the_bill_is_fetched_signed_unzipped_and_checked(fake_pay: FakePay) -> None:
    clock.set_now(clock.now())
    day = clock.today()
    fake_pay.state.orders["T0000000077"] = _paid_at_wechat("T0000000077", 1234, clock.now())
    bill = await bills.download(day, "ALL")
    assert [(r.out_trade_no, r.total_fen) for r in bill.rows] == [("T0000000077", 1234)]
    asked, file = fake_pay.requests[-2:]
    assert asked.url.startswith(f"/v3/bill/tradebill?bill_date={day.isoformat()}&bill_type=ALL")
    assert asked.status == 200 and file.status == 200  # both signed as the fake checks
    assert file.url.startswith("/v3/billdownload/file?token=")

    fake_pay.bill_hash_override = "0" * 40
    with pytest.raises(MallError) as caught:
        await bills.download(day, "ALL")
    assert caught.value.error is bills.BILL_INVALID and caught.value.params["reason"] == "SHA1"
    fake_pay.bill_hash_override = None

    fake_pay.bill_errors[(day.isoformat(), "REFUND")] = "NO_STATEMENT_EXIST"
    assert (await bills.download(day, "REFUND")).rows == []
    fake_pay.bill_errors[(day.isoformat(), "REFUND")] = "STATEMENT_CREATING"
    with pytest.raises(MallError) as caught:
        await bills.download(day, "REFUND")
    assert caught.value.error is bills.BILL_NOT_READY


def _paid_at_wechat(no: str, amount: int, when: datetime) -> FakeOrder:
    """A payment WeChat Pay took, made straight in the fake."""
    return FakeOrder(
        appid="wx0fakepay0000001",
        mchid="1900000109",
        out_trade_no=no,
        description="x",
        amount=amount,
        openid="o-someone",
        notify_url="https://mall.example.com/n",
        time_expire="",
        attach="",
        prepay_id="wx1",
        body=b"",
        trade_state="SUCCESS",
        transaction_id="4200" + no,
        success_time=when.astimezone(clock.SHANGHAI).isoformat(timespec="seconds"),
    )


@pytest.mark.clock
async def test_a_day_reconciles_clean_and_then_every_kind_of_mismatch_is_listed(
    client: httpx.AsyncClient, fake_pay: FakePay, member_headers: object
) -> None:
    clock.set_now(clock.now())  # one instant: the day cannot turn during the test
    day = clock.today()
    alice = await member_headers("alice")  # type: ignore[operator]
    first = (await paid_top_up(client, fake_pay, alice, 10000))["top_up"]
    second = (await paid_top_up(client, fake_pay, alice, 20000))["top_up"]
    admin = await staff_token()
    r = await client.post(
        f"/api/admin/v1/wallet/top-ups/{second['id']}/refund",
        json={"reason": "moved away", "principal_fen": 5000},
        headers=admin,
    )
    assert r.status_code in (200, 201), r.text
    refund_no = r.json()["out_refund_no"]
    # a refund WeChat closed: the mall gave the money back to the wallet (failed)
    r = await client.post(
        f"/api/admin/v1/wallet/top-ups/{first['id']}/refund",
        json={"reason": "changed mind", "principal_fen": 3000},
        headers=admin,
    )
    closed_no = r.json()["out_refund_no"]
    h, body = fake_pay.refund_notification(closed_no, "CLOSED")
    assert (await client.post("/api/v1/wechat/pay-notify", headers=h, content=body)).is_success

    row = await reconcile.run(day, domains.pay_books())
    assert row.status == OK, row.mismatches
    assert (row.payments, row.paid_fen, row.refunds, row.refunded_fen) == (2, 30000, 2, 8000)

    # WeChat took money the mall never heard of; one amount differs; a refund the mall never
    # asked for; a refund amount differs; the mall counts a top-up WeChat never saw
    fake_pay.state.orders["T9999999999"] = _paid_at_wechat("T9999999999", 500, clock.now())
    fake_pay.orders[first["out_trade_no"]].amount = 9999
    fake_pay.state.refunds["RT-GHOST"] = FakeRefund(
        out_refund_no="RT-GHOST",
        out_trade_no=first["out_trade_no"],
        refund_id="5000ghost",
        refund=100,
        total=9999,
        reason="",
        status="SUCCESS",
        create_time=clock.now().astimezone(clock.SHANGHAI).isoformat(timespec="seconds"),
    )
    fake_pay.refunds[refund_no].refund = 4000
    fake_pay.refunds[closed_no].status = "SUCCESS"  # yet WeChat paid it out after all
    ghost = await TopUp.create(
        member_id=await member_id(client, alice),
        plan_id=1,
        out_trade_no="T8888888888",
        amount_fen=700,
        bonus_fen=0,
        openid="o-alice",
        status=PAID,
        transaction_id="4200ghost",
        paid_at=clock.now(),
        expires_at=clock.now(),
        created_at=clock.now(),
    )

    row = await reconcile.run(day, domains.pay_books())
    assert row.status == MISMATCH
    found = {(m["kind"], m["out_trade_no"], m["out_refund_no"]) for m in row.mismatches}
    assert found == {
        ("paid_not_in_mall", "T9999999999", ""),
        ("amount_differs", first["out_trade_no"], ""),
        ("not_paid_at_wechat", ghost.out_trade_no, ""),
        ("refund_not_in_mall", first["out_trade_no"], "RT-GHOST"),
        ("refund_amount_differs", second["out_trade_no"], refund_no),
        ("refund_status_differs", first["out_trade_no"], closed_no),
    }
    differs = next(m for m in row.mismatches if m["kind"] == "amount_differs")
    assert (differs["wechat_fen"], differs["mall_fen"]) == (9999, 10000)
    assert await PayReconciliation.all().count() == 1  # a day's latest run replaces the last

    # `mall check pay --date DAY` lists them and fails
    token = check_day.set(day)
    try:
        report = await check_pay()
    finally:
        check_day.reset(token)
    assert not report.ok
    assert any(line.startswith("MISMATCH paid_not_in_mall T9999999999") for line in report.lines)

    # the console's read route: the last reconciliation with its mismatches
    r = await client.get("/api/admin/v1/pay/reconciliations/latest", headers=admin)
    assert r.status_code == 200, r.text
    assert r.json()["bill_date"] == day.isoformat() and len(r.json()["mismatches"]) == 6
    r = await client.get("/api/admin/v1/pay/reconciliations?limit=5", headers=admin)
    assert [d["status"] for d in r.json()] == [MISMATCH]


@pytest.mark.clock
async def test_a_payment_on_the_day_boundary_is_not_a_mismatch_on_either_day(
    client: httpx.AsyncClient, fake_pay: FakePay, member_headers: object
) -> None:
    """WeChat took it at 23:59:59 (its bill of day one), the mall recorded it at 00:00:05."""
    start = clock.start_of_local_day(clock.today())
    clock.set_now(start + timedelta(hours=12))
    alice = await member_headers("alice")  # type: ignore[operator]
    day_one = clock.today()
    wechat_at = clock.start_of_local_day(day_one + timedelta(days=1)) - timedelta(seconds=1)
    fake_pay.state.orders["T7777777777"] = _paid_at_wechat("T7777777777", 300, wechat_at)
    await TopUp.create(
        member_id=await member_id(client, alice),
        plan_id=1,
        out_trade_no="T7777777777",
        amount_fen=300,
        bonus_fen=0,
        openid="o-alice",
        status=PAID,
        transaction_id="4200T7777777777",
        paid_at=wechat_at + timedelta(seconds=6),
        expires_at=wechat_at,
        created_at=wechat_at,
    )
    one = await reconcile.run(day_one, domains.pay_books())
    two = await reconcile.run(day_one + timedelta(days=1), domains.pay_books())
    assert (one.status, one.payments, two.status, two.payments) == (OK, 1, OK, 0)
    assert fake_pay.calls["query"] == 1  # the second day asked WeChat about it once


@pytest.mark.clock
async def test_the_daily_job_runs_for_yesterday_after_ten_once_and_retries_a_failure(
    fake_pay: FakePay,
) -> None:
    today = clock.today()
    yesterday = today - timedelta(days=1)
    clock.set_now(clock.start_of_local_day(today) + timedelta(hours=9, minutes=30))
    assert not await reconcile_yesterday()
    assert fake_pay.calls["tradebill"] == 0

    fake_pay.bill_errors[(yesterday.isoformat(), "ALL")] = "STATEMENT_CREATING"
    clock.set_now(clock.start_of_local_day(today) + timedelta(hours=10, minutes=5))
    assert await reconcile_yesterday()
    row = await reconcile.of_day(yesterday)
    assert row is not None and row.status == FAILED and "PAY_BILL_NOT_READY" in row.error

    del fake_pay.bill_errors[(yesterday.isoformat(), "ALL")]
    clock.advance(timedelta(hours=1))
    assert await reconcile_yesterday()
    row = await reconcile.of_day(yesterday)
    assert row is not None and row.status == OK
    calls = fake_pay.calls["tradebill"]
    assert not await reconcile_yesterday()  # done for that day
    assert fake_pay.calls["tradebill"] == calls


async def test_nothing_reconciled_yet_is_a_clear_404(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/admin/v1/pay/reconciliations/latest", headers=await staff_token())
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "PAY_RECONCILIATION_NOT_FOUND"


@pytest.mark.nodb
def test_mall_check_takes_a_date() -> None:
    from mall.cli import build_parser

    args = build_parser().parse_args(["check", "pay", "--date", "2028-02-29"])
    assert (args.name, args.date) == ("pay", date(2028, 2, 29))
    assert build_parser().parse_args(["check", "pay"]).date is None
    with pytest.raises(SystemExit):
        build_parser().parse_args(["check", "pay", "--date", "2028-02-30"])
