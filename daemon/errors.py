"""Errors the daemon raises on purpose. Each carries the gRPC status the servicer answers with.

Hierarchy::

    DistilleryError                      INTERNAL unless a subclass says otherwise
    ├── BadInput                         INVALID_ARGUMENT: the request itself is wrong
    │   ├── BadUrl                       not http(s), userinfo, private address, no answer, too big...
    │   └── BadImage                     not an image, truncated, animated, too small or too large
    ├── NotFound                         NOT_FOUND: unknown, or belongs to someone else
    ├── Forbidden                        PERMISSION_DENIED: visible to the user, but not theirs to change
    ├── Exhausted                        RESOURCE_EXHAUSTED: queue, quota or store full
    ├── Conflict                         FAILED_PRECONDITION: the request clashes with the current state
    ├── Unavailable                      UNAVAILABLE: models not loaded yet, or the daemon is stopping
    ├── Unauthenticated                  UNAUTHENTICATED: missing or wrong token on TCP
    ├── JobCancelled                     CANCELLED: raised inside a job when its owner cancels it
    └── Unexpected                       INTERNAL: anything else, told with an error id (rpc/guard.py)

The message of every error is a sentence a chat user can read as is. Only the RPC layer turns errors into
``context.abort``: rpc/guard.py for every call, and rpc/servicer.py where a call must do something first.
"""

from __future__ import annotations

import grpc


class DistilleryError(Exception):
    """Base class; ``str(error)`` is the sentence shown to the person who asked."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL


class BadInput(DistilleryError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class BadUrl(BadInput):
    pass


class BadImage(BadInput):
    pass


class NotFound(DistilleryError):
    code = grpc.StatusCode.NOT_FOUND


class Forbidden(DistilleryError):
    code = grpc.StatusCode.PERMISSION_DENIED


class Exhausted(DistilleryError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Conflict(DistilleryError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class Unavailable(DistilleryError):
    code = grpc.StatusCode.UNAVAILABLE


class Unauthenticated(DistilleryError):
    code = grpc.StatusCode.UNAUTHENTICATED


class JobCancelled(DistilleryError):
    code = grpc.StatusCode.CANCELLED


class Unexpected(DistilleryError):
    """What a caller sees of a fault the daemon did not foresee: a generic sentence and the id of the log line
    that holds the traceback."""

    def __init__(self, error_id: str) -> None:
        super().__init__(
            "Something went wrong in the trainer. If it happens again, give the operator this error id: "
            f"{error_id}."
        )
        self.error_id = error_id
