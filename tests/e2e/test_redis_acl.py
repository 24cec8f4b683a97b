"""Obol on Redis as a least-privilege ACL user (deploy/redis/obol-user.acl): every service
and the write-behind as real processes, then `obol reconcile` and `obol rebuild`, all as
that user, without a single command, key or channel refused; and the user can do nothing
else."""

from __future__ import annotations

import os
from collections.abc import Iterator

import grpc.aio
import pytest
import redis
import redis.exceptions
from infra.cli import run_obol
from infra.redis_acl import PASSWORD, create_obol_user, refusals
from infra.stack import running_stack
from obol.wallet.v1 import wallet_pb2, wallet_pb2_grpc

from obol_cli.embedded import HOST, EmbeddedPostgres, EmbeddedRedis, free_port
from obol_cli.launcher import StackInfo

from .wallet_flow import charged_wallet, written_transactions


@pytest.fixture(scope="module")
def acl_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    """A Redis with user `obol` made from the rules (the default user stays, for the
    test's own checks)."""
    with EmbeddedRedis(tmp_path_factory.mktemp("acl-redis"), free_port()) as server:
        create_obol_user(server.url)
        yield server


@pytest.fixture(scope="module")
def acl_stack(
    embedded_postgres: EmbeddedPostgres,
    acl_redis: EmbeddedRedis,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[StackInfo]:
    url = f"redis://obol:{PASSWORD}@{HOST}:{acl_redis.port}/0"
    log = tmp_path_factory.mktemp("acl-stack") / "services.log"
    with running_stack(embedded_postgres, url, log) as stack:
        yield stack


async def test_every_service_and_the_worker_run_as_the_least_privilege_user(
    acl_stack: StackInfo, acl_redis: EmbeddedRedis
) -> None:
    try:
        await _use_the_wallet(acl_stack)
    except grpc.aio.AioRpcError as failed:  # most likely a refusal: say which
        raise AssertionError(f"{failed.code()}; Redis refused: {refusals(acl_redis.url)}") from None
    assert "no drift" in await _obol(acl_stack, "reconcile")
    await _obol(acl_stack, "rebuild")  # every wallet is hydrated: it only looks
    assert refusals(acl_redis.url) == []


async def _use_the_wallet(stack: StackInfo) -> None:
    """Top-up, charge, authorize, void: the write-behind process writes all four to
    Postgres, and the wallet's ledger verifies."""
    metadata = (("authorization", f"Bearer {stack.api_key}"),)
    async with grpc.aio.insecure_channel(stack.addresses["wallet"]) as channel:
        wallet = wallet_pb2_grpc.WalletServiceStub(channel)
        wallet_id, charged = await charged_wallet(wallet, metadata, "acl")
        selector = wallet_pb2.WalletSelector(wallet_id=wallet_id)
        held = await wallet.Authorize(
            wallet_pb2.AuthorizeRequest(
                request_id="acl-hold", wallet=selector, amount=charged.available
            ),
            metadata=metadata,
        )
        await wallet.Void(
            wallet_pb2.VoidRequest(request_id="acl-void", hold_id=held.hold_id),
            metadata=metadata,
        )
        listed = await written_transactions(wallet, metadata, wallet_id, 4)
        assert charged.transaction_id in listed and len(listed) == 4  # + top-up, hold, release
        verified = await wallet.VerifyLedger(
            wallet_pb2.VerifyLedgerRequest(wallet_id=wallet_id), metadata=metadata
        )
        assert verified.valid and verified.balance_matches


async def _obol(stack: StackInfo, *args: str) -> str:
    """`obol <args>` on the stack's storage (so as the same user); its output."""
    urls = {"DATABASE_URL": stack.database_url, "REDIS_URL": stack.redis_url}
    code, output = await run_obol(os.environ | urls, *args)
    assert code == 0, output
    return output


def test_the_user_can_do_nothing_else(acl_redis: EmbeddedRedis) -> None:
    url = f"redis://obol:{PASSWORD}@{HOST}:{acl_redis.port}/0"
    with redis.Redis.from_url(url) as obol:
        assert obol.ping()
        obol.set("{p3}:mine", "1")  # a key of its own pattern
        refused = [
            lambda: obol.get("not-obol"),  # a key outside its pattern
            lambda: obol.flushall(),
            lambda: obol.config_get("*"),
            lambda: obol.keys("*"),
            lambda: obol.script_flush(),  # would not break Obol (NOSCRIPT reloads), still no
            lambda: obol.execute_command("SCRIPT", "KILL"),
            lambda: obol.publish("elsewhere", "x"),  # a channel outside its pattern
        ]
        for command in refused:
            with pytest.raises(redis.exceptions.NoPermissionError):
                command()
