"""The domain packages, in dependency order. A domain is wired in (models, routers,
jobs, checks) only if its module exists, so a domain is added by creating its package.

This is the one place that finds `mall` modules by name; everything else imports plainly."""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType
from typing import Any

from mall.kit.checks import CheckFn, DrillFn
from mall.kit.jobs import Consumer, Job

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


def jobs() -> list[Job]:
    """Every domain's periodic `JOBS` (from its `tasks.py`)."""
    return [job for module in domain_modules("tasks") for job in getattr(module, "JOBS", [])]


def consumers() -> list[Consumer]:
    """Every domain's long-running `CONSUMERS` (from its `tasks.py`)."""
    return [c for module in domain_modules("tasks") for c in getattr(module, "CONSUMERS", [])]


def checks() -> dict[str, CheckFn]:
    """Every domain's `CHECKS` by name (`mall check NAME`)."""
    found: dict[str, CheckFn] = {}
    for module in domain_modules("tasks"):
        found.update(getattr(module, "CHECKS", {}))
    return found


def drills() -> dict[str, DrillFn]:
    """Every domain's `DRILLS` by name (`mall drill NAME ...`)."""
    found: dict[str, DrillFn] = {}
    for module in domain_modules("tasks"):
        found.update(getattr(module, "DRILLS", {}))
    return found


def pay_books() -> list[Any]:
    """Every paying domain's WeChat Pay records (`BOOK` in its `paybook.py`, a
    `mall.wechat.reconcile.Book`), for reconciling WeChat Pay's bills."""
    return [module.BOOK for module in domain_modules("paybook")]
