"""Full phone numbers for the admin role, on the routes that offer `?reveal=phone`.

Every ops answer masks phones (`mall.kit.masking`, turned on for the whole admin
router). On a route that takes `PhoneReveal`, an admin may ask `?reveal=phone`: the
request is audited (`phone.reveal`, with the path and query) and that one answer shows
full numbers. Ops asking get 403 PHONE_REVEAL_FORBIDDEN: they never see full phones."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import Depends, Query, Request

from mall.deps import CurrentStaff
from mall.kit import masking
from mall.members import privacy


async def _reveal_phones(
    request: Request,
    staff: CurrentStaff,
    reveal: Literal["phone"] | None = Query(
        default=None,
        description="`phone`: show full phone numbers in this answer (admin role only; "
        "every reveal is written to the audit log)",
    ),
) -> bool:
    if reveal is None:
        return False
    await privacy.record_phone_reveal(
        staff, request.url.path, query=request.url.query[:256], method=request.method
    )
    masking.set_masking(False)
    return True


PhoneReveal = Annotated[bool, Depends(_reveal_phones)]
