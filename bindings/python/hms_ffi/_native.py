"""ctypes declarations of libhmsffi.so.1 (hms/ffi/hms_ffi.h), and the helpers that turn its
status codes and hms_error_t into exceptions.

The library is loaded with :class:`ctypes.CDLL`, never ``PyDLL``: a CDLL foreign function call
releases the GIL for its duration, so the functions the header marks BLOCKING (calls, waits,
hms_service_next, ...) let other Python threads run while they wait.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
from ctypes import (POINTER, Structure, byref, c_char_p, c_int, c_int32, c_int64, c_size_t,
                    c_uint32, c_uint64, c_void_p)
from typing import Any, Dict, Optional

from .errors import HmsError, error_for

ABI_MAJOR = 1

SIZE_MAX = ctypes.c_size_t(-1).value


class ClientOptions(Structure):
    _fields_ = [("socket_path", c_char_p), ("name", c_char_p), ("transport", c_int),
                ("wait_mode", c_int), ("default_timeout_ms", c_int64), ("reconnect", c_int)]


class CallOptions(Structure):
    _fields_ = [("timeout_ns", c_int64), ("traceparent", c_char_p), ("pretty", c_int)]


class ServiceOptions(Structure):
    _fields_ = [("display_name", c_char_p), ("description", c_char_p), ("ring_bytes", c_uint32),
                ("concurrency", c_uint32), ("import_path", c_char_p),
                ("stream_methods", c_char_p)]


_P = c_void_p          # an opaque handle
_PP = POINTER(c_void_p)  # a handle's address (out parameter / hms_x_free)
_SP = POINTER(c_void_p)  # char** out (kept as void* so it can be freed)
_LP = POINTER(c_size_t)

# name: (restype, argtypes)
_SIGNATURES: Dict[str, Any] = {
    "hms_abi_version": (c_uint32, []),
    "hms_status_name": (c_char_p, [c_int]),
    "hms_error_code": (c_int, [_P]),
    "hms_error_message": (c_char_p, [_P]),
    "hms_error_source": (c_char_p, [_P]),
    "hms_error_detail_count": (c_size_t, [_P]),
    "hms_error_details_json": (c_char_p, [_P]),
    "hms_error_free": (None, [_PP]),
    "hms_string_free": (None, [_SP]),
    "hms_client_options_init": (None, [POINTER(ClientOptions)]),
    "hms_client_connect": (c_int, [POINTER(ClientOptions), _PP, _PP]),
    "hms_client_free": (None, [_PP]),
    "hms_client_id": (c_uint64, [_P]),
    "hms_client_uses_shared_memory": (c_int, [_P]),
    "hms_client_contract_json": (c_int, [_P, c_char_p, c_char_p, _SP, _LP, _PP]),
    "hms_call_options_init": (None, [POINTER(CallOptions)]),
    "hms_client_bind": (c_int, [_P, c_char_p, c_char_p, _PP, _PP]),
    "hms_stub_free": (None, [_PP]),
    "hms_stub_service_id": (c_char_p, [_P]),
    "hms_stub_service_version": (c_char_p, [_P]),
    "hms_stub_call_json": (c_int, [_P, c_char_p, c_char_p, c_size_t, POINTER(CallOptions), _SP,
                                   _LP, _PP]),
    "hms_stub_call_oneway_json": (c_int, [_P, c_char_p, c_char_p, c_size_t,
                                          POINTER(CallOptions), _PP]),
    "hms_stub_call_async_json": (c_int, [_P, c_char_p, c_char_p, c_size_t, POINTER(CallOptions),
                                         _PP, _PP]),
    "hms_future_poll": (c_int, [_P]),
    "hms_future_wait": (c_int, [_P, c_int64]),
    "hms_future_fd": (c_int, [_P]),
    "hms_future_cancel": (c_int, [_P]),
    "hms_future_result_json": (c_int, [_P, _SP, _LP, _PP]),
    "hms_future_free": (None, [_PP]),
    "hms_stub_open_stream_json": (c_int, [_P, c_char_p, c_char_p, c_size_t, POINTER(CallOptions),
                                          _PP, _PP]),
    "hms_stream_next_json": (c_int, [_P, _SP, _LP, _PP]),
    "hms_stream_cancel": (c_int, [_P]),
    "hms_stream_free": (None, [_PP]),
    "hms_service_options_init": (None, [POINTER(ServiceOptions)]),
    "hms_client_serve": (c_int, [_P, c_char_p, c_char_p, c_char_p, c_char_p,
                                 POINTER(ServiceOptions), _PP, _PP]),
    "hms_service_next": (c_int, [_P, c_int64, _PP, _PP]),
    "hms_service_fd": (c_int, [_P]),
    "hms_service_stop": (c_int, [_P]),
    "hms_service_free": (None, [_PP]),
    "hms_request_method": (c_char_p, [_P]),
    "hms_request_is_stream": (c_int, [_P]),
    "hms_request_caller_pid": (c_int32, [_P]),
    "hms_request_caller_uid": (c_uint32, [_P]),
    "hms_request_caller_name": (c_char_p, [_P]),
    "hms_request_caller_json": (c_char_p, [_P]),  # since ABI 1.1
    "hms_request_time_left_ns": (c_int64, [_P]),
    "hms_request_traceparent": (c_char_p, [_P]),
    "hms_request_cancelled": (c_int, [_P]),
    "hms_request_params_json": (c_int, [_P, _SP, _LP, _PP]),
    "hms_request_reply_json": (c_int, [_PP, c_char_p, c_size_t, _PP]),
    "hms_request_reply_error": (c_int, [_PP, c_int, c_char_p, c_char_p, _PP]),
    "hms_request_stream_json": (c_int, [_P, c_char_p, c_size_t, _PP]),
    "hms_request_free": (None, [_PP]),
    "hms_client_advertise_json": (c_int, [_P, c_char_p, c_char_p, c_char_p, c_uint32, _PP, _PP]),
    "hms_publisher_publish_json": (c_int, [_P, c_char_p, c_size_t, _PP]),
    "hms_publisher_subscribers": (c_size_t, [_P]),
    "hms_publisher_free": (None, [_PP]),
    "hms_client_subscribe_json": (c_int, [_P, c_char_p, c_int64, _PP, _PP]),
    "hms_subscription_next_json": (c_int, [_P, c_int64, _SP, _LP, POINTER(c_uint64), _PP]),
    "hms_subscription_free": (None, [_PP]),
}


def _load() -> ctypes.CDLL:
    path = os.environ.get("HMS_FFI_LIBRARY")
    if not path:
        path = ctypes.util.find_library("hmsffi") or "libhmsffi.so.1"
    try:
        lib = ctypes.CDLL(path)  # CDLL, not PyDLL: calls release the GIL
    except OSError as e:
        raise ImportError(
            f"hms_ffi: cannot load {path!r} ({e}); set HMS_FFI_LIBRARY to libhmsffi.so.1") from e
    for name, (restype, argtypes) in _SIGNATURES.items():
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = argtypes
    version = lib.hms_abi_version()
    if version >> 16 != ABI_MAJOR:
        raise ImportError(f"hms_ffi: {path} has ABI {version >> 16}.{version & 0xFFFF}, "
                          f"this binding needs {ABI_MAJOR}.x")
    return lib


lib = _load()


def take_error(code: int, err: c_void_p) -> HmsError:
    """The exception for status ``code`` and the hms_error_t in ``err`` (freed here)."""
    if not err:
        name = lib.hms_status_name(code).decode()
        return error_for(code, name)
    try:
        message = (lib.hms_error_message(err) or b"").decode("utf-8", "replace")
        source = (lib.hms_error_source(err) or b"").decode("utf-8", "replace")
        raw = lib.hms_error_details_json(err)
        details: Dict[str, str] = {}
        if raw:
            try:
                details = {str(k): str(v) for k, v in json.loads(raw.decode()).items()}
            except (ValueError, AttributeError):
                details = {}
        ecode = lib.hms_error_code(err)
        return error_for(ecode or code, message, source, details)
    finally:
        lib.hms_error_free(byref(err))


def check(code: int, err: c_void_p) -> None:
    """Raises the exception of a non-zero status."""
    if code != 0:
        raise take_error(code, err)


def take_string(ptr: c_void_p, length: c_size_t) -> Optional[bytes]:
    """The bytes of a string the library returned (then freed); None for NULL."""
    if not ptr:
        return None
    try:
        return ctypes.string_at(ptr.value, length.value)
    finally:
        lib.hms_string_free(byref(ptr))


def ns(seconds: Optional[float]) -> int:
    """Seconds to a timeout_ns argument: None is -1 (no bound)."""
    if seconds is None or seconds == float("inf"):
        return -1
    return max(0, int(seconds * 1e9))


def encode(s: Optional[str]) -> Optional[bytes]:
    return None if s is None else s.encode("utf-8")


def to_json(obj: Any) -> bytes:
    if isinstance(obj, (bytes, bytearray)):
        return bytes(obj)
    if isinstance(obj, str):
        return obj.encode("utf-8")
    return json.dumps({} if obj is None else obj, separators=(",", ":")).encode("utf-8")
