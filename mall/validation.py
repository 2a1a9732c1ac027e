"""Pydantic's validation errors as field messages in the request's language.

Pydantic renders its messages in English only. Each error carries a stable `type` and a
`ctx` with the numbers in it (`less_than_equal` + `{"le": 100}`), so the message is rebuilt
here from an English message id of ours, translated through the catalogs like every other
message (locale/zh_CN/LC_MESSAGES/validation.po). Messages of our own validators
(`raise ValueError("...")`) are looked up in the catalogs as they are."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from mall.i18n import _, get_locale, translate

# Error type -> message id. The placeholders are the keys of pydantic's `ctx`, plus
# `expected_plural` ("" or "s", for English). Types a JSON, query or header value cannot
# produce (Python-only checks) fall back to INVALID.
MESSAGES: dict[str, str] = {
    # presence and shape
    "missing": _("Field required"),
    "extra_forbidden": _("Extra inputs are not permitted"),
    "frozen_field": _("This field cannot be changed"),
    "invalid_key": _("Keys should be strings"),
    "none_required": _("Input should be null"),
    "json_invalid": _("Invalid JSON: {error}"),
    "json_type": _("JSON input should be string, bytes or bytearray"),
    "recursion_loop": _("Input is nested too deeply"),
    "recursion_depth_exceeded": _("Input is nested too deeply"),
    "model_type": _("Input should be an object"),
    "model_attributes_type": _("Input should be an object"),
    "dataclass_type": _("Input should be an object"),
    "dict_type": _("Input should be an object"),
    "named_tuple_type": _("Input should be an array or an object"),
    "list_type": _("Input should be a valid array"),
    "tuple_type": _("Input should be a valid array"),
    "set_type": _("Input should be a valid array"),
    "frozen_set_type": _("Input should be a valid array"),
    "iterable_type": _("Input should be a valid array"),
    "set_item_not_hashable": _("Set items should be hashable"),
    "too_short": _(
        "{field_type} should have at least {min_length} item{expected_plural}, not {actual_length}"
    ),
    "too_long": _("{field_type} should have at most {max_length} item{expected_plural}"),
    "union_tag_invalid": _(
        "Input tag '{tag}' found using {discriminator} does not match any of the expected "
        "tags: {expected_tags}"
    ),
    "union_tag_not_found": _("Unable to extract tag using discriminator {discriminator}"),
    # numbers
    "greater_than": _("Input should be greater than {gt}"),
    "greater_than_equal": _("Input should be greater than or equal to {ge}"),
    "less_than": _("Input should be less than {lt}"),
    "less_than_equal": _("Input should be less than or equal to {le}"),
    "multiple_of": _("Input should be a multiple of {multiple_of}"),
    "finite_number": _("Input should be a finite number"),
    "int_type": _("Input should be a valid integer"),
    "int_parsing": _("Input should be a valid integer, unable to parse string as an integer"),
    "int_parsing_size": _("Unable to parse input string as an integer, exceeded maximum size"),
    "int_from_float": _("Input should be a valid integer, got a number with a fractional part"),
    "float_type": _("Input should be a valid number"),
    "float_parsing": _("Input should be a valid number, unable to parse string as a number"),
    "decimal_type": _("Input should be a valid decimal"),
    "decimal_parsing": _("Input should be a valid decimal"),
    "decimal_max_digits": _(
        "Decimal input should have no more than {max_digits} digit{expected_plural} in total"
    ),
    "decimal_max_places": _(
        "Decimal input should have no more than {decimal_places} decimal place{expected_plural}"
    ),
    "decimal_whole_digits": _(
        "Decimal input should have no more than {whole_digits} digit{expected_plural} before "
        "the decimal point"
    ),
    "bool_type": _("Input should be a valid boolean"),
    "bool_parsing": _("Input should be a valid boolean, unable to interpret input"),
    # text
    "string_type": _("Input should be a valid string"),
    "string_unicode": _("Input should be a valid string, unable to parse raw data as unicode"),
    "string_too_short": _("String should have at least {min_length} character{expected_plural}"),
    "string_too_long": _("String should have at most {max_length} character{expected_plural}"),
    "string_pattern_mismatch": _("String should match pattern '{pattern}'"),
    "string_not_ascii": _("String should contain only ASCII characters"),
    "bytes_type": _("Input should be valid bytes"),
    "bytes_too_short": _("Data should have at least {min_length} byte{expected_plural}"),
    "bytes_too_long": _("Data should have at most {max_length} byte{expected_plural}"),
    "bytes_invalid_encoding": _("Data should be valid {encoding}"),
    "enum": _("Input should be {expected}"),
    "literal_error": _("Input should be {expected}"),
    # dates and times
    "date_type": _("Input should be a valid date"),
    "date_parsing": _("Input should be a valid date in the format YYYY-MM-DD, {error}"),
    "date_from_datetime_parsing": _("Input should be a valid date or datetime, {error}"),
    "date_from_datetime_inexact": _("Datetimes provided to dates should have zero time"),
    "date_past": _("Date should be in the past"),
    "date_future": _("Date should be in the future"),
    "time_type": _("Input should be a valid time"),
    "time_parsing": _("Input should be in a valid time format, {error}"),
    "datetime_type": _("Input should be a valid datetime"),
    "datetime_parsing": _("Input should be a valid datetime, {error}"),
    "datetime_from_date_parsing": _("Input should be a valid datetime or date, {error}"),
    "datetime_object_invalid": _("Input should be a valid datetime"),
    "datetime_past": _("Input should be in the past"),
    "datetime_future": _("Input should be in the future"),
    "timezone_naive": _("Input should not have timezone info"),
    "timezone_aware": _("Input should have timezone info"),
    "timezone_offset": _("Timezone offset of {tz_expected} required, got {tz_actual}"),
    "time_delta_type": _("Input should be a valid duration"),
    "time_delta_parsing": _("Input should be a valid duration, {error}"),
    # URLs and UUIDs
    "url_type": _("URL input should be a string or URL"),
    "url_parsing": _("Input should be a valid URL, {error}"),
    "url_syntax_violation": _("Input violated strict URL syntax rules, {error}"),
    "url_too_long": _("URL should have at most {max_length} character{expected_plural}"),
    "url_scheme": _("URL scheme should be {expected_schemes}"),
    "uuid_type": _("UUID input should be a string"),
    "uuid_parsing": _("Input should be a valid UUID, {error}"),
    "uuid_version": _("UUID version {expected_version} expected"),
}

INVALID = _("This value is invalid")

# Which ctx number decides the English plural of `expected_plural`.
_PLURAL_OF = (
    "min_length",
    "max_length",
    "max_digits",
    "decimal_places",
    "whole_digits",
)
_BETWEEN_QUOTED = re.compile(r"(?<=') or (?=')|(?<='), (?=')")


def _params(ctx: Mapping[str, Any], locale: str) -> dict[str, Any]:
    params: dict[str, Any] = {k: v for k, v in ctx.items() if k != "error"}
    if "error" in ctx:
        params["error"] = str(ctx["error"])
    for key in _PLURAL_OF:
        if key in ctx:
            params["expected_plural"] = "" if ctx[key] == 1 else "s"
            break
    else:
        params["expected_plural"] = "s"
    for key in ("expected", "expected_schemes", "expected_tags"):
        if isinstance(params.get(key), str) and locale != "en":
            # "'a', 'b' or 'c'" -> "'a'、'b'、'c'": the Chinese reads "one of"
            params[key] = _BETWEEN_QUOTED.sub("、", params[key])
    return params


def field_message(error: Mapping[str, Any], locale: str | None = None) -> str:
    """One pydantic (or FastAPI) error dict as a message in `locale` (default: the request's)."""
    locale = locale or get_locale()
    kind = str(error.get("type", ""))
    ctx = error.get("ctx") or {}
    if kind in ("value_error", "assertion_error") and str(ctx.get("error") or ""):
        # our validators' own English sentence, translated when the catalog knows it
        return translate(str(ctx["error"]), locale)
    template = MESSAGES.get(kind)
    if template is not None:
        return translate(template, locale, **_params(ctx, locale))
    text = str(error.get("msg") or "")
    translated = translate(text, locale) if text else ""
    if translated and (translated != text or locale == "en"):
        return translated  # a custom error type whose message the catalog knows
    return translate(INVALID, locale)


def field_errors(
    errors: Iterable[Mapping[str, Any]], prefix: tuple[str, ...] = ()
) -> list[dict[str, Any]]:
    """The `fields` of a VALIDATION_ERROR: where (dotted `loc`), what (localized) and the type."""
    return [
        {
            "field": ".".join(str(p) for p in (*prefix, *err.get("loc", ()))),
            "message": field_message(err),
            "type": str(err.get("type", "")),
        }
        for err in errors
    ]
