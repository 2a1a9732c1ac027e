"""WeChat Pay key material: the merchant key, the verification keys by serial (WeChat Pay
public key, configured platform certificates, and those fetched by
mall.wechat.certificates) and the APIv3 key. Loaded once and again whenever a file or
setting changes; never logged, never shown by a repr."""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mall.config import get_settings
from mall.errors import ErrorCode
from mall.i18n import _

log = logging.getLogger("mall.wechat.pay")

PAY_NOT_CONFIGURED = ErrorCode(
    "PAY_NOT_CONFIGURED", 503, _("WeChat Pay is not configured on this server")
)


class _Keys:
    """The loaded key material; its repr never shows any of it."""

    def __init__(
        self,
        private_key: rsa.RSAPrivateKey,
        verifiers: dict[str, rsa.RSAPublicKey],
        apiv3_key: bytes,
    ) -> None:
        self.private_key = private_key
        self.verifiers = verifiers
        self.apiv3_key = apiv3_key

    def __repr__(self) -> str:
        return f"<WeChat Pay keys for serials {sorted(self.verifiers)}>"


_keys_cache: tuple[tuple[Any, ...], _Keys] | None = None


def _file_stamp(path: Path) -> tuple[str, int]:
    return str(path), path.stat().st_mtime_ns


def _load_public_key(path: Path) -> rsa.RSAPublicKey:
    """A PEM public key or X.509 certificate (platform certificates come as those)."""
    data = path.read_bytes()
    if b"CERTIFICATE" in data:
        key: Any = x509.load_pem_x509_certificate(data).public_key()
    else:
        key = serialization.load_pem_public_key(data)
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError(f"{path} does not hold an RSA public key")
    return key


def keys() -> _Keys:
    """The merchant key, the verification keys by serial and the APIv3 key, loaded
    once and again whenever a file or setting changes (key rotation)."""
    global _keys_cache
    s = get_settings()
    apiv3 = s.wechatpay_apiv3_key.get_secret_value().encode()
    if not s.wechatpay_mchid or not s.wechatpay_private_key_path or not s.wechatpay_serial:
        raise PAY_NOT_CONFIGURED()
    if len(apiv3) != 32:
        raise PAY_NOT_CONFIGURED()
    try:
        stamp: tuple[Any, ...] = (
            _file_stamp(s.wechatpay_private_key_path),
            _file_stamp(s.wechatpay_public_key_path) if s.wechatpay_public_key_path else None,
            s.wechatpay_public_key_id,
            tuple(sorted((k, _file_stamp(p)) for k, p in s.wechatpay_platform_certs.items())),
            apiv3,
        )
        if _keys_cache is not None and _keys_cache[0] == stamp:
            return _keys_cache[1]
        private = serialization.load_pem_private_key(
            s.wechatpay_private_key_path.read_bytes(), password=None
        )
        if not isinstance(private, rsa.RSAPrivateKey):
            raise ValueError("the merchant key is not an RSA key")
        verifiers = {
            serial: _load_public_key(path) for serial, path in s.wechatpay_platform_certs.items()
        }
        if s.wechatpay_public_key_path and s.wechatpay_public_key_id:
            verifiers[s.wechatpay_public_key_id] = _load_public_key(s.wechatpay_public_key_path)
    except (OSError, ValueError) as exc:
        log.error("WeChat Pay keys could not be loaded: %s", type(exc).__name__)
        raise PAY_NOT_CONFIGURED() from None
    if not verifiers and not downloads_certificates():
        raise PAY_NOT_CONFIGURED()
    loaded = _Keys(private, verifiers, apiv3)
    _keys_cache = (stamp, loaded)
    return loaded


def downloads_certificates() -> bool:
    """Platform certificates are fetched from /v3/certificates (mall.wechat.certificates):
    when asked to, or ("auto") when no WeChat Pay public key is configured."""
    s = get_settings()
    mode = s.wechatpay_platform_cert_download
    return mode == "on" or (mode == "auto" and not s.wechatpay_public_key_id)


# serial -> (key, not valid after) of the platform certificates fetched from WeChat Pay;
# kept by mall.wechat.certificates, which also learns a serial seen for the first time
downloaded_keys: dict[str, tuple[rsa.RSAPublicKey, datetime]] = {}
