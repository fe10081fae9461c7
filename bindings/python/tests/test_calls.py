"""Calls from Python to the C++ test service (hms.test), over both transports."""
from __future__ import annotations

import asyncio
import concurrent.futures
import base64
import threading
import time

import pytest

import hms_ffi
from conftest import wait_for


def test_echo(stub: hms_ffi.Stub) -> None:
    payload = base64.b64encode(b"\x00hello\xff").decode()
    assert stub.call("echo", {"seq": 42, "payload": payload}) == {"seq": "42", "payload": payload}
    assert stub.service_id == "hms.test" and stub.version


def test_transport_is_what_was_asked(client: hms_ffi.Client, transport: str) -> None:
    assert client.uses_shared_memory == (transport == "auto")


@pytest.mark.parametrize("code", range(1, 17))
def test_error_per_code(stub: hms_ffi.Stub, code: int) -> None:
    with pytest.raises(hms_ffi.HmsError) as ei:
        stub.call("fail", {"code": code, "message": f"asked for {code}"})
    e = ei.value
    assert type(e) is hms_ffi.errors.ERROR_CLASSES[code]
    assert e.code == code
    assert e.message == f"asked for {code}"
    assert e.source == "hms.test"
    assert e.details == {"hint": "asked to fail"}
    assert hms_ffi.STATUS_NAMES[code] in str(e)


def test_named_classes(stub: hms_ffi.Stub) -> None:
    with pytest.raises(hms_ffi.PermissionDeniedError):
        stub.call("fail", {"code": 7, "message": "no"})
    with pytest.raises(hms_ffi.CallCancelledError):
        stub.call("fail", {"code": 1, "message": "no"})


def test_unknown_method_and_bad_params(stub: hms_ffi.Stub) -> None:
    with pytest.raises(hms_ffi.UnimplementedError):
        stub.call("nope", {})
    with pytest.raises(hms_ffi.InvalidArgumentError) as ei:
        stub.call("echo", {"seq": "not a number"})
    assert ei.value.source == ""


def test_bind_not_found(client: hms_ffi.Client) -> None:
    with pytest.raises(hms_ffi.NotFoundError) as ei:
        client.bind("hms.no.such.service", "*")
    assert "hms.no.such.service" in ei.value.message


def test_deadline(stub: hms_ffi.Stub) -> None:
    t0 = time.monotonic()
    with pytest.raises(hms_ffi.DeadlineExceededError):
        stub.call("sleep", {"ms": 1500}, timeout=0.2)
    assert time.monotonic() - t0 < 1.4
    r = stub.call("sleep", {"ms": 1}, timeout=10)
    assert 0 < int(r["timeLeftMs"]) <= 10_000


def test_blocking_call_releases_the_gil(stub: hms_ffi.Stub) -> None:
    ticks = []
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            ticks.append(1)
            time.sleep(0.001)

    t = threading.Thread(target=spin)
    t.start()
    try:
        stub.call("sleep", {"ms": 300})
    finally:
        stop.set()
        t.join()
    assert len(ticks) > 20  # the other thread ran while the call waited


def test_oneway_in_order(stub: hms_ffi.Stub) -> None:
    before = [int(x) for x in stub.call("stats")["notes"]]
    for i in range(1000, 1010):
        stub.call_oneway("note", {"seq": i})

    def arrived() -> bool:
        return [int(x) for x in stub.call("stats")["notes"]][len(before):] == list(range(1000, 1010))

    wait_for(arrived, what="the notes")


def test_async_futures_many_in_flight(stub: hms_ffi.Stub) -> None:
    threads_before = threading.active_count()
    futs = [stub.call_async("sleep" if i % 10 == 0 else "echo",
                            {"ms": 50} if i % 10 == 0 else {"seq": i}) for i in range(300)]
    for i, f in enumerate(futs):
        r = f.result(timeout=30)
        if i % 10:
            assert r["seq"] == str(i)
    # one watcher thread at most, never a thread per call
    assert threading.active_count() <= threads_before + 1
    names = [t.name for t in threading.enumerate()]
    assert names.count("hms-ffi-futures") == 1


def test_async_future_error_and_callback(stub: hms_ffi.Stub) -> None:
    got = []
    done = threading.Event()
    f = stub.call_async("fail", {"code": 6, "message": "dup"})
    f.add_done_callback(lambda fut: (got.append(fut.exception()), done.set()))
    assert done.wait(20)
    assert isinstance(got[0], hms_ffi.AlreadyExistsError) and got[0].source == "hms.test"
    with pytest.raises(hms_ffi.AlreadyExistsError):
        f.result()


def test_async_deadline(stub: hms_ffi.Stub) -> None:
    f = stub.call_async("sleep", {"ms": 1500}, timeout=0.2)
    with pytest.raises(hms_ffi.DeadlineExceededError):
        f.result(timeout=20)


def test_async_cancel(stub: hms_ffi.Stub) -> None:
    # (the test service goes on sleeping: calls on its channel queue behind it, so keep it short)
    f = stub.call_async("sleep", {"ms": 2000})
    t0 = time.monotonic()
    assert f.cancel()
    assert f.cancelled()
    with pytest.raises(concurrent.futures.CancelledError):
        f.result(0)
    # the library completes the call with CANCELLED at once: the watcher frees its handle
    wait_for(lambda: f._h.closed, deadline=1.5, what="the cancelled call to complete")
    assert time.monotonic() - t0 < 1.5


def test_asyncio_many_in_flight_one_thread(stub: hms_ffi.Stub) -> None:
    threads_before = threading.active_count()

    async def main() -> list:
        return await asyncio.gather(*(stub.call_async_aio("echo", {"seq": i}) for i in range(300)))

    results = asyncio.run(main())
    assert [r["seq"] for r in results] == [str(i) for i in range(300)]
    assert threading.active_count() <= threads_before  # nothing but the loop's own thread


def test_asyncio_errors_and_cancel(stub: hms_ffi.Stub) -> None:
    async def main() -> None:
        with pytest.raises(hms_ffi.NotFoundError) as ei:
            await stub.call_async_aio("fail", {"code": 5, "message": "gone"})
        assert ei.value.details == {"hint": "asked to fail"}
        with pytest.raises(hms_ffi.DeadlineExceededError):
            await stub.call_async_aio("sleep", {"ms": 1500}, timeout=0.2)
        task = asyncio.create_task(stub.call_async_aio("sleep", {"ms": 2000}))
        await asyncio.sleep(0.05)
        t0 = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert time.monotonic() - t0 < 1.0

    asyncio.run(main())


def test_stream(stub: hms_ffi.Stub) -> None:
    with stub.open_stream("count", {"from": 100, "n": 50}) as s:
        values = [int(item["value"]) for item in s]
    assert values == list(range(100, 150))


def test_stream_failure(stub: hms_ffi.Stub) -> None:
    s = stub.open_stream("count", {"from": 0, "n": 10, "failAt": 5})
    got = []
    with pytest.raises(hms_ffi.AbortedError):
        for item in s:
            got.append(int(item["value"]))
    assert got == list(range(5))
    s.close()
    s.close()  # idempotent


def test_stream_close_cancels(stub: hms_ffi.Stub) -> None:
    before = int(stub.call("stats")["streamsCancelled"])
    s = stub.open_stream("count", {"from": 0, "n": 1_000_000, "delayUs": 1000})
    it = iter(s)
    assert [int(next(it)["value"]) for _ in range(3)] == [0, 1, 2]
    s.close()
    wait_for(lambda: int(stub.call("stats")["streamsCancelled"]) > before,
             what="the service to see the cancel")


def test_stream_close_from_another_thread(stub: hms_ffi.Stub) -> None:
    s = stub.open_stream("count", {"from": 0, "n": 1000, "delayUs": 1_000_000})
    err = []

    def read() -> None:
        try:
            for _ in s:
                pass
        except hms_ffi.HmsError as e:
            err.append(e)

    t = threading.Thread(target=read)
    t.start()
    time.sleep(0.1)  # let the reader block in next (not a condition: either order is fine)
    s.close()
    t.join(20)
    assert not t.is_alive()


def test_closed_handles(client: hms_ffi.Client, test_service) -> None:
    from conftest import wait_bound
    s = wait_bound(client, "hms.test")
    s.close()
    s.close()
    with pytest.raises(hms_ffi.FailedPreconditionError):
        s.call("echo", {})


def test_contract(client: hms_ffi.Client, stub: hms_ffi.Stub) -> None:
    c = client.contract("hms.test", stub.version)
    assert c["interface"] == "TestService"
    assert {"name": "count", "ordinal": 5, "stream": True} in c["methods"]


def test_stub_outlives_client(broker, test_service) -> None:
    from conftest import wait_bound
    c = broker.connect()
    s = wait_bound(c, "hms.test")
    c.close()
    with pytest.raises((hms_ffi.UnavailableError, hms_ffi.FailedPreconditionError)):
        s.call("echo", {"seq": 1})
    s.close()


def test_forked_child_must_connect_anew(stub: hms_ffi.Stub) -> None:
    import os
    pid = os.fork()
    if pid == 0:  # the child: the parent's handles refuse, nothing touches the parent's rings
        code = 1
        try:
            stub.call("echo", {"seq": 1})
        except hms_ffi.FailedPreconditionError:
            code = 0
        except BaseException:
            code = 2
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert stub.call("echo", {"seq": 2})["seq"] == "2"  # the parent goes on
