"""The domain packages, in dependency order. A domain is wired in (models, routers,
jobs) only if its module exists, so a domain is added by creating its package."""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

DOMAINS: tuple[str, ...] = (
    "audit",
    "members",
    "addresses",
    "wechat",
    "catalog",
    "points",
    "pointsmall",
    "touch",
    "coupons",
    "seckill",
    "blindbox",
    "wallet",
    "orders",
    "segments",
    "referral",
    "admin",
    "console",
)


def domain_modules(name: str) -> list[ModuleType]:
    """Import `mall.<domain>.<name>` for every domain that has it."""
    found = []
    for domain in DOMAINS:
        dotted = f"mall.{domain}.{name}"
        try:
            spec = importlib.util.find_spec(dotted)
        except ModuleNotFoundError:
            spec = None
        if spec is not None:
            found.append(importlib.import_module(dotted))
    return found


def model_module_names() -> list[str]:
    return [m.__name__ for m in domain_modules("models")]
