"""Relative validity: N calendar months from issue, as the PRC Civil Code counts them."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from mall.coupons.service import add_months, last_valid_day, relative_validity
from mall.kit.clock import SHANGHAI

pytestmark = [pytest.mark.nodb, pytest.mark.clock]


@pytest.mark.parametrize(
    ("issued", "months", "last_day"),
    [
        (date(2024, 11, 30), 3, date(2025, 2, 28)),  # the issue's example
        (date(2023, 11, 30), 3, date(2024, 2, 29)),  # leap year
        (date(2023, 11, 29), 3, date(2024, 2, 29)),
        (date(2024, 11, 29), 3, date(2025, 2, 28)),
        (date(2024, 11, 28), 3, date(2025, 2, 28)),
        (date(2025, 1, 15), 3, date(2025, 4, 15)),
        (date(2025, 3, 31), 3, date(2025, 6, 30)),  # June has no 31st
        (date(2024, 12, 31), 3, date(2025, 3, 31)),  # across the year end
        (date(2025, 1, 31), 3, date(2025, 4, 30)),
        (date(2023, 12, 1), 3, date(2024, 3, 1)),
        (date(2024, 2, 29), 12, date(2025, 2, 28)),
        (date(2024, 8, 31), 6, date(2025, 2, 28)),
    ],
)
def test_three_calendar_months(issued: date, months: int, last_day: date) -> None:
    assert add_months(issued, months) == last_day
    at = datetime(issued.year, issued.month, issued.day, 15, 30, tzinfo=SHANGHAI)
    valid_from, expires_at = relative_validity(at, months)
    assert valid_from == at
    assert last_valid_day(expires_at) == last_day
    # works through the whole last day, Asia/Shanghai, and not a moment longer
    end = expires_at.astimezone(SHANGHAI)
    assert (end.date(), end.hour, end.minute) == (date.fromordinal(last_day.toordinal() + 1), 0, 0)


def test_issue_day_is_the_shanghai_day() -> None:
    # 16:30 UTC on 29 Nov is 00:30 on 30 Nov in Shanghai
    _from, expires_at = relative_validity(datetime(2024, 11, 29, 16, 30, tzinfo=UTC), 3)
    assert last_valid_day(expires_at) == date(2025, 2, 28)
    _from, expires_at = relative_validity(datetime(2024, 11, 28, 15, 59, tzinfo=UTC), 3)
    assert last_valid_day(expires_at) == date(2025, 2, 28)  # 23:59 on 28 Nov
    assert expires_at == datetime(2025, 2, 28, 16, 0, tzinfo=UTC)
