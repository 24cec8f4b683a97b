"""After the ledger reaches Postgres (drained write-behind, or at once on the baseline):
entries balance, chains verify, the ledger equals the live balance, statements list it."""

from __future__ import annotations

import asyncio

from obol.wallet.v1 import wallet_pb2

from .harness import WalletApi, selector, usd

DOLLAR = 1_000_000_000


async def _activity(api: WalletApi, wallet_id: str) -> None:
    hold = await api.stub.Authorize(
        wallet_pb2.AuthorizeRequest(
            request_id="l-a", wallet=selector(wallet_id), amount=usd(DOLLAR)
        )
    )
    await api.stub.Capture(
        wallet_pb2.CaptureRequest(
            request_id="l-c", hold_id=hold.hold_id, amount=usd(DOLLAR // 2), provider_cost=usd(7)
        )
    )
    voided = await api.stub.Authorize(
        wallet_pb2.AuthorizeRequest(
            request_id="l-a2", wallet=selector(wallet_id), amount=usd(DOLLAR)
        )
    )
    await api.stub.Void(wallet_pb2.VoidRequest(request_id="l-v", hold_id=voided.hold_id))
    charges = [
        api.stub.Charge(
            wallet_pb2.ChargeRequest(
                request_id=f"l-ch-{i}", wallet=selector(wallet_id), amount=usd(1000)
            )
        )
        for i in range(20)
    ]
    await asyncio.gather(*charges)


async def test_ledger_balances_verifies_and_matches_the_live_balance(api: WalletApi) -> None:
    wallet_id = await api.wallet(5 * DOLLAR)
    await _activity(api, wallet_id)
    await api.drain_ledger()

    verified = await api.stub.VerifyLedger(wallet_pb2.VerifyLedgerRequest(wallet_id=wallet_id))
    assert verified.valid, verified.problem
    assert verified.balance_matches
    assert verified.live_balance.amount == 5 * DOLLAR - DOLLAR // 2 - 20 * 1000
    assert verified.entries_checked >= 25

    totals = await api.pool.fetch(
        "SELECT asset_code, sum(amount)::bigint AS total FROM ledger_lines GROUP BY asset_code"
    )
    assert totals and all(row["total"] == 0 for row in totals)
    unbalanced = await api.pool.fetchval(
        """SELECT count(*) FROM (SELECT entry_id, asset_code FROM ledger_lines
           GROUP BY entry_id, asset_code HAVING sum(amount) <> 0) AS bad"""
    )
    assert unbalanced == 0


async def test_statement_lists_every_entry_newest_first_in_pages(api: WalletApi) -> None:
    wallet_id = await api.wallet(5 * DOLLAR)
    await _activity(api, wallet_id)
    await api.drain_ledger()

    seen: list[wallet_pb2.Transaction] = []
    token = ""
    while True:
        page = await api.stub.ListTransactions(
            wallet_pb2.ListTransactionsRequest(
                wallet_id=wallet_id,
                page_size=7,
                page_token=token,
                view=wallet_pb2.TRANSACTION_VIEW_FULL,
            )
        )
        seen.extend(page.transactions)
        token = page.next_page_token
        if not token:
            break
    times = [t.event_time.ToMilliseconds() for t in seen]
    assert times == sorted(times, reverse=True)  # newest first
    sequences = sorted(t.sequence for t in seen)
    assert sequences == list(range(1, len(sequences) + 1))  # every entry, once
    kinds = {t.kind for t in seen}
    assert {
        wallet_pb2.TRANSACTION_KIND_TOP_UP,
        wallet_pb2.TRANSACTION_KIND_CAPTURE,
        wallet_pb2.TRANSACTION_KIND_CHARGE,
    } <= kinds
    top_up = next(t for t in seen if t.kind == wallet_pb2.TRANSACTION_KIND_TOP_UP)
    assert top_up.balance_delta.amount == 5 * DOLLAR
    fetched = await api.stub.GetTransaction(
        wallet_pb2.GetTransactionRequest(transaction_id=top_up.transaction_id)
    )
    assert sum(line.amount.amount for line in fetched.transaction.lines) == 0
    assert len(fetched.transaction.hash) == 32
