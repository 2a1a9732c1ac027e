from __future__ import annotations

from tortoise import fields
from tortoise.models import Model


class AuditLog(Model):
    """Append-only record of a staff write."""

    id = fields.BigIntField(primary_key=True)
    staff_id = fields.BigIntField(null=True, db_index=True)
    staff_username = fields.CharField(max_length=64, default="")
    action = fields.CharField(max_length=64, db_index=True)
    target = fields.CharField(max_length=128, default="")
    detail: dict[str, object] = fields.JSONField(default=dict)  # type: ignore[assignment]
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "audit_log"
