"""The wallet's hot path on Redis + Lua (see docs/wallet.md and backend.py)."""

from .backend import RedisBackend
from .codec import STREAM_GROUP, StreamMessage, balance_channel, decode_message, ledger_stream

__all__ = [
    "STREAM_GROUP",
    "RedisBackend",
    "StreamMessage",
    "balance_channel",
    "decode_message",
    "ledger_stream",
]
