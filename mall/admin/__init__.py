"""Ops routers only (under /api/admin/v1); each module here exposes `router` and
calls domain services. Modules are discovered, so a domain adds its own file."""
