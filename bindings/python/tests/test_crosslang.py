"""Python calling the Go and Rust test services; a service killed -9 mid-call."""
from __future__ import annotations

import os
import threading

import pytest

import hms_ffi
from conftest import GO_TEST_SERVICE, RUST_TEST_SERVICE, Broker, wait_bound

SERVICES = {"go": GO_TEST_SERVICE, "rust": RUST_TEST_SERVICE}


@pytest.mark.parametrize("lang", ["go", "rust"])
def test_call_other_language(broker: Broker, client: hms_ffi.Client, lang: str) -> None:
    binary = SERVICES[lang]
    if not os.access(binary, os.X_OK):
        pytest.skip(f"{binary} not built")
    sid = f"hms.test.{lang}.{client.id}"
    broker.start([binary, "--socket", broker.socket, "--id", sid])
    stub = wait_bound(client, sid)
    try:
        assert stub.call("echo", {"seq": 11, "payload": "AQID"}) == {"seq": "11",
                                                                     "payload": "AQID"}
        with pytest.raises(hms_ffi.NotFoundError) as ei:
            stub.call("fail", {"code": 5, "message": f"from {lang}"})
        assert ei.value.source == sid and ei.value.message == f"from {lang}"
        futs = [stub.call_async("echo", {"seq": i}) for i in range(100)]
        assert [f.result(30)["seq"] for f in futs] == [str(i) for i in range(100)]
        assert [int(x["value"]) for x in stub.open_stream("count", {"from": 1, "n": 5})] == \
            [1, 2, 3, 4, 5]
    finally:
        stub.close()


def test_service_killed_mid_call(broker: Broker, client: hms_ffi.Client) -> None:
    binary = GO_TEST_SERVICE
    if not os.access(binary, os.X_OK):
        pytest.skip(f"{binary} not built")
    sid = f"hms.test.kill.{client.id}"
    proc = broker.start([binary, "--socket", broker.socket, "--id", sid])
    stub = wait_bound(client, sid)
    async_stub = wait_bound(client, sid)
    errors: list = []

    def call() -> None:
        try:
            stub.call("sleep", {"ms": 15_000}, timeout=30)
            errors.append(None)
        except hms_ffi.HmsError as e:
            errors.append(e)

    t = threading.Thread(target=call)
    t.start()
    futs = [async_stub.call_async("sleep", {"ms": 15_000}, timeout=30) for _ in range(3)]
    proc.wait_line("sleeping")
    proc.kill9()
    t.join(25)
    assert not t.is_alive()
    assert isinstance(errors[0], hms_ffi.UnavailableError), errors
    for f in futs:
        with pytest.raises(hms_ffi.UnavailableError):
            f.result(25)
    stub.close()
    async_stub.close()
