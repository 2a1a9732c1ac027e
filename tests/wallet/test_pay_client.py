"""The WeChat Pay v3 client against the fake server over real HTTP: our signatures are
checked by the fake with our public key, its answers by us with its key."""

from __future__ import annotations

import base64
import json
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from pydantic import SecretStr

from mall.config import Settings
from mall.errors import MallError
from mall.kit import clock
from mall.wechat import pay
from tests.wallet.fake_pay import FakePay


async def _open(fake_pay: FakePay, no: str = "T0000000001", amount: int = 12345) -> dict[str, str]:
    return await pay.create_jsapi_payment(
        out_trade_no=no,
        description="储值充值-测试",
        amount_fen=amount,
        openid="oUpF8uMuAJO_M2pxb1Q9zNjWeS6o",
        expires_at=clock.now() + timedelta(minutes=15),
        attach="topup:1",
    )


async def test_jsapi_is_signed_over_the_bytes_sent_and_pay_sign_verifies(
    fake_pay: FakePay,
) -> None:
    params = await _open(fake_pay)
    request = fake_pay.requests[-1]
    assert request.status == 200  # the fake verified our Authorization signature
    assert request.url == "/v3/pay/transactions/jsapi"
    assert request.headers["wechatpay-serial"] == fake_pay.public_key_id
    sent = json.loads(request.body)
    assert sent["amount"] == {"total": 12345, "currency": "CNY"}
    assert sent["mchid"] == fake_pay.mchid and sent["appid"] == fake_pay.appid
    assert sent["time_expire"].endswith("+08:00")
    order = fake_pay.orders["T0000000001"]
    assert params["package"] == f"prepay_id={order.prepay_id}"
    assert params["signType"] == "RSA" and len(params["timeStamp"]) == 10
    message = (
        f"{fake_pay.appid}\n{params['timeStamp']}\n{params['nonceStr']}\n{params['package']}\n"
    )
    fake_pay.merchant_key.public_key().verify(
        base64.b64decode(params["paySign"]), message.encode(), padding.PKCS1v15(), hashes.SHA256()
    )


async def test_a_wrong_merchant_key_is_a_clear_sign_error(
    fake_pay: FakePay, settings: Settings
) -> None:
    settings.wechatpay_private_key_path = fake_pay.wrong_merchant_key_path
    with pytest.raises(MallError) as caught:
        await _open(fake_pay)
    assert caught.value.code == "PAY_SIGN_ERROR"
    assert fake_pay.requests[-1].status == 401
    assert "T0000000001" not in fake_pay.orders


async def test_query_close_and_unknown_orders(fake_pay: FakePay) -> None:
    assert await pay.query_payment("T0000000404") is None
    assert (
        fake_pay.requests[-1].url
        == f"/v3/pay/transactions/out-trade-no/T0000000404?mchid={fake_pay.mchid}"
    )
    await _open(fake_pay, "T0000000002", 500)
    result = await pay.query_payment("T0000000002")
    assert result is not None and result.trade_state == "NOTPAY"
    await pay.close_payment("T0000000002")
    assert fake_pay.requests[-1].status == 204
    closed = await pay.query_payment("T0000000002")
    assert closed is not None and closed.trade_state == "CLOSED"
    await _open(fake_pay, "T0000000003", 800)
    fake_pay.pay("T0000000003")
    paid = await pay.query_payment("T0000000003")
    assert paid is not None
    assert (paid.trade_state, paid.amount_total_fen, paid.mchid) == ("SUCCESS", 800, fake_pay.mchid)
    assert paid.transaction_id and paid.success_time is not None
    with pytest.raises(MallError) as caught:
        await pay.close_payment("T0000000003")
    assert caught.value.code == "PAY_ORDER_PAID"


async def test_refund_and_refund_query(fake_pay: FakePay) -> None:
    await _open(fake_pay, "T0000000004", 1000)
    fake_pay.pay("T0000000004")
    result = await pay.refund(
        out_trade_no="T0000000004", out_refund_no="RT1", refund_fen=600, total_fen=1000
    )
    assert (result.status, result.refund_fen, result.total_fen) == ("PROCESSING", 600, 1000)
    again = await pay.refund(
        out_trade_no="T0000000004", out_refund_no="RT1", refund_fen=600, total_fen=1000
    )
    assert again.refund_id == result.refund_id  # one refund however often it is sent
    with pytest.raises(MallError) as caught:
        await pay.refund(
            out_trade_no="T0000000004", out_refund_no="RT2", refund_fen=600, total_fen=1000
        )
    assert caught.value.code == "PAY_REQUEST_INVALID"
    fake_pay.settle_refund("RT1")
    queried = await pay.query_refund("RT1")
    assert queried is not None and queried.status == "SUCCESS"
    assert await pay.query_refund("RT404") is None


async def test_unverifiable_answers_and_error_mapping(fake_pay: FakePay) -> None:
    fake_pay.response_key = fake_pay.forger_key
    with pytest.raises(MallError) as caught:
        await _open(fake_pay, "T0000000005")
    assert caught.value.code == "PAY_RESPONSE_INVALID"
    fake_pay.response_key = fake_pay.wechat_key
    for status, code, ours in [
        (429, "FREQUENCY_LIMITED", "PAY_RATE_LIMITED"),
        (500, "SYSTEM_ERROR", "PAY_BUSY"),
        (403, "NO_AUTH", "PAY_REFUSED"),
        (400, "SOMETHING_NEW", "PAY_REQUEST_INVALID"),
        (502, "", "PAY_BUSY"),
    ]:
        fake_pay.fail("query", status, code)
        with pytest.raises(MallError) as caught:
            await pay.query_payment("T0000000006")
        assert caught.value.code == ours, code


async def test_stale_answers_are_refused(fake_pay: FakePay) -> None:
    """Our clock 6 minutes ahead of the fake's signatures: the answer is refused."""
    headers = fake_pay.signed_headers(b"{}", timestamp=int(clock.now().timestamp()) - 360)
    with pytest.raises(pay.VerificationError):
        pay.verify_signature(headers, b"{}")
    pay.verify_signature(fake_pay.signed_headers(b"{}"), b"{}")


@pytest.mark.nodb
def test_unconfigured_and_secrets_stay_out_of_reprs(settings: Settings) -> None:
    saved = settings.wechatpay_mchid, settings.wechatpay_apiv3_key
    try:
        settings.wechatpay_mchid = ""
        with pytest.raises(MallError) as caught:
            pay.keys()
        assert caught.value.code == "PAY_NOT_CONFIGURED"
        assert not pay.is_configured()
        settings.wechatpay_apiv3_key = SecretStr("k" * 32)
        assert "k" * 32 not in repr(settings) and "k" * 32 not in str(settings.model_dump())
    finally:
        settings.wechatpay_mchid, settings.wechatpay_apiv3_key = saved


async def test_key_objects_do_not_print_their_material(fake_pay: FakePay) -> None:
    loaded = pay.keys()
    assert fake_pay.apiv3_key not in repr(loaded)
    assert "PRIVATE" not in repr(loaded)
