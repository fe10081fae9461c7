"""Client, stubs, futures, streams, services and topics over the C ABI."""
from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import selectors
import threading
import traceback
from ctypes import byref, c_size_t, c_uint64, c_void_p
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple

from . import _native as N
from ._native import lib
from .errors import HmsError, UnavailableError

JsonDict = Dict[str, Any]

_TEN_YEARS_S = 10 * 365 * 24 * 3600.0
_NO_BOUND_NS = 2**63 - 1

_TRANSPORTS = {"auto": 0, "shm": 1, "socket": 2}
_WAIT_MODES = {"adaptive": 0, "spin": 1, "blocking": 2}


def _call_options(timeout: Optional[float], traceparent: Optional[str]) -> N.CallOptions:
    o = N.CallOptions()
    lib.hms_call_options_init(byref(o))
    if timeout is not None:
        # 0 would mean "the client's default": a zero timeout is the smallest positive one.
        # float("inf") (or anything beyond ten years) means no deadline.
        o.timeout_ns = _NO_BOUND_NS if timeout >= _TEN_YEARS_S else max(1, int(timeout * 1e9))
    if traceparent is not None:
        o.traceparent = traceparent.encode()
    return o


def _loads(data: Optional[bytes]) -> JsonDict:
    if not data:
        return {}
    return json.loads(data)


class _Handle:
    """Owns one C handle, freed exactly once by ``free_fn`` (close() is idempotent)."""

    def __init__(self, ptr: c_void_p, free_fn: Callable[[Any], None]) -> None:
        self._ptr = ptr
        self._free_fn = free_fn
        self._lock = threading.Lock()

    @property
    def ptr(self) -> c_void_p:
        if not self._ptr:
            raise _closed(type(self).__name__)
        return self._ptr

    def close(self) -> None:
        """Frees the handle (again: nothing)."""
        with self._lock:
            if self._ptr:
                self._free_fn(byref(self._ptr))
                self._ptr = c_void_p()

    @property
    def closed(self) -> bool:
        return not self._ptr

    def __del__(self) -> None:  # the safety net: close() is the way
        try:
            self.close()
        except Exception:
            pass

    def __enter__(self):  # type: ignore[no-untyped-def]
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _closed(what: str) -> HmsError:
    from .errors import FailedPreconditionError
    return FailedPreconditionError(f"the {what} is closed")


def connect(socket_path: Optional[str] = None, name: Optional[str] = None,
            transport: str = "auto", timeout: float = 30.0, wait_mode: str = "adaptive",
            reconnect: bool = True) -> "Client":
    """Connects to the broker (BLOCKING, bounded by 5 s).

    ``socket_path``: the broker's socket (None: ``$HMS_FFI_SOCKET``, else the per-user default);
    ``name``: shown in the registry; ``transport``: "auto", "shm" or "socket"; ``timeout``: the
    deadline in seconds of a call that sets none. Use as ``with hms_ffi.connect() as client:``.
    """
    if transport not in _TRANSPORTS:
        raise ValueError(f"transport must be one of {sorted(_TRANSPORTS)}, not {transport!r}")
    o = N.ClientOptions()
    lib.hms_client_options_init(byref(o))
    o.socket_path = N.encode(socket_path)
    o.name = N.encode(name)
    o.transport = _TRANSPORTS[transport]
    o.wait_mode = _WAIT_MODES[wait_mode]
    o.default_timeout_ms = max(1, int(timeout * 1000))
    o.reconnect = 1 if reconnect else 0
    out, err = c_void_p(), c_void_p()
    N.check(lib.hms_client_connect(byref(o), byref(out), byref(err)), err)
    return Client(out)


class Client(_Handle):
    """A connection to the broker. Close it (or use ``with``) when done; handles made from it stay
    safe to use (they answer UNAVAILABLE or FAILED_PRECONDITION) and are closed separately."""

    def __init__(self, ptr: c_void_p) -> None:
        super().__init__(ptr, lib.hms_client_free)

    def __enter__(self) -> "Client":
        return self

    @property
    def id(self) -> int:
        """The client's id in the broker."""
        return int(lib.hms_client_id(self.ptr))

    @property
    def uses_shared_memory(self) -> bool:
        """Whether the client maps shared memory (False: it runs on sockets)."""
        return bool(lib.hms_client_uses_shared_memory(self.ptr))

    def contract(self, service_id: str, version: str) -> JsonDict:
        """The contract of ``service_id`` at exactly ``version`` as a dict (BLOCKING)."""
        s, n, err = c_void_p(), c_size_t(), c_void_p()
        N.check(lib.hms_client_contract_json(self.ptr, service_id.encode(), version.encode(),
                                             byref(s), byref(n), byref(err)), err)
        return _loads(N.take_string(s, n))

    def bind(self, service: str, range: Optional[str] = "*") -> "Stub":  # noqa: A002
        """A stub on the highest live version of ``service`` in ``range`` ("^1.0", "*")."""
        out, err = c_void_p(), c_void_p()
        N.check(lib.hms_client_bind(self.ptr, service.encode(), N.encode(range), byref(out),
                                    byref(err)), err)
        return Stub(out)

    def service(self, service_id: str, version: str, schema_file: str, interface: str, *,
                display_name: Optional[str] = None, description: Optional[str] = None,
                concurrency: Optional[int] = None, ring_bytes: Optional[int] = None,
                import_path: Optional[str] = None) -> "Service":
        """A service to be served from ``interface`` of ``schema_file``: add handlers with
        ``@svc.method(name)`` / ``@svc.stream(name)``, then ``svc.serve_forever()`` or
        ``svc.run(...)``; it registers with the broker on the first of those (or ``start()``)."""
        return Service(self, service_id, version, schema_file, interface,
                       display_name=display_name, description=description,
                       concurrency=concurrency, ring_bytes=ring_bytes, import_path=import_path)

    def advertise(self, topic: str, schema_file: Optional[str] = None,
                  type_name: Optional[str] = None, slots: int = 0) -> "Publisher":
        """Becomes the publisher of ``topic`` with messages of struct ``type_name`` (BLOCKING)."""
        out, err = c_void_p(), c_void_p()
        N.check(lib.hms_client_advertise_json(self.ptr, topic.encode(), N.encode(schema_file),
                                              N.encode(type_name), slots, byref(out),
                                              byref(err)), err)
        return Publisher(out)

    def subscribe(self, topic: str, wait: float = 5.0) -> "Subscription":
        """Subscribes to ``topic`` from the next message on, waiting up to ``wait`` s for a
        publisher (BLOCKING)."""
        out, err = c_void_p(), c_void_p()
        N.check(lib.hms_client_subscribe_json(self.ptr, topic.encode(), int(wait * 1000),
                                              byref(out), byref(err)), err)
        return Subscription(out)


# ---- calls ------------------------------------------------------------------------------------


class Stub(_Handle):
    """Calls one service version. One blocking call at a time per stub (others wait their turn);
    async calls may be many in flight."""

    def __init__(self, ptr: c_void_p) -> None:
        super().__init__(ptr, lib.hms_stub_free)
        self.service_id: str = lib.hms_stub_service_id(ptr).decode()
        self.version: str = lib.hms_stub_service_version(ptr).decode()

    def __enter__(self) -> "Stub":
        return self

    def call(self, method: str, params: Optional[JsonDict] = None, timeout: Optional[float] = None,
             traceparent: Optional[str] = None) -> JsonDict:
        """Calls ``method`` with ``params`` and returns the results (BLOCKING, GIL released).
        ``timeout`` in seconds (None: the client's default). Raises an HmsError subclass."""
        body = N.to_json(params)
        o = _call_options(timeout, traceparent)
        s, n, err = c_void_p(), c_size_t(), c_void_p()
        N.check(lib.hms_stub_call_json(self.ptr, method.encode(), body, len(body), byref(o),
                                       byref(s), byref(n), byref(err)), err)
        return _loads(N.take_string(s, n))

    def call_oneway(self, method: str, params: Optional[JsonDict] = None,
                    timeout: Optional[float] = None) -> None:
        """Sends a call that expects no reply (returns once it is in the channel)."""
        body = N.to_json(params)
        o = _call_options(timeout, None)
        err = c_void_p()
        N.check(lib.hms_stub_call_oneway_json(self.ptr, method.encode(), body, len(body),
                                              byref(o), byref(err)), err)

    def _start(self, method: str, params: Optional[JsonDict], timeout: Optional[float],
               traceparent: Optional[str]) -> c_void_p:
        body = N.to_json(params)
        o = _call_options(timeout, traceparent)
        out, err = c_void_p(), c_void_p()
        N.check(lib.hms_stub_call_async_json(self.ptr, method.encode(), body, len(body),
                                             byref(o), byref(out), byref(err)), err)
        return out

    def call_async(self, method: str, params: Optional[JsonDict] = None,
                   timeout: Optional[float] = None,
                   traceparent: Optional[str] = None) -> "CallFuture":
        """Sends a call and returns a :class:`concurrent.futures.Future` of its results at once.
        One background watcher thread (per process) completes every future: it waits on their
        completion fds, no thread per call. ``future.cancel()`` stops the call."""
        fut = CallFuture(self._start(method, params, timeout, traceparent))
        _watcher().add(fut)
        return fut

    async def call_async_aio(self, method: str, params: Optional[JsonDict] = None,
                             timeout: Optional[float] = None,
                             traceparent: Optional[str] = None) -> JsonDict:
        """``await stub.call_async_aio(...)``: the call's completion fd is watched by the running
        event loop (``loop.add_reader``), no thread per call. Cancelling the task stops the call."""
        loop = asyncio.get_running_loop()
        h = _FutureHandle(self._start(method, params, timeout, traceparent))
        fd = h.fd()
        if fd < 0:  # no fd could be made: wait in the default executor
            try:
                return await loop.run_in_executor(None, h.result)
            finally:
                h.close()
        done: asyncio.Future = loop.create_future()

        def ready() -> None:
            loop.remove_reader(fd)
            if done.done():
                return
            try:
                done.set_result(h.result())
            except BaseException as e:  # noqa: BLE001
                done.set_exception(e)

        loop.add_reader(fd, ready)
        try:
            return await done
        except asyncio.CancelledError:
            h.cancel()
            raise
        finally:
            loop.remove_reader(fd)
            h.close()

    def open_stream(self, method: str, params: Optional[JsonDict] = None,
                    timeout: Optional[float] = None,
                    traceparent: Optional[str] = None) -> "Stream":
        """Opens a server stream: an iterator of dicts; ``close()`` (or leaving ``with``)
        cancels it. ``timeout`` bounds the whole stream."""
        body = N.to_json(params)
        o = _call_options(timeout, traceparent)
        out, err = c_void_p(), c_void_p()
        N.check(lib.hms_stub_open_stream_json(self.ptr, method.encode(), body, len(body),
                                              byref(o), byref(out), byref(err)), err)
        return Stream(out)


class _FutureHandle(_Handle):
    """An hms_future_t."""

    def __init__(self, ptr: c_void_p) -> None:
        super().__init__(ptr, lib.hms_future_free)

    def fd(self) -> int:
        return int(lib.hms_future_fd(self.ptr))

    def poll(self) -> bool:
        with self._lock:
            return bool(self._ptr) and bool(lib.hms_future_poll(self._ptr))

    def cancel(self) -> None:
        with self._lock:
            if self._ptr:
                lib.hms_future_cancel(self._ptr)

    def result(self) -> JsonDict:
        s, n, err = c_void_p(), c_size_t(), c_void_p()
        N.check(lib.hms_future_result_json(self.ptr, byref(s), byref(n), byref(err)), err)
        return _loads(N.take_string(s, n))


class CallFuture(concurrent.futures.Future):
    """A :class:`concurrent.futures.Future` of an async call's results (a dict), or its HmsError.
    ``cancel()`` stops the call in flight (the future is then cancelled)."""

    def __init__(self, ptr: c_void_p) -> None:
        super().__init__()
        self._h = _FutureHandle(ptr)

    def cancel(self) -> bool:
        self._h.cancel()
        return super().cancel()

    def _complete(self) -> None:
        """Called by the watcher once the result is there: takes it and frees the handle."""
        try:
            try:
                value: Any = self._h.result()
                exc: Optional[BaseException] = None
            except BaseException as e:  # noqa: BLE001
                value, exc = None, e
        finally:
            self._h.close()
        if self.done():
            return
        try:
            if exc is not None:
                self.set_exception(exc)
            else:
                self.set_result(value)
        except concurrent.futures.InvalidStateError:
            pass  # cancelled meanwhile


class _Watcher:
    """The one thread that completes every CallFuture: it waits on their fds with a selector."""

    def __init__(self) -> None:
        self._sel = selectors.DefaultSelector()
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        self._sel.register(self._r, selectors.EVENT_READ, None)
        self._lock = threading.Lock()
        self._pending: List[CallFuture] = []
        self._polled: List[CallFuture] = []  # futures without an fd
        self._pid = os.getpid()
        self.thread = threading.Thread(target=self._run, name="hms-ffi-futures", daemon=True)
        self.thread.start()

    def add(self, fut: CallFuture) -> None:
        with self._lock:
            self._pending.append(fut)
        os.write(self._w, b"x")

    def _run(self) -> None:
        while True:
            with self._lock:
                pending, self._pending = self._pending, []
            for fut in pending:
                fd = fut._h.fd() if not fut._h.closed else -1
                if fd < 0:
                    self._polled.append(fut)
                else:
                    self._sel.register(fd, selectors.EVENT_READ, fut)
            events = self._sel.select(0.01 if self._polled else None)
            for key, _ in events:
                if key.data is None:
                    try:
                        os.read(self._r, 4096)
                    except BlockingIOError:
                        pass
                    continue
                self._sel.unregister(key.fd)
                self._complete(key.data)
            if self._polled:
                still = []
                for fut in self._polled:
                    if fut._h.poll():
                        self._complete(fut)
                    else:
                        still.append(fut)
                self._polled = still


    @staticmethod
    def _complete(fut: CallFuture) -> None:
        try:
            fut._complete()
        except BaseException:  # noqa: BLE001  the watcher must go on for the other futures
            traceback.print_exc()


_watcher_lock = threading.Lock()
_the_watcher: Optional[_Watcher] = None


def _watcher() -> _Watcher:
    global _the_watcher
    with _watcher_lock:
        if _the_watcher is None or _the_watcher._pid != os.getpid():
            _the_watcher = _Watcher()
        return _the_watcher


class Stream(_Handle):
    """A server stream: iterate for its items (dicts). Ends at the stream's normal end; raises the
    HmsError it ended with otherwise. ``close()`` cancels a stream that has not ended."""

    def __init__(self, ptr: c_void_p) -> None:
        super().__init__(ptr, lib.hms_stream_free)
        self._next_lock = threading.Lock()
        self._ended = False

    def __enter__(self) -> "Stream":
        return self

    def __iter__(self) -> Iterator[JsonDict]:
        return self

    def __next__(self) -> JsonDict:
        item = self.next()
        if item is None:
            raise StopIteration
        return item

    def next(self) -> Optional[JsonDict]:
        """The next item (BLOCKING), or None at the stream's normal end."""
        with self._next_lock:
            if self._ended:
                return None
            with self._lock:
                ptr = self.ptr
            s, n, err = c_void_p(), c_size_t(), c_void_p()
            code = lib.hms_stream_next_json(ptr, byref(s), byref(n), byref(err))
            if code != 0:
                self._ended = True
                raise N.take_error(code, err)
            data = N.take_string(s, n)
            if data is None:
                self._ended = True
                return None
            return _loads(data)

    def cancel(self) -> None:
        """Cancels the stream (a next() waiting returns with CANCELLED)."""
        with self._lock:
            if self._ptr:
                lib.hms_stream_cancel(self._ptr)

    def close(self) -> None:
        """Cancels the stream if it has not ended and frees it (again: nothing)."""
        self.cancel()
        with self._next_lock:  # wait for a next() in progress on another thread
            super().close()


# ---- serving ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Caller:
    """Who made a request (docs/security.md): the identity of the calling process as the kernel
    told the broker, its client name, and the claims of the token the broker verified. The caller
    cannot alter any of it. Without an access policy on the broker, ``authenticated`` is False,
    ``subject`` and ``issuer`` are "" and ``roles`` is empty. ``host`` is the name of the caller's
    host when a gateway brought the call in from another host (docs/gateway.md), as that link's
    TLS certificate names it; its uid, pid, name, subject and issuer are then as that host knows
    them. "" for a caller of this host."""

    uid: int
    gid: int
    pid: int
    groups: Tuple[int, ...]
    name: str
    authenticated: bool
    subject: str
    issuer: str
    roles: Tuple[str, ...]
    host: str = ""

    def has_role(self, role: str) -> bool:
        """Whether the broker's policy gives the caller ``role``."""
        return role in self.roles

    @classmethod
    def from_json(cls, text: bytes) -> "Caller":
        """The Caller of hms_request_caller_json's object."""
        j = json.loads(text.decode("utf-8", "replace")) if text else {}
        return cls(uid=int(j.get("uid", 0)), gid=int(j.get("gid", 0)), pid=int(j.get("pid", 0)),
                   groups=tuple(int(g) for g in j.get("groups") or ()),
                   name=str(j.get("name", "")), authenticated=j.get("authenticated") is True,
                   subject=str(j.get("subject", "")), issuer=str(j.get("issuer", "")),
                   roles=tuple(str(r) for r in j.get("roles") or ()),
                   host=str(j.get("host", "")))


class RequestContext:
    """What a handler knows of the request besides its params."""

    def __init__(self, req: c_void_p) -> None:
        self._req = req
        self.method: str = lib.hms_request_method(req).decode()
        self.caller_pid: int = int(lib.hms_request_caller_pid(req))
        self.caller_uid: int = int(lib.hms_request_caller_uid(req))
        self.caller_name: str = (lib.hms_request_caller_name(req) or b"").decode()
        # Copied now (the library's string lives as long as the request), parsed at first use.
        self._caller_json: bytes = lib.hms_request_caller_json(req) or b""
        self._caller: Optional[Caller] = None
        tp = lib.hms_request_traceparent(req)
        self.traceparent: Optional[str] = tp.decode() if tp else None

    @property
    def caller(self) -> Caller:
        """Who made the request: uid, gid, pid, groups, name, and the token's authenticated,
        subject, issuer and roles (``ctx.caller.has_role("doctor")``)."""
        if self._caller is None:
            self._caller = Caller.from_json(self._caller_json)
        return self._caller

    @property
    def caller_json(self) -> str:
        """The caller as the library gives it (hms_request_caller_json), a JSON object."""
        return self._caller_json.decode("utf-8", "replace")

    @property
    def time_left(self) -> Optional[float]:
        """Seconds until the caller's deadline (None: no deadline).

        A call made without a bound reaches the service with ten years left (the library clamps
        bounds there, see the report on hms_request_time_left_ns): that counts as none here too.
        """
        if not self._req:
            return None
        t = int(lib.hms_request_time_left_ns(self._req))
        return None if t >= int((_TEN_YEARS_S - 86400) * 1e9) else t / 1e9

    @property
    def cancelled(self) -> bool:
        """True once the caller cancelled, its deadline passed or it went away."""
        return bool(self._req) and bool(lib.hms_request_cancelled(self._req))


Handler = Callable[[JsonDict, RequestContext], Optional[JsonDict]]
StreamHandler = Callable[[JsonDict, RequestContext], Iterable[JsonDict]]


class Service:
    """A service served by pull on Python threads (the library never calls into Python)."""

    def __init__(self, client: Client, service_id: str, version: str, schema_file: str,
                 interface: str, *, display_name: Optional[str] = None,
                 description: Optional[str] = None, concurrency: Optional[int] = None,
                 ring_bytes: Optional[int] = None, import_path: Optional[str] = None) -> None:
        self._client = client
        self.service_id = service_id
        self.version = version
        self._schema_file = schema_file
        self._interface = interface
        self._opts = dict(display_name=display_name, description=description,
                          concurrency=concurrency, ring_bytes=ring_bytes, import_path=import_path)
        self._handlers: Dict[str, Handler] = {}
        self._streams: Dict[str, StreamHandler] = {}
        self._h: Optional[_Handle] = None
        self._cv = threading.Condition()
        self._active = 0
        self._closing = False

    def method(self, name: str) -> Callable[[Handler], Handler]:
        """Decorator: ``@svc.method("echo") def echo(params, ctx) -> dict``. Raising an HmsError
        answers with its code, message and details; any other exception answers INTERNAL."""
        def deco(fn: Handler) -> Handler:
            self._handlers[name] = fn
            return fn
        return deco

    def stream(self, name: str) -> Callable[[StreamHandler], StreamHandler]:
        """Decorator for a server-stream method: the function yields dicts, one per item."""
        def deco(fn: StreamHandler) -> StreamHandler:
            self._streams[name] = fn
            return fn
        return deco

    def start(self) -> "Service":
        """Registers the service with the broker (BLOCKING); done by run/serve_forever too."""
        if self._h is not None:
            return self
        o = N.ServiceOptions()
        lib.hms_service_options_init(byref(o))
        if self._opts["display_name"]:
            o.display_name = self._opts["display_name"].encode()
        if self._opts["description"]:
            o.description = self._opts["description"].encode()
        if self._opts["concurrency"]:
            o.concurrency = int(self._opts["concurrency"])
        if self._opts["ring_bytes"]:
            o.ring_bytes = int(self._opts["ring_bytes"])
        if self._opts["import_path"]:
            o.import_path = self._opts["import_path"].encode()
        if self._streams:
            o.stream_methods = ",".join(sorted(self._streams)).encode()
        out, err = c_void_p(), c_void_p()
        N.check(lib.hms_client_serve(self._client.ptr, self.service_id.encode(),
                                     self.version.encode(), self._schema_file.encode(),
                                     self._interface.encode(), byref(o), byref(out), byref(err)),
                err)
        self._h = _Handle(out, lib.hms_service_free)
        return self

    def serve_forever(self, stop_event: Optional[threading.Event] = None) -> None:
        """Serves on this thread until ``stop_event`` is set or the service is closed."""
        self.start()
        self._loop(stop_event)

    def run(self, threads: int = 4, stop_event: Optional[threading.Event] = None,
            block: bool = True) -> List[threading.Thread]:
        """Serves on ``threads`` Python threads until ``stop_event`` is set or ``close()``.
        ``block=False`` returns the (daemon) threads at once."""
        self.start()
        ts = [threading.Thread(target=self._loop, args=(stop_event,), daemon=True,
                               name=f"hms-serve-{self.service_id}-{i}") for i in range(threads)]
        for t in ts:
            t.start()
        if block:
            for t in ts:
                t.join()
        return ts

    def _loop(self, stop_event: Optional[threading.Event]) -> None:
        with self._cv:
            if self._closing or self._h is None or self._h.closed:
                return
            self._active += 1
            ptr = self._h.ptr
        try:
            while not (stop_event is not None and stop_event.is_set()) and not self._closing:
                req, err = c_void_p(), c_void_p()
                # BLOCKING, GIL released; a bound lets stop_event be seen.
                code = lib.hms_service_next(ptr, 100_000_000, byref(req), byref(err))
                if code == 4:  # DEADLINE_EXCEEDED: none came
                    if err:
                        lib.hms_error_free(byref(err))
                    continue
                if code != 0:
                    e = N.take_error(code, err)
                    if e.code in (9, 14):  # stopped, or its client closed / a forked child
                        return
                    raise e
                try:
                    self._dispatch(req)
                except Exception:  # noqa: BLE001  a bug here must not stop serving
                    traceback.print_exc()
        finally:
            with self._cv:
                self._active -= 1
                self._cv.notify_all()

    def _dispatch(self, req: c_void_p) -> None:
        ctx: Optional[RequestContext] = None
        try:
            ctx = RequestContext(req)
            s, n, err = c_void_p(), c_size_t(), c_void_p()
            code = lib.hms_request_params_json(req, byref(s), byref(n), byref(err))
            if code != 0:
                e = N.take_error(code, err)
                self._reply_error(req, e.code, e.message, e.details)
                return
            params = _loads(N.take_string(s, n))
            if ctx.method in self._streams:
                self._serve_stream(req, ctx, params)
                return
            handler = self._handlers.get(ctx.method)
            if handler is None:
                self._reply_error(req, 12, f"{self.service_id} has no handler for "
                                           f"'{ctx.method}'", None)
                return
            try:
                body = N.to_json(handler(params, ctx))
            except HmsError as e:
                self._reply_error(req, e.code, e.message, e.details)
                return
            except Exception as e:  # noqa: BLE001  (a result json cannot encode included)
                self._reply_error(req, 13, f"{type(e).__name__}: {e}", None)
                return
            err = c_void_p()
            code = lib.hms_request_reply_json(byref(req), body, len(body), byref(err))
            if err:
                lib.hms_error_free(byref(err))
        finally:
            if ctx is not None:
                ctx._req = c_void_p()
            if req:  # not answered (an exception above): the library answers INTERNAL
                lib.hms_request_free(byref(req))

    def _serve_stream(self, req: c_void_p, ctx: RequestContext, params: JsonDict) -> None:
        gen = None
        try:
            gen = iter(self._streams[ctx.method](params, ctx))
            for item in gen:
                body = N.to_json(item)
                err = c_void_p()
                code = lib.hms_request_stream_json(req, body, len(body), byref(err))
                if code != 0:  # the caller stopped reading: end the stream
                    if err:
                        lib.hms_error_free(byref(err))
                    self._reply_error(req, code, "the caller stopped reading", None)
                    return
        except HmsError as e:
            self._reply_error(req, e.code, e.message, e.details)
            return
        except Exception as e:  # noqa: BLE001
            self._reply_error(req, 13, f"{type(e).__name__}: {e}", None)
            return
        finally:
            close = getattr(gen, "close", None)
            if close is not None:
                close()
        err = c_void_p()
        lib.hms_request_reply_json(byref(req), None, 0, byref(err))
        if err:
            lib.hms_error_free(byref(err))

    @staticmethod
    def _reply_error(req: c_void_p, code: int, message: str,
                     details: Optional[Dict[str, str]]) -> None:
        err = c_void_p()
        dj = json.dumps({str(k): str(v) for k, v in details.items()}).encode() if details else None
        lib.hms_request_reply_error(byref(req), int(code) or 2, message.encode(), dj, byref(err))
        if err:
            lib.hms_error_free(byref(err))

    def stop(self) -> None:
        """Leaves the registry; serving threads return."""
        with self._cv:
            self._closing = True
            if self._h is not None and not self._h.closed:
                lib.hms_service_stop(self._h.ptr)

    def close(self, timeout: float = 10.0) -> None:
        """Stops the service, waits for serving threads to return, and frees it (idempotent)."""
        self.stop()
        with self._cv:
            self._cv.wait_for(lambda: self._active == 0, timeout)
            if self._active == 0 and self._h is not None:
                self._h.close()

    def __enter__(self) -> "Service":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            if self._h is not None and self._active == 0:
                self._h.close()
        except Exception:
            pass


# ---- topics -----------------------------------------------------------------------------------


class Publisher(_Handle):
    """The one publisher of a topic."""

    def __init__(self, ptr: c_void_p) -> None:
        super().__init__(ptr, lib.hms_publisher_free)

    def __enter__(self) -> "Publisher":
        return self

    def publish(self, message: JsonDict) -> None:
        """Publishes one message (may block for a slow subscriber)."""
        body = N.to_json(message)
        err = c_void_p()
        N.check(lib.hms_publisher_publish_json(self.ptr, body, len(body), byref(err)), err)

    @property
    def subscribers(self) -> int:
        return int(lib.hms_publisher_subscribers(self.ptr))


class Subscription(_Handle):
    """A topic's messages from the subscription on. Iterating ends once the publisher left and
    all was read; ``next(timeout)`` returns None when none came in time."""

    def __init__(self, ptr: c_void_p) -> None:
        super().__init__(ptr, lib.hms_subscription_free)
        self.sequence = 0

    def __enter__(self) -> "Subscription":
        return self

    def next(self, timeout: Optional[float] = None) -> Optional[JsonDict]:
        """The next message (BLOCKING up to ``timeout`` s; None: no bound), or None if none came.
        Raises UnavailableError once the publisher left and all was read."""
        s, n, seq, err = c_void_p(), c_size_t(), c_uint64(), c_void_p()
        code = lib.hms_subscription_next_json(self.ptr, N.ns(timeout), byref(s), byref(n),
                                              byref(seq), byref(err))
        if code == 4:
            if err:
                lib.hms_error_free(byref(err))
            return None
        N.check(code, err)
        self.sequence = int(seq.value)
        return _loads(N.take_string(s, n))

    def __iter__(self) -> Iterator[JsonDict]:
        while True:
            try:
                msg = self.next(None)
            except UnavailableError:
                return
            if msg is not None:
                yield msg
