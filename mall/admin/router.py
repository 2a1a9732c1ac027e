from __future__ import annotations

import importlib
import pkgutil

from fastapi import APIRouter, Depends

import mall.admin
from mall.kit.masking import phones_masked

# every ops answer masks phone numbers; routes with `?reveal=phone` may lift it (admin)
router = APIRouter(prefix="/api/admin/v1", dependencies=[Depends(phones_masked)])

for info in sorted(pkgutil.iter_modules(mall.admin.__path__), key=lambda m: m.name):
    if info.name in ("router",) or info.name.startswith("_"):
        continue
    module = importlib.import_module(f"mall.admin.{info.name}")
    sub = getattr(module, "router", None)
    if sub is not None:
        router.include_router(sub)
