"""Ops and the reconciliation of WeChat Pay's bills: the kept days with each mismatch
linked to its order or top-up and member, and one day by date."""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest

from mall import domains
from mall.wechat import reconcile
from tests.conftest import MemberLogin
from tests.wallet.fake_pay import FakePay
from tests.wallet.helpers import staff_token
from tests.wechat.payrec import paid_day

A = "/api/admin/v1/pay/reconciliations"


@pytest.mark.clock
async def test_each_mismatch_is_linked_to_its_order_or_top_up(
    client: httpx.AsyncClient, member_headers: MemberLogin, fake_pay: FakePay
) -> None:
    paid = await paid_day(client, fake_pay, member_headers)
    ops = await staff_token("ops")
    day = paid.day.isoformat()
    await reconcile.run(paid.day, domains.pay_books())
    listed = (await client.get(A, headers=ops)).json()
    assert [d["bill_date"] for d in listed] == [day]
    answer = listed[0]
    assert (answer["bill_date"], answer["status"]) == (day, "mismatch")
    assert (answer["payments"], answer["paid_fen"]) == (
        3,
        paid.matched.cash_fen + paid.lost.cash_fen + paid.top_up.amount_fen,
    )
    by_kind = {(m["kind"], m["out_trade_no"]): m for m in answer["mismatches"]}
    assert set(by_kind) == {
        ("paid_not_in_mall", "O" + paid.lost.number),
        ("paid_not_in_mall", paid.top_up.out_trade_no),
        ("refund_not_at_wechat", "O" + paid.matched.number),
    }
    lost = by_kind[("paid_not_in_mall", "O" + paid.lost.number)]
    assert (lost["order_id"], lost["member_id"], lost["top_up_id"]) == (
        paid.lost.id, paid.lost.member_id, None,
    )  # fmt: skip
    assert (lost["wechat_fen"], lost["mall_fen"]) == (8000, None)
    top_up = by_kind[("paid_not_in_mall", paid.top_up.out_trade_no)]
    assert (top_up["top_up_id"], top_up["member_id"], top_up["order_id"]) == (
        paid.top_up.id, paid.top_up.member_id, None,
    )  # fmt: skip
    refund = by_kind[("refund_not_at_wechat", "O" + paid.matched.number)]
    assert (refund["out_refund_no"], refund["wechat_fen"], refund["mall_fen"]) == (
        paid.refund_no, None, paid.matched.cash_fen,
    )  # fmt: skip
    assert refund["order_id"] == paid.matched.id

    one = await client.get(f"{A}/{day}", headers=ops)
    assert one.status_code == 200 and one.json() == answer
    latest = await client.get(f"{A}/latest", headers=ops)
    assert latest.json() == answer
    missing = await client.get(f"{A}/{(paid.day - timedelta(days=1)).isoformat()}", headers=ops)
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "PAY_RECONCILIATION_DAY_NOT_FOUND"
