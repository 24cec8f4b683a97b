import math
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st
from obol.type.v1 import money_pb2

from obol_core.errors import AmountOutOfRange
from obol_core.money import (
    LUA_EXACT_MAX,
    NANOS,
    Money,
    RoundingMode,
    check_amount_range,
    check_delta_range,
    divide,
    format_amount,
    parse_amount,
)

big_ints = st.integers(min_value=-(10**30), max_value=10**30)
denominators = big_ints.filter(lambda d: d != 0)


def reference(numerator: int, denominator: int, mode: RoundingMode) -> int:
    exact = Fraction(numerator, denominator)
    floor = math.floor(exact)
    ceiling = math.ceil(exact)
    if mode is RoundingMode.FLOOR:
        return floor
    if mode is RoundingMode.CEILING:
        return ceiling
    if mode is RoundingMode.UP:
        return ceiling if exact > 0 else floor
    if mode is RoundingMode.DOWN:
        return floor if exact > 0 else ceiling
    if exact - floor < Fraction(1, 2):
        return floor
    if exact - floor > Fraction(1, 2):
        return ceiling
    if mode is RoundingMode.HALF_UP:
        return ceiling if exact > 0 else floor
    return floor if floor % 2 == 0 else ceiling


@given(big_ints, denominators, st.sampled_from(RoundingMode))
def test_divide_matches_exact_fraction_reference(n: int, d: int, mode: RoundingMode) -> None:
    assert divide(n, d, mode) == reference(n, d, mode)


@given(st.integers(-1000, 1000), st.sampled_from([2, -2, 4, 10]), st.sampled_from(RoundingMode))
def test_divide_ties_are_common_at_small_values(n: int, d: int, mode: RoundingMode) -> None:
    assert divide(n, d, mode) == reference(n, d, mode)


@pytest.mark.parametrize(
    ("n", "d", "mode", "expected"),
    [
        (5, 2, RoundingMode.HALF_EVEN, 2),
        (7, 2, RoundingMode.HALF_EVEN, 4),
        (-5, 2, RoundingMode.HALF_EVEN, -2),
        (5, 2, RoundingMode.HALF_UP, 3),
        (-5, 2, RoundingMode.HALF_UP, -3),
        (5, -2, RoundingMode.HALF_UP, -3),
        (-1, 3, RoundingMode.CEILING, 0),
        (-1, 3, RoundingMode.FLOOR, -1),
        (1, 3, RoundingMode.CEILING, 1),
        (6, 3, RoundingMode.CEILING, 2),
        (21, 10, RoundingMode.UP, 3),
        (-21, 10, RoundingMode.UP, -3),
        (29, 10, RoundingMode.DOWN, 2),
        (-29, 10, RoundingMode.DOWN, -2),
    ],
)
def test_divide_examples(n: int, d: int, mode: RoundingMode, expected: int) -> None:
    assert divide(n, d, mode) == expected


def test_divide_refuses_floats_bools_and_zero() -> None:
    with pytest.raises(TypeError):
        divide(1.5, 2, RoundingMode.FLOOR)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        divide(True, 2, RoundingMode.FLOOR)
    with pytest.raises(ZeroDivisionError):
        divide(1, 0, RoundingMode.FLOOR)


@pytest.mark.parametrize(
    ("amount", "decimals", "text"),
    [
        (1_500_000_000, 9, "1.50"),
        (1, 9, "0.000000001"),
        (0, 9, "0.00"),
        (-1_500_000_000, 9, "-1.50"),
        (123_456_789_000, 9, "123.456789"),
        (-25, 1, "-2.5"),
        (10, 1, "1.0"),
        (7, 0, "7"),
        (1234, 2, "12.34"),
        (100, 2, "1.00"),
    ],
)
def test_format_amount(amount: int, decimals: int, text: str) -> None:
    assert format_amount(amount, decimals) == text


@given(st.integers(-(2**70), 2**70), st.integers(0, 18))
def test_parse_format_round_trip(amount: int, decimals: int) -> None:
    assert parse_amount(format_amount(amount, decimals), decimals) == amount


@pytest.mark.parametrize(
    ("text", "decimals", "amount"),
    [
        ("1.5", 9, 1_500_000_000),
        ("-0.000000001", 9, -1),
        ("+3", 2, 300),
        ("007.10", 2, 710),
        ("12", 0, 12),
    ],
)
def test_parse_amount(text: str, decimals: int, amount: int) -> None:
    assert parse_amount(text, decimals) == amount


@pytest.mark.parametrize(
    "text",
    [
        "1.001",
        "1e3",
        "1E-2",
        "NaN",
        "inf",
        "-inf",
        "",
        " 1",
        "1 ",
        ".5",
        "1.",
        "1_000",
        "١٢",
        "0x10",
    ],
)
def test_parse_amount_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_amount(text, 2)


def test_parse_amount_rejects_floats() -> None:
    with pytest.raises(TypeError):
        parse_amount(1.5, 2)  # type: ignore[arg-type]


def test_check_amount_range_names_field() -> None:
    assert check_amount_range(LUA_EXACT_MAX, "amount") == LUA_EXACT_MAX
    assert check_amount_range(0, "amount") == 0
    for bad in (-1, LUA_EXACT_MAX + 1):
        with pytest.raises(AmountOutOfRange) as info:
            check_amount_range(bad, "hold.amount")
        assert info.value.reason == "AMOUNT_OUT_OF_RANGE"
        assert info.value.field_violations[0].field == "hold.amount"
        assert info.value.metadata == {"field": "hold.amount", "limit": str(LUA_EXACT_MAX)}
        assert "hold.amount" in info.value.message


def test_check_delta_range_allows_negatives() -> None:
    assert check_delta_range(-LUA_EXACT_MAX, "delta") == -LUA_EXACT_MAX
    with pytest.raises(AmountOutOfRange):
        check_delta_range(-LUA_EXACT_MAX - 1, "delta")


def test_money_refuses_non_int_amounts() -> None:
    assert Money("USD", 5 * NANOS).amount == 5 * NANOS
    for bad in (1.0, True, "1"):
        with pytest.raises(TypeError):
            Money("USD", bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Money("", 1)


def test_money_proto_round_trip() -> None:
    money = Money("USD", 42)
    message = money.to_proto()
    assert message == money_pb2.Money(asset_code="USD", amount=42)
    assert Money.from_proto(message) == money
