"""Platform certificates (certificate mode) against the fake WeChat Pay over real HTTP:
fetched from /v3/certificates, opened with the APIv3 key, checked against the test CA,
kept in Redis, chosen by Wechatpay-Serial, learnt when a new serial signs, rotated."""

from __future__ import annotations

import json
import secrets
from datetime import timedelta

import httpx
import pytest

from mall.config import Settings
from mall.errors import MallError
from mall.kit import clock
from mall.redis import get_redis
from mall.wechat import certificates, pay
from tests.wallet.fake_pay import FakePay, new_key


@pytest.fixture
def cert_mode(fake_pay: FakePay, settings: Settings) -> FakePay:
    """A merchant on platform certificates only: no WeChat Pay public key, no certificate
    files; answers signed with the platform certificate."""
    settings.wechatpay_public_key_id = ""
    settings.wechatpay_public_key_path = None
    settings.wechatpay_platform_certs = {}
    settings.wechatpay_platform_ca_path = fake_pay.ca_path
    fake_pay.use_platform_certificate()
    return fake_pay


async def _open(no: str = "T0000000001", amount: int = 100) -> dict[str, str]:
    return await pay.create_jsapi_payment(
        out_trade_no=no,
        description="储值充值",
        amount_fen=amount,
        openid="oUpF8uMuAJO_M2pxb1Q9zNjWeS6o",
        expires_at=clock.now() + timedelta(minutes=15),
    )


async def test_first_fetch_opens_checks_and_stores_then_answers_verify(
    cert_mode: FakePay,
) -> None:
    assert pay.downloads_certificates() and pay.is_configured()
    held = await certificates.refresh()
    assert [c.serial for c in held] == [cert_mode.platform_serial]
    request = cert_mode.requests[-1]
    assert request.url == "/v3/certificates" and request.status == 200
    assert "wechatpay-serial" not in request.headers  # no public key in this mode
    redis = get_redis()
    stored = json.loads(await redis.hget(certificates.REDIS_KEY, cert_mode.platform_serial))  # type: ignore[misc]
    assert "BEGIN CERTIFICATE" in stored["pem"]
    ttl = await redis.ttl(certificates.REDIS_KEY)
    assert ttl > 365 * 86400  # expires with the certificate (2045), not before
    assert cert_mode.platform_serial in pay.downloaded_keys
    # an ordinary answer signed with that certificate now verifies, without a new fetch
    params = await _open()
    assert params["package"].startswith("prepay_id=")
    assert cert_mode.calls["certificates"] == 1


async def test_an_unknown_serial_on_an_answer_fetches_the_certificates_once(
    cert_mode: FakePay,
) -> None:
    assert pay.downloaded_keys == {}
    await _open("T0000000001")
    await _open("T0000000002")
    assert cert_mode.calls["certificates"] == 1
    # another process: nothing in memory, Redis has it: no call to WeChat Pay
    pay.downloaded_keys.clear()
    await _open("T0000000003")
    assert cert_mode.calls["certificates"] == 1


async def test_rotation_a_notification_under_a_new_certificate_is_learnt_and_old_kept(
    client: httpx.AsyncClient, cert_mode: FakePay
) -> None:
    await certificates.refresh()
    new_key_, new_cert = cert_mode.new_platform_certificate()
    cert_mode.certificates.append((new_key_, new_cert))
    new_serial = format(new_cert.serial_number, "X")
    # an event WeChat sends nobody handles: verified and acknowledged, or refused
    resource = {"out_trade_no": "X1", "trade_state": "NOTPAY"}
    headers, body = cert_mode.notification(resource, key=new_key_, serial=new_serial)
    r = await client.post("/api/v1/wechat/pay-notify", headers=headers, content=body)
    assert r.status_code == 204, r.text
    assert cert_mode.calls["certificates"] == 2
    assert set(pay.downloaded_keys) == {cert_mode.platform_serial, new_serial}
    # the old certificate still verifies (WeChat may sign with it until it expires)
    headers, body = cert_mode.notification(
        resource, key=cert_mode.platform_key, serial=cert_mode.platform_serial
    )
    r = await client.post("/api/v1/wechat/pay-notify", headers=headers, content=body)
    assert r.status_code == 204
    # the job fetches again and keeps both
    await certificates.refresh_job()
    assert cert_mode.calls["certificates"] == 3
    assert {c.serial for c in await certificates.stored()} == {
        cert_mode.platform_serial,
        new_serial,
    }


async def test_made_up_serials_are_refused_and_fetch_at_most_once_a_minute(
    client: httpx.AsyncClient, cert_mode: FakePay
) -> None:
    resource = {"out_trade_no": "X1", "trade_state": "NOTPAY"}
    for _ in range(3):
        serial = secrets.token_hex(20).upper()
        headers, body = cert_mode.notification(resource, key=cert_mode.forger_key, serial=serial)
        r = await client.post("/api/v1/wechat/pay-notify", headers=headers, content=body)
        assert r.status_code == 401
        assert r.json()["error"]["code"] == "PAY_NOTIFY_SIGNATURE_INVALID"
    assert cert_mode.calls["certificates"] == 1
    # a forger signing under the real serial: the certificate is known, the signature fails
    headers, body = cert_mode.notification(
        resource, key=cert_mode.forger_key, serial=cert_mode.platform_serial
    )
    r = await client.post("/api/v1/wechat/pay-notify", headers=headers, content=body)
    assert r.status_code == 401


async def test_certificates_that_do_not_open_with_our_apiv3_key_are_not_trusted(
    cert_mode: FakePay,
) -> None:
    cert_mode.certificates_apiv3_key = secrets.token_hex(16)
    with pytest.raises(MallError) as caught:
        await certificates.refresh()
    assert caught.value.error is pay.PAY_RESPONSE_INVALID
    assert await certificates.stored() == [] and pay.downloaded_keys == {}


async def test_an_answer_not_signed_by_a_listed_certificate_is_not_trusted(
    cert_mode: FakePay,
) -> None:
    # the certificates open, but the answer's signature is someone else's
    cert_mode.response_key = cert_mode.forger_key
    with pytest.raises(MallError) as caught:
        await certificates.refresh()
    assert caught.value.error is pay.PAY_RESPONSE_INVALID
    assert await certificates.stored() == []


async def test_a_certificate_not_issued_by_the_configured_ca_is_refused(
    cert_mode: FakePay, settings: Settings
) -> None:
    from tests.wallet.fake_pay import _self_signed

    rogue_key = new_key()
    rogue = _self_signed(rogue_key)
    cert_mode.certificates = [(rogue_key, rogue)]
    cert_mode.use_platform_certificate(rogue_key, rogue)
    with pytest.raises(MallError):
        await certificates.refresh()
    assert await certificates.stored() == []
    # without a configured CA the same certificate is trusted on the APIv3 key alone
    settings.wechatpay_platform_ca_path = None
    held = await certificates.refresh()
    assert [c.serial for c in held] == [format(rogue.serial_number, "X")]


@pytest.mark.clock
async def test_expired_certificates_stop_verifying_and_are_dropped(cert_mode: FakePay) -> None:
    short_key, short = cert_mode.new_platform_certificate(days_from=-1, days_to=10)
    cert_mode.certificates = [(cert_mode.platform_key, cert_mode.platform_cert), (short_key, short)]
    cert_mode.use_platform_certificate(short_key, short)
    await certificates.refresh()
    short_serial = format(short.serial_number, "X")
    assert short_serial in pay.downloaded_keys
    await _open("T0000000001")
    clock.advance(timedelta(days=11))
    # WeChat lists only the current one now; an answer under the expired one is refused
    cert_mode.certificates = [(cert_mode.platform_key, cert_mode.platform_cert)]
    with pytest.raises(MallError) as caught:
        await _open("T0000000002")
    assert caught.value.error is pay.PAY_RESPONSE_INVALID
    assert [c.serial for c in await certificates.stored()] == [cert_mode.platform_serial]
    cert_mode.use_platform_certificate()
    await _open("T0000000003")


async def test_public_key_mode_fetches_nothing(fake_pay: FakePay) -> None:
    assert not pay.downloads_certificates()
    await certificates.refresh_job()
    assert fake_pay.calls["certificates"] == 0
