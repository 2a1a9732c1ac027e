"""All ops routers under `/api/admin/v1`, included in name order."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from mall.admin import (
    blindbox,
    catalog,
    coupons,
    dashboard,
    fairsales,
    members,
    orders,
    points,
    pointsmall,
    referral,
    seckill,
    segments,
    staff,
    wallet,
    wechat,
)
from mall.kit.masking import phones_masked

# every ops answer masks phone numbers; routes with `?reveal=phone` may lift it (admin)
router = APIRouter(prefix="/api/admin/v1", dependencies=[Depends(phones_masked)])

OPS_ROUTERS = (
    blindbox,
    catalog,
    coupons,
    dashboard,
    fairsales,
    members,
    orders,
    points,
    pointsmall,
    referral,
    seckill,
    segments,
    staff,
    wallet,
    wechat,
)
for module in OPS_ROUTERS:
    router.include_router(module.router)
