"""A member's privacy rights (PIPL; WeChat's platform rules): delete the account, export
one's data; staff reading full phone numbers.

Each domain says what it holds about a member in its own `mall/<domain>/privacy.py`,
found through `mall.domains` (so this module imports no domain above it):
- `SECTIONS: list[Section]`: the rows of the member's data export;
- `NOT_EXPORTED: dict[str, str]`: member-linked models left out of the export, and why;
- `async blockers(member_id) -> list[MallError]`: what must finish before deletion;
- `async forfeits(member_id) -> dict[str, int]`: what the member gives up by deleting;
- `async erase(member_id) -> dict[str, int]`: remove or anonymise the domain's personal
  data inside the deletion's transaction; ledgers stay (accounting), counts are audited.

Deletion, once and in one transaction: claim the row (`deleted_at` by a conditional
update, so two deletions never both run), refuse on the first blocker, run every
domain's `erase`, anonymise the member row, and write the audit entry. The openid is
replaced, so the same WeChat account logs in again as a brand-new member; every token
of the deleted member stops working because `member_from_token` reads the row."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from types import ModuleType
from typing import Any

from tortoise.models import Model
from tortoise.transactions import in_transaction

from mall.audit import service as audit_service
from mall.domains import domain_modules
from mall.errors import ErrorCode, MallError
from mall.i18n import _
from mall.kit import clock, ratelimit
from mall.members import service as members_service
from mall.members.models import Member, Staff
from mall.members.service import MEMBER_NOT_FOUND, get_member

log = logging.getLogger("mall.members.privacy")

# --- blockers and refusals (domains raise these from their `blockers`) ------------------

WALLET_BALANCE_NOT_REFUNDED = ErrorCode(
    "WALLET_BALANCE_NOT_REFUNDED",
    409,
    _(
        "Your stored-value balance of {yuan} yuan must be refunded before the account can "
        "be deleted; please contact customer service"
    ),
)
UNFINISHED_ORDERS = ErrorCode(
    "UNFINISHED_ORDERS",
    409,
    _(
        "You have {count} unfinished orders; the account can be deleted once they are "
        "completed, cancelled or refunded"
    ),
)
UNFINISHED_REDEMPTIONS = ErrorCode(
    "UNFINISHED_REDEMPTIONS",
    409,
    _(
        "You have {count} points-mall redemptions waiting for shipment; the account can be "
        "deleted once they are shipped or cancelled"
    ),
)
PAYMENT_IN_PROGRESS = ErrorCode(
    "PAYMENT_IN_PROGRESS",
    409,
    _("A payment or refund of yours is still in progress; please try again once it has finished"),
)
PHONE_REVEAL_FORBIDDEN = ErrorCode(
    "PHONE_REVEAL_FORBIDDEN", 403, _("Your role may not see full phone numbers")
)

# An export reads at most this many rows per section; more are flagged as truncated.
EXPORT_MAX_ROWS = 20_000
# Exports are heavy reads: a few per member per hour is plenty for a copy of one's data.
EXPORTS_PER_HOUR = 5


@dataclass(frozen=True)
class Section:
    """One part of the export: the rows of `model` whose `member_field` is the member."""

    name: str
    model: type[Model]
    member_field: str = "member_id"
    exclude: tuple[str, ...] = ()

    def columns(self) -> list[str]:
        return [f for f in self.model._meta.fields_db_projection if f not in self.exclude]

    async def rows(self, member_id: int, limit: int) -> list[dict[str, Any]]:
        query = self.model.filter(**{self.member_field: member_id}).order_by("id")
        found: list[dict[str, Any]] = await query.limit(limit).values(*self.columns())
        return found


# The member's own row. Ledgers live in the other domains' sections.
SECTIONS = [Section("profile", Member, member_field="id")]
NOT_EXPORTED: dict[str, str] = {}


def privacy_modules() -> list[ModuleType]:
    """Every domain's privacy module, in dependency order (this one first)."""
    return domain_modules("privacy")


# --- deletion --------------------------------------------------------------------------


@dataclass(frozen=True)
class DeletionCheck:
    blockers: list[MallError]
    forfeits: dict[str, int]


async def deletion_check(member_id: int) -> DeletionCheck:
    """What stands in the way of deleting the account, and what deleting gives up."""
    blockers: list[MallError] = []
    forfeits: dict[str, int] = {}
    for module in privacy_modules():
        if hasattr(module, "blockers"):
            blockers += await module.blockers(member_id)
        if hasattr(module, "forfeits"):
            forfeits.update(await module.forfeits(member_id))
    return DeletionCheck(blockers, forfeits)


@dataclass(frozen=True)
class Deletion:
    member_id: int
    deleted_at: datetime
    already_deleted: bool
    erased: dict[str, int]


async def delete_account(
    member_id: int, *, staff: Staff | None = None, reason: str = ""
) -> Deletion:
    """Delete the member's account: personal data anonymised, ledgers kept, audited.

    Idempotent: an account already deleted answers with its first deletion and changes
    nothing. Refused (nothing changed) with the first blocker's error while money or
    goods are in flight; see `deletion_check`. `staff` is set when customer service
    deletes on the member's request."""
    member = await Member.get_or_none(id=member_id)
    if member is None:
        raise MEMBER_NOT_FOUND()
    if member.deleted_at is not None:
        return Deletion(member_id, member.deleted_at, True, {})
    now = clock.now()
    async with in_transaction():
        # the claim: one deletion wins; on PostgreSQL a second waits for the row, then
        # sees it taken. A blocker below rolls the claim back with everything else.
        claimed = await Member.filter(id=member_id, deleted_at__isnull=True).update(deleted_at=now)
        if not claimed:
            gone = await Member.get(id=member_id)
            return Deletion(member_id, gone.deleted_at or now, True, {})
        for module in privacy_modules():
            if hasattr(module, "blockers"):
                found = await module.blockers(member_id)
                if found:
                    raise found[0]
        erased: dict[str, int] = {}
        for module in privacy_modules():
            if hasattr(module, "erase"):
                erased.update(await module.erase(member_id))
        await audit_service.record(
            staff,
            "member.delete",
            f"member:{member_id}",
            by="staff" if staff is not None else "member",
            reason=reason,
            **erased,
        )
    log.info("account of member %s deleted (by %s)", member_id, "staff" if staff else "member")
    try:
        await members_service.mark_deleted(member_id)
    except Exception:
        # the deletion stands (the database is the record); the routes that load no
        # member take its tokens until they expire, and the consumers find it gone
        log.exception("member %s deleted, but Redis was not told", member_id)
    return Deletion(member_id, now, False, erased)


def deleted_openid(member_id: int) -> str:
    """What replaces the openid: unique, never a real openid, so WeChat login with the
    same account creates a fresh member."""
    return f"deleted:{member_id}"


async def erase(member_id: int) -> dict[str, int]:
    """The member row itself: identity and profile gone; id, level, growth, balances and
    the timestamps stay, as the ledgers refer to them."""
    await Member.filter(id=member_id).update(
        openid=deleted_openid(member_id),
        unionid=None,
        nickname="",
        avatar_url="",
        phone=None,
        birthday=None,
        tags=[],
    )
    # its sessions end too: no refresh token of the account works again
    return {"sessions": await members_service.revoke_sessions("member", member_id, "deleted")}


# --- export ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Export:
    member_id: int
    generated_at: datetime
    sections: dict[str, list[dict[str, Any]]]
    truncated: list[str]


async def export_data(member_id: int) -> Export:
    """A copy of everything the mall keeps about the member, section by section, oldest
    row first. Rate-limited per member."""
    await ratelimit.hit(f"privacy:export:{member_id}", EXPORTS_PER_HOUR, 3600)
    sections: dict[str, list[dict[str, Any]]] = {}
    truncated: list[str] = []
    for module in privacy_modules():
        for section in getattr(module, "SECTIONS", []):
            rows = await section.rows(member_id, EXPORT_MAX_ROWS + 1)
            if len(rows) > EXPORT_MAX_ROWS:
                rows = rows[:EXPORT_MAX_ROWS]
                truncated.append(section.name)
            sections[section.name] = rows
    return Export(member_id, clock.now(), sections, truncated)


# --- staff reading members -------------------------------------------------------------


async def member_for_staff(member_id: int) -> Member:
    return await get_member(member_id)


async def record_phone_reveal(staff: Staff, target: str, **detail: Any) -> None:
    """Only the admin role sees full phone numbers, and each time it does is audited."""
    if staff.role != "admin":
        raise PHONE_REVEAL_FORBIDDEN()
    await audit_service.record(staff, "phone.reveal", target[:128], **detail)
