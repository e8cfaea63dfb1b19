"""Bearer-token check for the TCP listener; the unix socket relies on file permissions instead."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf import descriptor_pool

# Health checks stay open so load balancers and systemd probes need no secret.
_OPEN_PREFIXES = ("/grpc.health.v1.Health/",)


class TokenInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Answers UNAUTHENTICATED unless ``authorization: Bearer <token>`` matches, compared in constant time."""

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        if handler_call_details.method.startswith(_OPEN_PREFIXES):
            return await continuation(handler_call_details)
        metadata = dict(handler_call_details.invocation_metadata or ())
        given = metadata.get("authorization", "")
        given_bytes = given.encode() if isinstance(given, str) else bytes(given)
        if hmac.compare_digest(given_bytes, self._expected):
            return await continuation(handler_call_details)
        return _deny(handler_call_details)


def _deny(details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
    async def abort(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, "A valid token is required on this port.")

    # The handler must have the method's streaming shape or gRPC rejects the call before it is aborted;
    # the shape comes from the method's descriptor ("/pkg.Service/Method" -> "pkg.Service.Method").
    try:
        method = descriptor_pool.Default().FindMethodByName(details.method.lstrip("/").replace("/", "."))
    except KeyError:
        return grpc.unary_unary_rpc_method_handler(abort)
    shapes = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }
    make: Callable[..., grpc.RpcMethodHandler] = shapes[(method.client_streaming, method.server_streaming)]
    return make(abort)
