"""Numbers WeChat reports for refunds, read back to the refund and its attempt: the
first attempt keeps the refund's own number, an ops retry is `<number>-<attempt>`."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from mall.wechat import pay

pytestmark = pytest.mark.nodb


@dataclass
class Row:
    number: str
    attempts: int


async def test_each_reported_number_finds_its_refund_and_attempt() -> None:
    rows = {r.number: r for r in (Row("R1", 0), Row("R2", 2), Row("R-3", 0))}
    loaded: list[set[str]] = []

    async def load(bases: set[str]) -> dict[str, Row]:
        loaded.append(bases)
        return {b: rows[b] for b in bases if b in rows}

    found = await pay.find_refund_attempts(
        ["R1", "R2-2", "R2-3", "R-3", "R9"], load, lambda r: r.attempts
    )
    assert found == {
        "R1": (rows["R1"], 0),
        "R2-2": (rows["R2"], 2),
        "R-3": (rows["R-3"], 0),  # its own number first, not attempt 3 of "R"
    }  # R2-3: an attempt never made; R9: unknown
    assert loaded == [{"R1", "R2", "R2-2", "R2-3", "R-3", "R", "R9"}]  # one load
