"""Verification of WeChat Pay's answers and notifications (shared/docs/wechat.md section 6):
`Wechatpay-Signature` over `TIMESTAMP\\nNONCE\\nBODY\\n` with the key `Wechatpay-Serial`
names, timestamps within 5 minutes, `WECHATPAY/SIGNTEST/` probes refused; and the
AEAD_AES_256_GCM resources opened with the APIv3 key."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from mall.kit import clock
from mall.wechat.keys import downloaded_keys, downloads_certificates, keys

SIGNTEST_PREFIX = "WECHATPAY/SIGNTEST/"
MAX_CLOCK_SKEW_SECONDS = 300


class VerificationError(Exception):
    """A response or notification failed verification; the message says why (no secrets)."""


class UnknownSerial(VerificationError):
    """Signed with a key we do not hold (yet): a platform certificate may have rotated."""

    def __init__(self, serial: str) -> None:
        super().__init__(f"unknown serial {serial[:40]!r}")
        self.serial = serial


class DecryptionError(VerificationError):
    """A signed resource does not open with the APIv3 key, or is not what it should be."""


def _header(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name)
    if value is None:
        value = headers.get(name.lower(), "")
    return value


def verify_signature(
    headers: Mapping[str, str], body: bytes, also: Mapping[str, rsa.RSAPublicKey] | None = None
) -> None:
    """Check `Wechatpay-Signature` over `TIMESTAMP\\nNONCE\\nBODY\\n`; raises VerificationError.
    `also`: keys to try besides ours (platform certificates just fetched)."""
    signature = _header(headers, "Wechatpay-Signature")
    serial = _header(headers, "Wechatpay-Serial")
    timestamp = _header(headers, "Wechatpay-Timestamp")
    nonce = _header(headers, "Wechatpay-Nonce")
    if not signature or not serial or not timestamp or not nonce:
        raise VerificationError("missing Wechatpay-* headers")
    if signature.startswith(SIGNTEST_PREFIX):
        raise VerificationError("signature probe")
    try:
        sent_at = int(timestamp)
    except ValueError:
        raise VerificationError("bad timestamp") from None
    if abs(clock.now().timestamp() - sent_at) > MAX_CLOCK_SKEW_SECONDS:
        raise VerificationError("timestamp more than 5 minutes off")
    key = keys().verifiers.get(serial) or (also or {}).get(serial)
    if key is None and serial in downloaded_keys:
        downloaded, not_after = downloaded_keys[serial]
        key = downloaded if clock.now() <= not_after else None
    if key is None:
        raise UnknownSerial(serial)
    try:
        raw = base64.b64decode(signature, validate=True)
        message = timestamp.encode() + b"\n" + nonce.encode() + b"\n" + body + b"\n"
        key.verify(raw, message, padding.PKCS1v15(), hashes.SHA256())
    except (ValueError, InvalidSignature):
        raise VerificationError("signature does not match") from None


async def learn_serial(serial: str) -> bool:
    """Fetch the platform certificates when an unknown serial signed something (only in
    certificate mode; rate-limited there). True when the serial is known now."""
    if not downloads_certificates():
        return False
    from mall.wechat import certificates  # it builds on this module

    return await certificates.learn(serial)


def decrypt_bytes(resource: Mapping[str, Any]) -> bytes:
    """Open an AEAD_AES_256_GCM resource (notification, platform certificate) with the
    APIv3 key; the ciphertext ends with the 16-byte tag, as AESGCM expects."""
    if resource.get("algorithm") != "AEAD_AES_256_GCM":
        raise DecryptionError("unsupported algorithm")
    try:
        return AESGCM(keys().apiv3_key).decrypt(
            str(resource["nonce"]).encode(),
            base64.b64decode(str(resource["ciphertext"])),
            str(resource.get("associated_data") or "").encode(),
        )
    except (KeyError, ValueError, InvalidTag):
        raise DecryptionError("resource does not decrypt") from None


def decrypt_resource(resource: Mapping[str, Any]) -> dict[str, Any]:
    """Open an AEAD_AES_256_GCM JSON resource with the APIv3 key."""
    try:
        data = json.loads(decrypt_bytes(resource))
    except ValueError:
        raise DecryptionError("resource does not decrypt") from None
    if not isinstance(data, dict):
        raise DecryptionError("resource is not an object")
    return data
