"""WeChat Pay platform certificates, for merchants still on them (public-key mode needs
none; `pay.downloads_certificates()` says which mode this is).

- `refresh()` asks `GET /v3/certificates`. Each `encrypt_certificate` is opened with the
  APIv3 key (AEAD_AES_256_GCM, its `nonce` and `associated_data`), then the certificate is
  checked: it is the serial listed, an RSA key, valid now, and issued by
  `MALL_WECHATPAY_PLATFORM_CA_PATH` (Tenpay.com Root CA) when that is set.
- Trust on the first fetch is that of WeChat Pay's own SDKs (wechatpay-go's downloader):
  only WeChat Pay holds our APIv3 key besides us, so what opens with it came from there;
  and the answer's signature must verify with the certificate its `Wechatpay-Serial` names,
  among those already held and those just opened. Otherwise nothing is stored.
- Stored in Redis (`wechatpay:platform-certs`, serial -> PEM and dates), the key expiring
  with the last certificate; old certificates stay until they expire (WeChat lists the
  old and the new one during a rotation). Every process keeps them in
  `pay.downloaded_keys` and reloads them from Redis when a serial it does not know signs
  something; only if Redis does not know it either is WeChat Pay asked, at most once per
  `LEARN_INTERVAL_SECONDS` for the whole deployment (a forger's made-up serials cost one
  Redis read each, never a storm of calls to WeChat Pay).
- A job (`wechat.refresh_certificates`) fetches them every few hours, long before one
  expires (WeChat issues the new one weeks ahead)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mall.config import get_settings
from mall.kit import clock
from mall.redis import get_redis
from mall.wechat import pay

log = logging.getLogger("mall.wechat.certificates")

REDIS_KEY = "wechatpay:platform-certs"
LEARN_KEY = "wechatpay:platform-certs:asked"
LEARN_INTERVAL_SECONDS = 60


class CertificateError(Exception):
    """A listed certificate failed a check; the message says which (no key material)."""


@dataclass(frozen=True)
class PlatformCertificate:
    serial: str
    effective_at: datetime
    expires_at: datetime
    pem: str

    def public_key(self) -> rsa.RSAPublicKey:
        key = x509.load_pem_x509_certificate(self.pem.encode()).public_key()
        assert isinstance(key, rsa.RSAPublicKey)
        return key

    def to_json(self) -> str:
        return json.dumps(
            {
                "pem": self.pem,
                "effective_at": self.effective_at.isoformat(),
                "expires_at": self.expires_at.isoformat(),
            }
        )

    @classmethod
    def from_json(cls, serial: str, raw: str) -> PlatformCertificate:
        data = json.loads(raw)
        return cls(
            serial=serial,
            effective_at=datetime.fromisoformat(data["effective_at"]),
            expires_at=datetime.fromisoformat(data["expires_at"]),
            pem=str(data["pem"]),
        )


def _ca() -> x509.Certificate | None:
    path = get_settings().wechatpay_platform_ca_path
    return x509.load_pem_x509_certificate(path.read_bytes()) if path else None


def open_certificate(item: Any, ca: x509.Certificate | None = None) -> PlatformCertificate:
    """One entry of `/v3/certificates`' `data`, opened and checked."""
    if not isinstance(item, dict) or not isinstance(item.get("encrypt_certificate"), dict):
        raise CertificateError("malformed entry")
    serial = str(item.get("serial_no") or "").upper()
    try:
        pem = pay.decrypt_bytes(item["encrypt_certificate"])
        cert = x509.load_pem_x509_certificate(pem)
    except pay.DecryptionError:
        raise CertificateError(f"{serial[:40]}: does not open with the APIv3 key") from None
    except ValueError:
        raise CertificateError(f"{serial[:40]}: not a PEM certificate") from None
    try:
        listed = int(serial, 16)
    except ValueError:
        raise CertificateError(f"{serial[:40]!r}: not a hex serial") from None
    if cert.serial_number != listed:
        raise CertificateError(f"{serial[:40]}: the certificate has another serial")
    if not isinstance(cert.public_key(), rsa.RSAPublicKey):
        raise CertificateError(f"{serial[:40]}: not an RSA key")
    now = clock.now()
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise CertificateError(f"{serial[:40]}: not valid now")
    if ca is not None:
        try:
            cert.verify_directly_issued_by(ca)
        except Exception as exc:  # another issuer, or a signature that does not hold
            raise CertificateError(
                f"{serial[:40]}: not issued by the configured CA ({type(exc).__name__})"
            ) from None
    return PlatformCertificate(
        serial=serial,
        effective_at=cert.not_valid_before_utc,
        expires_at=cert.not_valid_after_utc,
        pem=cert.public_bytes(serialization.Encoding.PEM).decode(),
    )


def _use(certs: list[PlatformCertificate]) -> None:
    """What this process verifies with: exactly the unexpired certificates given."""
    now = clock.now()
    fresh = {c.serial: (c.public_key(), c.expires_at) for c in certs if c.expires_at >= now}
    pay.downloaded_keys.clear()
    pay.downloaded_keys.update(fresh)


async def stored() -> list[PlatformCertificate]:
    """The certificates held in Redis, unexpired ones only (expired ones are dropped)."""
    redis = get_redis()
    raw: dict[str, str] = await redis.hgetall(REDIS_KEY)  # type: ignore[misc,assignment]
    now = clock.now()
    certs: list[PlatformCertificate] = []
    dropped: list[str] = []
    for serial, value in raw.items():
        try:
            cert = PlatformCertificate.from_json(serial, value)
        except (ValueError, KeyError):
            dropped.append(serial)
            continue
        if cert.expires_at >= now:
            certs.append(cert)
        else:
            dropped.append(serial)
    if dropped:
        await redis.hdel(REDIS_KEY, *dropped)  # type: ignore[misc]
    return sorted(certs, key=lambda c: c.expires_at)


async def load() -> list[PlatformCertificate]:
    """Take the stored certificates into this process."""
    certs = await stored()
    _use(certs)
    return certs


async def refresh() -> list[PlatformCertificate]:
    """Fetch, check and store the platform certificates; returns all held afterwards.
    Raises a MallError when WeChat Pay cannot be asked or its answer does not verify."""
    response = await pay.send("GET", "/v3/certificates")
    try:
        data = json.loads(response.content)
        items = data["data"]
        if not isinstance(items, list):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        log.error("wechatpay /v3/certificates: malformed answer")
        raise pay.PAY_RESPONSE_INVALID() from None
    ca = _ca()
    opened: list[PlatformCertificate] = []
    for item in items:
        try:
            opened.append(open_certificate(item, ca))
        except CertificateError as exc:
            log.error("wechatpay platform certificate refused: %s", exc)
    held = await stored()
    known = {c.serial: c.public_key() for c in [*held, *opened]}
    try:
        pay.verify_signature(response.headers, response.content, also=known)
    except pay.VerificationError as exc:
        log.error("wechatpay /v3/certificates answer not verified: %s", exc)
        raise pay.PAY_RESPONSE_INVALID() from None
    if opened:
        redis = get_redis()
        await redis.hset(REDIS_KEY, mapping={c.serial: c.to_json() for c in opened})  # type: ignore[misc]
        last = max(c.expires_at for c in [*held, *opened])
        await redis.expireat(REDIS_KEY, last)
        new = sorted({c.serial for c in opened} - {c.serial for c in held})
        if new:
            log.info("wechatpay platform certificates added: %s", ", ".join(new))
    return await load()


async def learn(serial: str) -> bool:
    """A serial this process does not know signed something: reload from Redis, and if
    that does not know it either, fetch from WeChat Pay (rate-limited). True if known now."""
    await load()
    if serial in pay.downloaded_keys:
        return True
    if not await get_redis().set(LEARN_KEY, "1", nx=True, ex=LEARN_INTERVAL_SECONDS):
        log.warning("wechatpay serial %r unknown; certificates were fetched lately", serial[:40])
        return False
    try:
        await refresh()
    except Exception as exc:
        log.warning("wechatpay platform certificates could not be fetched: %r", exc)
        return False
    return serial in pay.downloaded_keys


async def refresh_job() -> None:
    """The job: in certificate mode, fetch the certificates (rotation, expiry)."""
    if not pay.downloads_certificates() or not pay.is_configured():
        return
    certs = await refresh()
    if not certs:
        log.error("wechatpay: no valid platform certificate held")
