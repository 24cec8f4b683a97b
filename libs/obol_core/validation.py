"""Request validation with protovalidate at the server edge.

The rules live in the protos (`buf.validate` options); violations become a
`ValidationFailed` (INVALID_ARGUMENT, reason VALIDATION_FAILED) whose field violations
name each bad field by path, e.g. `items[3].amount.amount` or `labels["tier"]`.
"""

from __future__ import annotations

import json

import protovalidate
from google.protobuf.message import Message
from protovalidate import FieldPathPb, Violation

from .errors import FieldViolation, ValidationFailed

__all__ = ["field_path", "validate_request"]

# One validator for the process: it caches the compiled rules of every message type.
_validator = protovalidate.Validator()


def field_path(path: FieldPathPb | None) -> str:
    """Render a protovalidate field path: names joined by dots, subscripts in brackets.

    A message-level rule has no path and renders as "".
    """
    if path is None:
        return ""
    parts: list[str] = []
    for element in path.elements:
        text = element.field_name
        subscript = element.subscript
        if subscript is not None:
            key = subscript.value
            if subscript.field == "string_key":
                text += f"[{json.dumps(key)}]"
            elif subscript.field == "bool_key":
                text += "[true]" if key else "[false]"
            else:
                text += f"[{key}]"
        parts.append(text)
    return ".".join(parts)


def _to_field_violation(violation: Violation) -> FieldViolation:
    proto = violation.proto
    return FieldViolation(
        field=field_path(proto.field), description=proto.message, reason=proto.rule_id
    )


def validate_request(message: Message) -> None:
    """Raise `ValidationFailed` (INVALID_ARGUMENT) listing every rule `message` breaks."""
    violations = _validator.collect_violations(message)
    if not violations:
        return
    field_violations = [_to_field_violation(v) for v in violations]
    first = field_violations[0]
    summary = f"{first.field}: {first.description}" if first.field else first.description
    if len(field_violations) > 1:
        summary += f" (and {len(field_violations) - 1} more)"
    raise ValidationFailed(f"invalid request: {summary}", field_violations=field_violations)
