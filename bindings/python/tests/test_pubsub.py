"""Topics: a Python publisher and subscriber."""
from __future__ import annotations

import base64

import pytest

import hms_ffi
from conftest import TEST_SCHEMA, Broker


def test_publish_subscribe(broker: Broker, transport: str) -> None:
    topic = f"hms.test.py.ticks.{transport}"
    with broker.connect(transport) as pub_client, broker.connect(transport) as sub_client:
        pub = pub_client.advertise(topic, TEST_SCHEMA, "Tick")
        sub = sub_client.subscribe(topic, wait=5.0)
        assert sub.next(timeout=0.05) is None  # nothing yet
        for i in range(1, 21):
            pub.publish({"seq": i, "payload": base64.b64encode(bytes([i]) * 3).decode()})
        got = [sub.next(timeout=20) for _ in range(20)]
        assert [int(m["seq"]) for m in got] == list(range(1, 21))
        assert base64.b64decode(got[4]["payload"]) == bytes([5]) * 3
        assert sub.sequence == 20
        with pytest.raises(hms_ffi.InvalidArgumentError):
            pub.publish({"seq": "x"})
        pub.close()
        # once the publisher left and all was read, iteration ends
        assert list(sub) == []
        sub.close()
        sub.close()


def test_subscribe_without_publisher(broker: Broker) -> None:
    with broker.connect() as c:
        with pytest.raises(hms_ffi.HmsError):
            c.subscribe("hms.test.py.nobody", wait=0.1)
