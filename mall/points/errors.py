"""Error codes of the points domain, defined once here (they register globally by code).

Re-exported by mall.points.service, which other domains and tests import."""

from __future__ import annotations

from mall.errors import ErrorCode
from mall.i18n import _

NOT_ENOUGH_POINTS = ErrorCode(
    "NOT_ENOUGH_POINTS", 409, _("You have {balance} points; this needs {cost}")
)
POINTS_AMOUNT_INVALID = ErrorCode(
    "POINTS_AMOUNT_INVALID", 422, _("The number of points must be a positive whole number")
)
POINTS_HOLD_NOT_FOUND = ErrorCode("POINTS_HOLD_NOT_FOUND", 404, _("Points hold not found"))
POINTS_HOLD_CLOSED = ErrorCode("POINTS_HOLD_CLOSED", 409, _("This points hold is already {status}"))
POINTS_ENTRY_NOT_FOUND = ErrorCode("POINTS_ENTRY_NOT_FOUND", 404, _("Points entry not found"))
POINTS_NOT_REVERSIBLE = ErrorCode(
    "POINTS_NOT_REVERSIBLE", 409, _("This points entry cannot be reversed")
)
POINTS_REVERSE_TOO_LARGE = ErrorCode(
    "POINTS_REVERSE_TOO_LARGE", 409, _("At most {left} points of this entry can still be reversed")
)
ALREADY_SIGNED_IN = ErrorCode(
    "ALREADY_SIGNED_IN", 409, _("You have already signed in today; come back tomorrow")
)
EXTERNAL_ORDER_NOT_FOUND = ErrorCode(
    "EXTERNAL_ORDER_NOT_FOUND",
    404,
    _("No order with this number was found for that platform; check the number or try later"),
)
ORDER_PHONE_MISMATCH = ErrorCode(
    "ORDER_PHONE_MISMATCH", 422, _("The phone number does not match this order")
)
ORDER_ALREADY_BOUND = ErrorCode(
    "ORDER_ALREADY_BOUND", 409, _("This order has already been claimed by another member")
)
ORDER_ALREADY_BOUND_BY_YOU = ErrorCode(
    "ORDER_ALREADY_BOUND_BY_YOU", 409, _("You have already claimed this order")
)
ORDER_NOT_BINDABLE = ErrorCode(
    "ORDER_NOT_BINDABLE", 409, _("This order was refunded or cancelled and cannot earn points")
)
RULES_VERSION_CONFLICT = ErrorCode(
    "RULES_VERSION_CONFLICT",
    409,
    _("The rules were changed by someone else (now version {current}); reload and try again"),
)
IMPORT_UNREADABLE = ErrorCode("IMPORT_UNREADABLE", 422, _("The import could not be read: {reason}"))
IMPORT_TOO_LARGE = ErrorCode("IMPORT_TOO_LARGE", 413, _("The import is too large"))
IMPORT_ROW_INVALID = ErrorCode("IMPORT_ROW_INVALID", 422, _("Invalid value: {detail}"))
IMPORT_ROW_DUPLICATE = ErrorCode(
    "IMPORT_ROW_DUPLICATE", 422, _("The same order already appears in row {first_row}")
)
IMPORT_ROW_BOUND = ErrorCode(
    "IMPORT_ROW_BOUND",
    409,
    _("The order is already claimed by a member; the changed row was not applied"),
)
