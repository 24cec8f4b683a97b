"""ListWalletEvents over real gRPC, on both backends: the balance alerts and auto top-up
outcomes a wallet's spends and its top-up worker record, newest first, filtered by kind and
time, keyset-paginated; bad input refused naming the field; callable with a read key."""

from __future__ import annotations

from dataclasses import replace

import grpc
import grpc.aio
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from obol.type.v1 import time_range_pb2
from obol.wallet.v1 import wallet_pb2, wallet_pb2_grpc

from obol_core.apikeys import generate_api_key, hash_api_key
from obol_core.grpc_server import ServiceRegistration, build_server
from obol_core.pagination import encode_page_token
from obol_core.settings import CommonSettings
from obol_wallet.core import WalletCore
from obol_wallet.service import SERVICE_NAME, WalletService

from .harness import PARTITIONS, WalletApi, reason_and_fields, selector, usd

DOLLAR = 1_000_000_000
LOW = wallet_pb2.WALLET_EVENT_KIND_LOW_BALANCE
DEPLETED = wallet_pb2.WALLET_EVENT_KIND_DEPLETED
SUCCEEDED = wallet_pb2.WALLET_EVENT_KIND_AUTO_TOP_UP_SUCCEEDED
FAILED = wallet_pb2.WALLET_EVENT_KIND_AUTO_TOP_UP_FAILED
DISABLED = wallet_pb2.WALLET_EVENT_KIND_AUTO_TOP_UP_DISABLED


def _ms(ms: int, extra_nanos: int = 0) -> Timestamp:
    stamp = Timestamp()
    stamp.FromMilliseconds(ms)
    stamp.nanos += extra_nanos
    return stamp


async def _list(
    api: WalletApi, wallet_id: str, **fields: object
) -> wallet_pb2.ListWalletEventsResponse:
    request = wallet_pb2.ListWalletEventsRequest(wallet=selector(wallet_id), **fields)
    return await api.stub.ListWalletEvents(request)


async def _all(api: WalletApi, wallet_id: str, **fields: object) -> list[wallet_pb2.WalletEvent]:
    """Every event on one page. A worker round first: on Redis the events of a round's
    own work (e.g. `auto_top_up_succeeded` of the grant it added) reach Postgres through
    the stream at the next round."""
    await api.run_top_ups()
    reply = await _list(api, wallet_id, page_size=1000, **fields)
    assert reply.next_page_token == ""
    return list(reply.events)


async def _charge(api: WalletApi, wallet_id: str, amount: int, request_id: str) -> None:
    await api.stub.Charge(
        wallet_pb2.ChargeRequest(
            request_id=request_id, wallet=selector(wallet_id), amount=usd(amount)
        )
    )


async def _rule(
    api: WalletApi, wallet_id: str, *, payment_method_id: str, max_failures: int = 0
) -> None:
    await api.stub.SetAutoTopUpRule(
        wallet_pb2.SetAutoTopUpRuleRequest(
            wallet_id=wallet_id,
            threshold=usd(50 * DOLLAR),
            amount=usd(20 * DOLLAR),
            payment_method_id=payment_method_id,
            max_failures=max_failures,
            enabled=True,
            request_id=f"rule-{wallet_id}",
        )
    )
    await api.run_top_ups()  # a new rule is due at once: the worker looks (above: nothing)


async def _depletions(api: WalletApi, wallet_id: str, steps: list[int]) -> list[int]:
    """Fund 1$ and spend it, once per step, after advancing the clock by the step's ms
    (0: the same ms as the previous one): one `depleted` event each. Returns their times."""
    times = []
    for i, step in enumerate(steps):
        api.clock.advance(step)
        await api.stub.TopUp(
            wallet_pb2.TopUpRequest(
                request_id=f"fund-{i}",
                wallet=selector(wallet_id),
                amount=usd(DOLLAR),
                payment_reference=f"pay-{i}",
            )
        )
        await _charge(api, wallet_id, DOLLAR, f"spend-{i}")
        times.append(api.clock.now)
    await api.run_top_ups()  # Redis: the worker records the events from the stream
    return times


# ---- what is recorded ----


async def test_events_of_a_threshold_crossing_a_top_up_and_a_depletion(api: WalletApi) -> None:
    wallet_id = await api.wallet(60 * DOLLAR)
    await _rule(api, wallet_id, payment_method_id="pm_ok_visa")
    assert await _all(api, wallet_id) == []

    api.clock.advance(1000)
    crossed_at = api.clock.now
    await _charge(api, wallet_id, 15 * DOLLAR, "cross")  # 45 left: below 50
    api.clock.advance(1000)
    paid_at = api.clock.now
    await api.run_top_ups()  # records low_balance (Redis) and pays the attempt
    assert await api.available(wallet_id) == 65 * DOLLAR
    rule = (
        await api.stub.GetAutoTopUpRule(wallet_pb2.GetAutoTopUpRuleRequest(wallet_id=wallet_id))
    ).rule
    first_grant = rule.status.last_grant_id

    events = await _all(api, wallet_id)
    assert [(e.kind, e.occur_time.ToMilliseconds()) for e in events] == [
        (SUCCEEDED, paid_at),
        (LOW, crossed_at),
    ]
    succeeded, low = events
    assert all(e.wallet_id == wallet_id for e in events)
    assert dict(low.data) == {"available": str(45 * DOLLAR), "threshold": str(50 * DOLLAR)}
    assert dict(succeeded.data) == {
        "attempt_id": succeeded.data["attempt_id"],
        "grant_id": first_grant,
        "amount": str(20 * DOLLAR),
    }
    assert succeeded.data["attempt_id"].startswith(f"{wallet_id}:")
    assert succeeded.event_id == f"{succeeded.data['attempt_id']}:succeeded"

    # Spending everything: depleted, and below the threshold again (one spend, one ms).
    api.clock.advance(1000)
    drained_at = api.clock.now
    await _charge(api, wallet_id, 65 * DOLLAR, "drain")
    api.clock.advance(1000)
    await api.run_top_ups()
    events = await _all(api, wallet_id)
    assert [(e.kind, e.occur_time.ToMilliseconds()) for e in events] == [
        (SUCCEEDED, api.clock.now),
        (LOW, drained_at),  # same ms: by event id, descending ("...:low_balance")
        (DEPLETED, drained_at),
        (SUCCEEDED, paid_at),
        (LOW, crossed_at),
    ]
    assert dict(events[2].data) == {"available": "0", "threshold": str(50 * DOLLAR)}
    assert dict(events[1].data) == {"available": "0", "threshold": str(50 * DOLLAR)}
    assert events[1].event_id.removesuffix(":low_balance") == events[2].event_id.removesuffix(
        ":depleted"
    )  # both named after the drain's ledger entry
    assert len({e.event_id for e in events}) == 5

    # Recording again (the worker's next rounds) adds nothing.
    await api.run_top_ups()
    assert await _all(api, wallet_id) == events


async def test_a_depletion_after_the_rule_was_deleted_reports_no_threshold(
    api: WalletApi,
) -> None:
    wallet_id = await api.wallet(60 * DOLLAR)
    await _rule(api, wallet_id, payment_method_id="pm_ok_visa")
    await api.stub.DeleteAutoTopUpRule(
        wallet_pb2.DeleteAutoTopUpRuleRequest(wallet_id=wallet_id, request_id="del")
    )
    await _charge(api, wallet_id, 60 * DOLLAR, "drain")
    await api.run_top_ups()
    [depleted] = await _all(api, wallet_id)  # no rule: no low_balance, no attempt
    assert depleted.kind == DEPLETED
    assert dict(depleted.data) == {"available": "0", "threshold": "0"}


async def test_failures_and_the_disabling_alert_and_the_kind_filter(api: WalletApi) -> None:
    wallet_id = await api.wallet(60 * DOLLAR)
    await _rule(api, wallet_id, payment_method_id="pm_fail_card", max_failures=1)
    await _charge(api, wallet_id, 20 * DOLLAR, "cross")
    api.clock.advance(1000)
    await api.run_top_ups()  # declined: max_failures 1 disables the rule at once

    events = await _all(api, wallet_id)
    assert sorted(e.kind for e in events) == [LOW, FAILED, DISABLED]
    (failed,) = await _all(api, wallet_id, kinds=[FAILED])
    attempt_id = failed.data["attempt_id"]
    assert dict(failed.data) == {
        "attempt_id": attempt_id,
        "error": "card_declined",
        "consecutive_failures": "1",
        "next_attempt_ms": "0",  # disabled: no retry
    }
    assert failed.occur_time.ToMilliseconds() == api.clock.now
    (disabled,) = await _all(api, wallet_id, kinds=[DISABLED])
    assert dict(disabled.data) == {
        "attempt_id": attempt_id,
        "reason": "too_many_failures",
        "consecutive_failures": "1",
    }
    assert [e.kind for e in await _all(api, wallet_id, kinds=[DISABLED, LOW])] == [DISABLED, LOW]
    assert await _all(api, wallet_id, kinds=[DEPLETED, SUCCEEDED]) == []
    # Only this wallet's events.
    other = await api.wallet(10 * DOLLAR)
    await _charge(api, other, 10 * DOLLAR, "other")
    await api.run_top_ups()
    assert [e.kind for e in await _all(api, other)] == [DEPLETED]
    assert await _all(api, wallet_id) == events


async def test_a_wallet_can_be_named_by_customer_and_asset(api: WalletApi) -> None:
    wallet_id = await api.wallet(DOLLAR)
    await _charge(api, wallet_id, DOLLAR, "all")
    await api.run_top_ups()
    wallet = (
        await api.stub.GetWallet(wallet_pb2.GetWalletRequest(wallet=selector(wallet_id)))
    ).wallet
    reply = await api.stub.ListWalletEvents(
        wallet_pb2.ListWalletEventsRequest(
            wallet=wallet_pb2.WalletSelector(customer_id=wallet.customer_id, asset_code="USD")
        )
    )
    assert [(e.kind, e.wallet_id) for e in reply.events] == [(DEPLETED, wallet_id)]
    assert dict(reply.events[0].data) == {"available": "0", "threshold": "0"}  # no rule


# ---- pages and time ----


async def test_pages_return_every_event_exactly_once_newest_first(api: WalletApi) -> None:
    wallet_id = await api.wallet()
    # Seven events; some share a millisecond, so the keyset needs its event id tie-break.
    times = await _depletions(api, wallet_id, [1000, 0, 0, 1000, 1000, 0, 1000])
    everything = await _all(api, wallet_id)
    assert len(everything) == 7
    assert [e.occur_time.ToMilliseconds() for e in everything] == sorted(times, reverse=True)
    keys = [(e.occur_time.ToMilliseconds(), e.event_id) for e in everything]
    assert keys == sorted(keys, reverse=True)  # newest first, ties by event id

    for size in (1, 2, 3, 7):
        seen: list[wallet_pb2.WalletEvent] = []
        token, pages = "", 0
        while True:
            reply = await _list(api, wallet_id, page_size=size, page_token=token)
            assert len(reply.events) <= size
            seen += reply.events
            pages += 1
            token = reply.next_page_token
            if not token:
                break
        assert seen == everything, size  # each once, in order
        assert pages == -(-7 // size)  # no empty last page

    # 0 means the default page size (100): all seven on one page.
    default = await _list(api, wallet_id)
    assert (list(default.events), default.next_page_token) == (everything, "")


async def test_the_time_range_filters_by_occur_time_half_open(api: WalletApi) -> None:
    wallet_id = await api.wallet()
    t1, t2, t3, t4 = await _depletions(api, wallet_id, [1000, 1000, 1000, 1000])

    async def times(**bounds: Timestamp) -> list[int]:
        events = await _all(api, wallet_id, time_range=time_range_pb2.TimeRange(**bounds))
        return [e.occur_time.ToMilliseconds() for e in events]

    assert await times() == [t4, t3, t2, t1]
    assert await times(start_time=_ms(t2), end_time=_ms(t4)) == [t3, t2]  # [start, end)
    assert await times(start_time=_ms(t3)) == [t4, t3]
    assert await times(end_time=_ms(t2)) == [t1]
    assert await times(start_time=_ms(t4 + 1)) == []
    # Sub-millisecond bounds: an event at t2 is before t2 + 0.5 ms and after t1 + 0.5 ms.
    assert await times(start_time=_ms(t2, 500_000)) == [t4, t3]
    assert await times(end_time=_ms(t2, 500_000)) == [t2, t1]
    # With pages and a kind filter too.
    first = await _list(
        api,
        wallet_id,
        kinds=[DEPLETED],
        time_range=time_range_pb2.TimeRange(start_time=_ms(t2)),
        page_size=2,
    )
    second = await _list(
        api,
        wallet_id,
        kinds=[DEPLETED],
        time_range=time_range_pb2.TimeRange(start_time=_ms(t2)),
        page_size=2,
        page_token=first.next_page_token,
    )
    assert [e.occur_time.ToMilliseconds() for e in [*first.events, *second.events]] == [
        t4,
        t3,
        t2,
    ]
    assert second.next_page_token == ""


# ---- bad input ----


@pytest.mark.parametrize(
    ("fields", "code", "reason", "field"),
    [
        ({"page_size": 1001}, grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_FAILED", "page_size"),
        ({"page_size": -1}, grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_FAILED", "page_size"),
        (
            {"page_token": "not a token!"},
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_ARGUMENT",
            "page_token",
        ),
        (  # decodes, but holds no event position
            {"page_token": encode_page_token("wal_x")},
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_ARGUMENT",
            "page_token",
        ),
        (
            {
                "time_range": time_range_pb2.TimeRange(
                    start_time=_ms(2_000_000_000_000), end_time=_ms(1_000_000_000_000)
                )
            },
            grpc.StatusCode.INVALID_ARGUMENT,
            "VALIDATION_FAILED",
            "time_range",
        ),
        (
            {"kinds": [wallet_pb2.WALLET_EVENT_KIND_UNSPECIFIED]},
            grpc.StatusCode.INVALID_ARGUMENT,
            "VALIDATION_FAILED",
            "kinds[0]",
        ),
        ({"kinds": [99]}, grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_FAILED", "kinds[0]"),
    ],
)
async def test_bad_list_wallet_events_requests_are_refused_naming_the_field(
    api: WalletApi, fields: dict[str, object], code: grpc.StatusCode, reason: str, field: str
) -> None:
    wallet_id = await api.wallet(DOLLAR)
    await _charge(api, wallet_id, DOLLAR, "all")
    await api.run_top_ups()
    before = await _all(api, wallet_id)
    assert [e.kind for e in before] == [DEPLETED]
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _list(api, wallet_id, **fields)
    assert refused.value.code() == code
    assert reason_and_fields(refused.value) == (reason, [field])
    assert await _all(api, wallet_id) == before  # nothing changed


async def test_events_of_unknown_or_unnamed_wallets_are_refused(api: WalletApi) -> None:
    for wallet, code, reason in (
        (
            wallet_pb2.WalletSelector(wallet_id="wal_01JUNKNOWNUNKNOWNUNKNOWN00"),
            grpc.StatusCode.NOT_FOUND,
            "UNKNOWN_WALLET",
        ),
        (
            wallet_pb2.WalletSelector(external_customer_id="nobody", asset_code="USD"),
            grpc.StatusCode.NOT_FOUND,
            "UNKNOWN_WALLET",
        ),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await api.stub.ListWalletEvents(wallet_pb2.ListWalletEventsRequest(wallet=wallet))
        assert (refused.value.code(), reason_and_fields(refused.value)[0]) == (code, reason)
    with pytest.raises(grpc.aio.AioRpcError) as unnamed:
        await api.stub.ListWalletEvents(wallet_pb2.ListWalletEventsRequest())
    assert unnamed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert reason_and_fields(unnamed.value) == ("VALIDATION_FAILED", ["wallet"])


# ---- scope ----


async def test_a_read_key_can_list_wallet_events(api: WalletApi) -> None:
    """On a server that requires API keys (the harness's does not), over the same storage."""
    wallet_id = await api.wallet(DOLLAR)
    await _charge(api, wallet_id, DOLLAR, "all")
    await api.run_top_ups()
    key = generate_api_key()
    settings = CommonSettings.from_env(
        "wallet-test",
        50051,
        "OBOL_WALLET_PORT",
        environ={"OBOL_HOST": "127.0.0.1", "OBOL_API_KEYS": f"reader:read:{hash_api_key(key)}"},
    )
    core = WalletCore(
        api.pool, api.backend, api.clock, partitions=PARTITIONS, default_hold_ttl_ms=60_000
    )
    server = build_server(
        replace(settings, port=0),
        [
            ServiceRegistration(
                SERVICE_NAME,
                WalletService(api.pool, core),
                wallet_pb2_grpc.add_WalletServiceServicer_to_server,
            )
        ],
        [],
    )
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = wallet_pb2_grpc.WalletServiceStub(channel)
            request = wallet_pb2.ListWalletEventsRequest(wallet=selector(wallet_id))
            reply = await stub.ListWalletEvents(
                request, metadata=(("authorization", f"Bearer {key}"),)
            )
            assert [e.kind for e in reply.events] == [DEPLETED]
            # The server does check keys and scopes: none is refused, and so is an admin
            # RPC for this read key.
            with pytest.raises(grpc.aio.AioRpcError) as anonymous:
                await stub.ListWalletEvents(request)
            assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(grpc.aio.AioRpcError) as denied:
                await stub.DeleteAutoTopUpRule(
                    wallet_pb2.DeleteAutoTopUpRuleRequest(wallet_id=wallet_id, request_id="d"),
                    metadata=(("authorization", f"Bearer {key}"),),
                )
            assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    finally:
        await server.stop()
