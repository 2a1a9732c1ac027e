"""Pure pieces: the choice rule, re-derivation, and the chi-square tail used by the
fairness test (checked against textbook critical values)."""

from __future__ import annotations

import math

import pytest

from mall.blindbox.service import TableRow, effective_table, pick, rederive, table_json
from tests.blindbox.stats import chi2_sf

pytestmark = pytest.mark.nodb


@pytest.mark.parametrize(
    ("statistic", "df", "p"),
    [
        (3.841459, 1, 0.05),
        (10.827566, 1, 0.001),
        (16.266236, 3, 0.001),
        (7.814728, 3, 0.05),
        (29.588298, 10, 0.001),
        (2.0, 2, math.exp(-1)),
        (0.5, 4, 0.973500),
    ],
)
def test_chi2_tail_matches_known_values(statistic: float, df: int, p: float) -> None:
    assert chi2_sf(statistic, df) == pytest.approx(p, rel=1e-4)


def test_pick_walks_the_running_sum_of_x_mod_total() -> None:
    rows = [TableRow(1, "common", 3), TableRow(2, "common", 0), TableRow(3, "rare", 2)]
    assert [pick(r, rows) for r in range(7)] == [1, 1, 1, 3, 3, 1, 1]
    assert pick(2**53 - 1, rows) == (1 if (2**53 - 1) % 5 < 3 else 3)
    assert [pick(r, rows, "rare") for r in range(3)] == [3, 3, 3]
    with pytest.raises(ValueError):
        pick(0, [TableRow(1, "common", 0)])


def test_sold_out_and_unknown_stock_count_as_zero() -> None:
    conf = {"prizes": [["1", 5, "common", 1], ["2", 5, "common", 1], ["3", 1, "rare", 0]]}
    rows = effective_table(conf, {"1": "0"})  # prize 2's stock is missing: never oversell
    assert [row.weight for row in rows] == [0, 0, 1]


def test_rederive_follows_the_logged_mode() -> None:
    rows = [TableRow(10, "common", 90), TableRow(11, "secret", 10)]
    normal = {"random_value": 5, "probability_table": table_json(rows, forced=False, tier=None)}
    forced = {"random_value": 5, "probability_table": table_json(rows, forced=True, tier="secret")}
    assert rederive(normal) == 10
    assert rederive(forced) == 11
