"""Money is integer fen (1 yuan = 100 fen); never floats."""

from __future__ import annotations

Fen = int


def yuan(amount: int) -> Fen:
    return amount * 100


def fmt_yuan(fen: Fen) -> str:
    sign = "-" if fen < 0 else ""
    fen = abs(fen)
    return f"{sign}¥{fen // 100}.{fen % 100:02d}"


def apply_rate(fen: Fen, numerator: int, denominator: int) -> Fen:
    """fen * numerator / denominator, rounded half up (for discounts)."""
    if denominator <= 0:
        raise ValueError("denominator must be positive")
    return (fen * numerator * 2 + denominator) // (denominator * 2)
