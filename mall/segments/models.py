"""Segments, members' auto tags, and campaigns with their per-member log."""

from __future__ import annotations

from typing import Any

from tortoise import fields
from tortoise.models import Model


class Segment(Model):
    """A saved crowd pack: `rules` is the JSON rule document (see schemas.Rules)."""

    id = fields.BigIntField(primary_key=True)
    name = fields.CharField(max_length=64)
    description = fields.CharField(max_length=255, default="")
    rules: dict[str, Any] = fields.JSONField()  # type: ignore[assignment]
    active = fields.BooleanField(default=True)
    # the size at the last count (list pages show it without evaluating every segment)
    last_count = fields.IntField(null=True)
    counted_at = fields.DatetimeField(null=True)
    staff_id = fields.BigIntField(null=True)
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "segment"


class MemberAutoTag(Model):
    """A tag the auto-tag job derived from member data. Kept apart from the ops tags in
    `Member.tags`, so a refresh never loses what ops set; rules see it as "auto:<tag>"."""

    id = fields.BigIntField(primary_key=True)
    member_id = fields.BigIntField()
    tag = fields.CharField(max_length=64)
    created_at = fields.DatetimeField()

    class Meta:
        table = "segment_member_auto_tag"
        unique_together = (("member_id", "tag"),)
        indexes = (("tag", "member_id"),)


class Campaign(Model):
    """A subscribe message or gift pack sent to a segment's members (snapshotted as
    recipients when it is created). Counts are recomputed from the recipients."""

    id = fields.BigIntField(primary_key=True)
    segment: Any = fields.ForeignKeyField(
        "models.Segment", related_name="campaigns", on_delete=fields.RESTRICT
    )
    segment_id: int
    kind = fields.CharField(max_length=24)  # subscribe_message | gift_pack
    # subscribe_message: template_id, data, page; gift_pack: gift_pack_id
    payload: dict[str, Any] = fields.JSONField(default=dict)  # type: ignore[assignment]
    # "<segment>:<Idempotency-Key>": a retried request finds the same campaign
    request_key = fields.CharField(max_length=191, null=True, unique=True)
    status = fields.CharField(max_length=16, default="queued", db_index=True)  # queued|running|done
    members = fields.IntField(default=0)
    sent = fields.IntField(default=0)
    skipped_by_cap = fields.IntField(default=0)
    no_grant = fields.IntField(default=0)
    refused = fields.IntField(default=0)
    failed = fields.IntField(default=0)
    staff_id = fields.BigIntField(null=True)
    created_at = fields.DatetimeField()
    started_at = fields.DatetimeField(null=True)
    finished_at = fields.DatetimeField(null=True)

    class Meta:
        table = "segment_campaign"


class CampaignRecipient(Model):
    """One member of a campaign. A row is claimed (pending -> sending) by a conditional
    update before anything goes out, so a retry or a second runner never sends twice; a
    row left in `sending` by a crash is not resent (at most once)."""

    id = fields.BigIntField(primary_key=True)
    campaign: Any = fields.ForeignKeyField(
        "models.Campaign", related_name="recipients", on_delete=fields.CASCADE
    )
    campaign_id: int
    member_id = fields.BigIntField()
    # pending | sending | sent | skipped_by_cap | no_grant | refused | failed
    status = fields.CharField(max_length=16, default="pending")
    error = fields.CharField(max_length=64, default="")
    updated_at = fields.DatetimeField(null=True)

    class Meta:
        table = "segment_campaign_recipient"
        unique_together = (("campaign_id", "member_id"),)
        indexes = (("campaign_id", "status"),)
