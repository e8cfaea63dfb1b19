"""The edge of every Distillery call: requests are checked before the servicer sees them, and nothing the
daemon did not foresee leaves it as more than a sentence with an error id.

``GuardInterceptor`` wraps each Distillery method's handler:

* a request that cannot be decoded, or whose fields break ``validate.check_request``, is refused with
  INVALID_ARGUMENT and its sentence; for client streams every message is checked as it arrives;
* a ``DistilleryError`` from anywhere below is answered with its own code and sentence;
* any other exception is logged with its traceback under a short random error id and answered INTERNAL with a
  generic sentence that carries only that id: no exception class, library message or path reaches a caller.

Health and reflection calls pass through untouched.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn, TypeAlias

import grpc
from google.protobuf.message import Message

from daemon.errors import BadInput, DistilleryError, Unexpected
from daemon.rpc.validate import PACKAGE, check_request

log = logging.getLogger(__name__)

SERVICE = f"{PACKAGE}.Distillery"
# Marks a status whose details are a sentence written for the person who asked (clients show it as is).
USER_MESSAGE_KEY = "x-distillery-error"

Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]


class _Unreadable:
    """Stands in for a request message whose bytes did not decode."""


UNREADABLE = _Unreadable()


async def abort(context: Context, error: DistilleryError) -> NoReturn:
    await context.abort(error.code, str(error), trailing_metadata=((USER_MESSAGE_KEY, error.code.name),))
    raise AssertionError("abort returned")  # abort always raises; this keeps type checkers honest


async def answer(context: Context, method: str, error: Exception) -> NoReturn:
    """Refuse the call for ``error``: its own sentence if the daemon raised it, else an error id."""
    if isinstance(error, DistilleryError):
        await abort(context, error)
    error_id = secrets.token_hex(4)
    log.error("unexpected error %s in %s", error_id, method, exc_info=error)
    await abort(context, Unexpected(error_id))


def check(request: object) -> None:
    if isinstance(request, _Unreadable) or not isinstance(request, Message):
        raise BadInput("The request could not be read; the client may be built from another version of the API.")
    check_request(request)


async def _checked(requests: AsyncIterator[object]) -> AsyncIterator[object]:
    async for request in requests:
        check(request)
        yield request


def _tolerant(deserialize: Callable[[bytes], object] | None) -> Callable[[bytes], object] | None:
    if deserialize is None:
        return None

    def read(data: bytes) -> object:
        try:
            return deserialize(data)
        except Exception:  # a DecodeError, or bytes that are not valid UTF-8 in a string field
            return UNREADABLE

    return read


def _guarded(handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
    deserialize = _tolerant(handler.request_deserializer)
    serialize = handler.response_serializer
    passing = (grpc.aio.AbortError,)

    if handler.unary_unary is not None:
        unary_unary = handler.unary_unary

        async def guarded_unary_unary(request: object, context: Context) -> object:
            try:
                check(request)
                return await unary_unary(request, context)
            except passing:
                raise
            except Exception as error:
                await answer(context, method, error)

        return grpc.unary_unary_rpc_method_handler(guarded_unary_unary, deserialize, serialize)

    if handler.unary_stream is not None:
        unary_stream = handler.unary_stream

        async def guarded_unary_stream(request: object, context: Context) -> AsyncIterator[object]:
            try:
                check(request)
                async for reply in unary_stream(request, context):
                    yield reply
            except passing:
                raise
            except Exception as error:
                await answer(context, method, error)

        return grpc.unary_stream_rpc_method_handler(guarded_unary_stream, deserialize, serialize)

    if handler.stream_unary is not None:
        stream_unary = handler.stream_unary

        async def guarded_stream_unary(requests: AsyncIterator[object], context: Context) -> object:
            try:
                return await stream_unary(_checked(requests), context)
            except passing:
                raise
            except Exception as error:
                await answer(context, method, error)

        return grpc.stream_unary_rpc_method_handler(guarded_stream_unary, deserialize, serialize)

    stream_stream = handler.stream_stream

    async def guarded_stream_stream(requests: AsyncIterator[object], context: Context) -> AsyncIterator[object]:
        try:
            async for reply in stream_stream(_checked(requests), context):
                yield reply
        except passing:
            raise
        except Exception as error:
            await answer(context, method, error)

    return grpc.stream_stream_rpc_method_handler(guarded_stream_stream, deserialize, serialize)


class GuardInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Puts ``_guarded`` around every Distillery method; other services are left as they are."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or not method.startswith(f"/{SERVICE}/"):
            return handler
        return _guarded(handler, method)
