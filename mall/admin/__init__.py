"""Ops routers only (under /api/admin/v1); each module here exposes `router` and
calls domain services. A new module is added to `OPS_ROUTERS` in `router.py`."""
