"""The gRPC edge of the wallet service: map requests to the domain and back.

Requests arrive here already validated against their protovalidate rules (the edge
interceptor does it), and every WalletError is mapped to a rich status in that same
interceptor, so handlers only translate and delegate.
"""

from __future__ import annotations

import asyncpg
from obol.wallet.v1 import wallet_pb2, wallet_pb2_grpc

from obol_core.grpc_server import Context
from obol_core.idempotency import run_once
from obol_core.pagination import decode_page_token, page_size, split_page
from obol_core.postgres import Queryable

from . import customers
from .convert import customer_to_proto, new_customer_from_proto

SERVICE_NAME = wallet_pb2.DESCRIPTOR.services_by_name["WalletService"].full_name


class WalletService(wallet_pb2_grpc.WalletServiceServicer):
    def __init__(self, pool: asyncpg.Pool[asyncpg.Record]) -> None:
        self._pool = pool

    async def CreateCustomer(
        self, request: wallet_pb2.CreateCustomerRequest, context: Context
    ) -> wallet_pb2.CreateCustomerResponse:
        async def create(conn: Queryable) -> wallet_pb2.CreateCustomerResponse:
            created = await customers.create_customer(
                conn, new_customer_from_proto(request.customer)
            )
            return wallet_pb2.CreateCustomerResponse(customer=customer_to_proto(created))

        return await run_once(
            self._pool,
            request_id=request.request_id,
            method="CreateCustomer",
            request=request,
            response_type=wallet_pb2.CreateCustomerResponse,
            mutation=create,
        )

    async def GetCustomer(
        self, request: wallet_pb2.GetCustomerRequest, context: Context
    ) -> wallet_pb2.GetCustomerResponse:
        if request.WhichOneof("customer") == "external_id":
            found = await customers.get_customer_by_external_id(self._pool, request.external_id)
        else:
            found = await customers.get_customer(self._pool, request.customer_id)
        return wallet_pb2.GetCustomerResponse(customer=customer_to_proto(found))

    async def ListCustomers(
        self, request: wallet_pb2.ListCustomersRequest, context: Context
    ) -> wallet_pb2.ListCustomersResponse:
        limit = page_size(request.page_size)
        rows = await customers.list_customers(
            self._pool,
            limit=limit + 1,
            after=decode_page_token(request.page_token),
            plan_id=request.plan_id,
        )
        page, next_token = split_page(rows, limit, lambda row: row.customer_id)
        return wallet_pb2.ListCustomersResponse(
            customers=[customer_to_proto(row) for row in page], next_page_token=next_token
        )
