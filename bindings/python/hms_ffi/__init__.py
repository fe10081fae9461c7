"""hms_ffi: Python binding of HMS-FFI over its C ABI (libhmsffi.so.1), with stdlib ctypes.

    import hms_ffi
    with hms_ffi.connect() as client:
        stub = client.bind("hms.test", "*")
        print(stub.call("echo", {"seq": 1}))
"""
from .client import (CallFuture, Caller, Client, Publisher, RequestContext, Service, Stream,
                     Stub, Subscription, connect)
from .errors import (STATUS_NAMES, AbortedError, AlreadyExistsError, CallCancelledError,
                     DataLossError, DeadlineExceededError, FailedPreconditionError, HmsError,
                     InternalError, InvalidArgumentError, NotFoundError, OutOfRangeError,
                     PermissionDeniedError, ResourceExhaustedError, UnauthenticatedError,
                     UnavailableError, UnimplementedError, UnknownError, error_for)
from ._native import lib as _lib

__version__ = "0.1.0"


def abi_version() -> tuple:
    """The library's ABI version as (major, minor)."""
    v = int(_lib.hms_abi_version())
    return (v >> 16, v & 0xFFFF)


__all__ = [
    "connect", "Client", "Stub", "CallFuture", "Stream", "Service", "RequestContext", "Caller",
    "Publisher", "Subscription", "HmsError", "CallCancelledError", "UnknownError", "InvalidArgumentError",
    "DeadlineExceededError", "NotFoundError", "AlreadyExistsError", "PermissionDeniedError",
    "ResourceExhaustedError", "FailedPreconditionError", "AbortedError", "OutOfRangeError",
    "UnimplementedError", "InternalError", "UnavailableError", "DataLossError",
    "UnauthenticatedError", "STATUS_NAMES", "error_for", "abi_version",
]
