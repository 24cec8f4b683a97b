"""The write-behind worker: ledger streams in Redis -> the double-entry ledger in Postgres."""

from ..redis_backend.codec import STREAM_GROUP
from .worker import PartitionLag, StepResult, WriteBehind, WriteBehindError

__all__ = ["STREAM_GROUP", "PartitionLag", "StepResult", "WriteBehind", "WriteBehindError"]
