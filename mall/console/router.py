"""Serves the ops console page. Its scripts and styles come from the /static mount;
the page itself talks only to /api/admin/v1."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import FileResponse

from mall.config import static_folder

router = APIRouter(include_in_schema=False)

INDEX = static_folder() / "admin" / "index.html"
# sent with the page and with every file under /static (mall.app mounts it)
SECURITY_HEADERS = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data: blob: https:; style-src 'self'; "
        "script-src 'self'; connect-src 'self'; frame-ancestors 'none'"
    ),
}
# the page is small and changes with each release; scripts are revalidated too
_HEADERS = {"Cache-Control": "no-cache", **SECURITY_HEADERS}


@router.get("/admin")
@router.get("/admin/")
async def console() -> FileResponse:
    """The console page (login, catalog, points mall, sales, coupons, import, dashboard)."""
    return FileResponse(INDEX, media_type="text/html; charset=utf-8", headers=_HEADERS)
