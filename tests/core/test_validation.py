import pytest
from core_harness import Messages

from obol_core.errors import ValidationFailed
from obol_core.validation import validate_request


def test_valid_message_passes(messages: Messages) -> None:
    validate_request(messages.Item(sku="a", amount=0))
    validate_request(messages.Order())


def test_top_level_violations(messages: Messages) -> None:
    with pytest.raises(ValidationFailed) as info:
        validate_request(messages.Item(sku="", amount=-1))
    err = info.value
    assert err.reason == "VALIDATION_FAILED"
    assert [(v.field, v.reason) for v in err.field_violations] == [
        ("sku", "string.min_len"),
        ("amount", "int64.gte"),
    ]
    assert err.field_violations[1].description == "must be greater than or equal to 0"
    assert err.message == ("invalid request: sku: must be at least 1 characters (and 1 more)")
    assert err.metadata == {"field": "sku"}


def test_nested_repeated_and_map_paths(messages: Messages) -> None:
    order = messages.Order()
    for amount in (1, 2, 3, -4):
        order.items.add(sku="a", amount=amount)
    order.by_asset["EUR"].CopyFrom(messages.Item(sku="", amount=1))
    order.by_tier[7].CopyFrom(messages.Item(sku="x", amount=-1))
    order.total.CopyFrom(messages.Item(sku="x", amount=-2))
    with pytest.raises(ValidationFailed) as info:
        validate_request(order)
    assert sorted(v.field for v in info.value.field_violations) == sorted(
        ["items[3].amount", 'by_asset["EUR"].sku', "by_tier[7].amount", "total.amount"]
    )
