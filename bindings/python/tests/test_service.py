"""A service written in Python, called from Python and from the C++ CLI."""
from __future__ import annotations

import json
import os
import subprocess
import threading
from typing import Iterator

import pytest

import hms_ffi
from conftest import CLI, TEST_SCHEMA, Broker, wait_bound


@pytest.fixture(scope="module")
def py_service(broker: Broker) -> Iterator[hms_ffi.Service]:
    """hms.test.py: the TestService interface served from Python on 4 threads."""
    client = broker.connect()
    svc = client.service("hms.test.py", "1.0.0", TEST_SCHEMA, "TestService")
    notes = []
    callers = []  # the ctx.caller of each whoami

    @svc.method("echo")
    def echo(params: dict, ctx: hms_ffi.RequestContext) -> dict:
        return {"seq": params.get("seq", "0"), "payload": params.get("payload", "")}

    @svc.method("whoami")
    def whoami(params: dict, ctx: hms_ffi.RequestContext) -> dict:
        callers.append(ctx.caller)
        return {"pid": os.getpid(), "version": ctx.traceparent or "", "callerPid": ctx.caller_pid}

    @svc.method("fail")
    def fail(params: dict, ctx: hms_ffi.RequestContext) -> dict:
        raise hms_ffi.error_for(int(params["code"]), params.get("message", ""),
                                details={"hint": "asked to fail", "lang": "python"})

    @svc.method("sleep")
    def sleep(params: dict, ctx: hms_ffi.RequestContext) -> dict:
        raise ZeroDivisionError("boom")  # any other exception: INTERNAL

    @svc.method("blob")
    def blob(params: dict, ctx: hms_ffi.RequestContext) -> dict:
        return {"data": object()}  # not JSON: INTERNAL, and the service goes on

    @svc.method("note")
    def note(params: dict, ctx: hms_ffi.RequestContext) -> None:
        notes.append(int(params["seq"]))

    @svc.method("stats")
    def stats(params: dict, ctx: hms_ffi.RequestContext) -> dict:
        return {"notes": notes}

    @svc.stream("count")
    def count(params: dict, ctx: hms_ffi.RequestContext) -> Iterator[dict]:
        start, n = int(params.get("from", 0)), int(params.get("n", 0))
        for i in range(n):
            if int(params.get("failAt", 0) or 0) and i == int(params["failAt"]):
                raise hms_ffi.AbortedError("failed at item", details={"at": str(i)})
            yield {"value": start + i}

    stop = threading.Event()
    svc.test_callers = callers  # type: ignore[attr-defined]
    threads = svc.run(threads=4, stop_event=stop, block=False)
    try:
        yield svc
    finally:
        stop.set()
        for t in threads:
            t.join(20)
        svc.close()
        svc.close()
        client.close()


@pytest.fixture
def py_stub(client: hms_ffi.Client, py_service: hms_ffi.Service) -> Iterator[hms_ffi.Stub]:
    s = wait_bound(client, "hms.test.py")
    yield s
    s.close()


def test_python_echo(py_stub: hms_ffi.Stub) -> None:
    assert py_stub.call("echo", {"seq": 3, "payload": "AAE="}) == {"seq": "3", "payload": "AAE="}


def test_python_context(py_stub: hms_ffi.Stub) -> None:
    tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    r = py_stub.call("whoami", {}, traceparent=tp)
    assert r["version"] == tp
    assert int(r["callerPid"]) == os.getpid()


def test_python_caller(broker: Broker, py_service: hms_ffi.Service) -> None:
    """ctx.caller: the kernel's identity of this process and its client name; the test broker
    runs without an access policy, so no token and no roles."""
    c = broker.connect(name="py-caller")
    try:
        stub = wait_bound(c, "hms.test.py")
        try:
            del py_service.test_callers[:]  # type: ignore[attr-defined]
            assert int(stub.call("whoami", {})["callerPid"]) == os.getpid()
        finally:
            stub.close()
    finally:
        c.close()
    (caller,) = py_service.test_callers  # type: ignore[attr-defined]
    assert isinstance(caller, hms_ffi.Caller)
    assert caller.pid == os.getpid()
    assert caller.uid == os.getuid()
    assert caller.gid == os.getegid()
    assert caller.name == "py-caller"
    assert caller.authenticated is False
    assert caller.subject == "" and caller.issuer == ""
    assert caller.roles == ()
    assert not caller.has_role("doctor")
    with pytest.raises(AttributeError):  # frozen
        caller.uid = 0  # type: ignore[misc]
    parsed = hms_ffi.Caller.from_json(
        b'{"uid":1001,"gid":1001,"pid":4242,"groups":[1001,27],"name":"hms-api",'
        b'"authenticated":true,"subject":"alice","issuer":"hms-auth","roles":["doctor"]}')
    assert parsed.groups == (1001, 27) and parsed.authenticated and parsed.has_role("doctor")
    assert parsed.host == "" and caller.host == ""  # callers of this host
    remote = hms_ffi.Caller.from_json(b'{"uid":1001,"pid":77,"name":"hms-api","host":"host-a"}')
    assert remote.host == "host-a" and remote.pid == 77


def test_python_errors(py_stub: hms_ffi.Stub) -> None:
    with pytest.raises(hms_ffi.NotFoundError) as ei:
        py_stub.call("fail", {"code": 5, "message": "no patient"})
    assert ei.value.source == "hms.test.py"
    assert ei.value.details == {"hint": "asked to fail", "lang": "python"}
    with pytest.raises(hms_ffi.InternalError) as ei2:
        py_stub.call("sleep", {"ms": 1})
    assert "ZeroDivisionError" in ei2.value.message
    with pytest.raises(hms_ffi.InternalError) as ei3:
        py_stub.call("blob", {"size": 1})
    assert "TypeError" in ei3.value.message
    assert py_stub.call("echo", {"seq": 4})["seq"] == "4"


def test_python_stream(py_stub: hms_ffi.Stub) -> None:
    assert [int(x["value"]) for x in py_stub.open_stream("count", {"from": 5, "n": 20})] == \
        list(range(5, 25))
    with pytest.raises(hms_ffi.AbortedError) as ei:
        list(py_stub.open_stream("count", {"from": 0, "n": 20, "failAt": 3}))
    assert ei.value.details == {"at": "3"}


def test_python_async_many(py_stub: hms_ffi.Stub) -> None:
    futs = [py_stub.call_async("echo", {"seq": i}) for i in range(200)]
    assert [f.result(30)["seq"] for f in futs] == [str(i) for i in range(200)]


def test_python_oneway(py_stub: hms_ffi.Stub) -> None:
    py_stub.call_oneway("note", {"seq": 77})
    from conftest import wait_for
    wait_for(lambda: "77" in [str(x) for x in py_stub.call("stats")["notes"]], what="the note")


def test_python_service_from_cli(broker: Broker, py_service: hms_ffi.Service) -> None:
    out = subprocess.run([CLI, "--socket", broker.socket, "call", "hms.test.py", "echo",
                          '{"seq":1}'], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["seq"] == "1"
    bad = subprocess.run([CLI, "--socket", broker.socket, "call", "hms.test.py", "fail",
                          '{"code":7,"message":"cli"}'], capture_output=True, text=True,
                         timeout=30)
    assert bad.returncode != 0
    assert "PERMISSION_DENIED" in bad.stdout + bad.stderr


def test_service_close_is_safe(broker: Broker) -> None:
    with broker.connect() as client:
        svc = client.service("hms.test.py.short", "1.0.0", TEST_SCHEMA, "TestService")
        svc.method("echo")(lambda p, ctx: {"seq": p.get("seq", "0")})
        t = threading.Thread(target=svc.serve_forever)
        t.start()
        with broker.connect() as c2:
            s = wait_bound(c2, "hms.test.py.short")
            assert s.call("echo", {"seq": 2})["seq"] == "2"
            with pytest.raises(hms_ffi.UnimplementedError) as ei:  # in the schema, no handler
                s.call("whoami", {})
            assert ei.value.source == "hms.test.py.short"
            svc.close()
            t.join(20)
            assert not t.is_alive()
            with pytest.raises((hms_ffi.UnavailableError, hms_ffi.NotFoundError)):
                s.call("echo", {"seq": 3}, timeout=5)
            s.close()


def test_results_that_do_not_fit_and_deadlines(broker: Broker) -> None:
    with broker.connect() as client:
        svc = client.service("hms.test.py.misc", "1.0.0", TEST_SCHEMA, "TestService")
        seen = []

        @svc.method("echo")
        def echo(params: dict, ctx: hms_ffi.RequestContext) -> dict:
            return {"seq": "not-a-number"}

        @svc.method("sleep")
        def sleep(params: dict, ctx: hms_ffi.RequestContext) -> dict:
            seen.append(ctx.time_left)
            return {"timeLeftMs": 0, "calls": len(seen)}

        stop = threading.Event()
        threads = svc.run(threads=1, stop_event=stop, block=False)
        try:
            with wait_bound(client, "hms.test.py.misc") as s:
                with pytest.raises(hms_ffi.InternalError) as ei:
                    s.call("echo", {"seq": 1})
                assert ei.value.source == "hms.test.py.misc" and "seq" in ei.value.message
                s.call("sleep", {"ms": 1}, timeout=5)
                s.call("sleep", {"ms": 1}, timeout=float("inf"))
                assert 0 < seen[0] <= 5 and seen[1] is None
        finally:
            stop.set()
            for t in threads:
                t.join(20)
            svc.close()


def test_python_stream_cancelled_by_caller_over_socket(broker: Broker) -> None:
    """A service on the socket transport: the caller's close() ends the handler's generator."""
    with broker.connect("socket") as client:
        svc = client.service("hms.test.py.sock", "1.0.0", TEST_SCHEMA, "TestService")
        finished = threading.Event()

        @svc.stream("count")
        def count(params: dict, ctx: hms_ffi.RequestContext) -> Iterator[dict]:
            try:
                i = 0
                while True:
                    yield {"value": i, "payload": ""}
                    i += 1
            finally:
                finished.set()

        stop = threading.Event()
        threads = svc.run(threads=2, stop_event=stop, block=False)
        try:
            with broker.connect("socket") as c2, wait_bound(c2, "hms.test.py.sock") as s:
                st = s.open_stream("count", {"from": 0, "n": 0})
                it = iter(st)
                assert [int(next(it)["value"]) for _ in range(5)] == [0, 1, 2, 3, 4]
                st.close()
                assert finished.wait(20), "the handler's generator was not closed"
        finally:
            stop.set()
            for t in threads:
                t.join(20)
            svc.close()
