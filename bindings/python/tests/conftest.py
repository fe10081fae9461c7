"""Fixtures: a real broker per test module, and the test services in other processes."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Iterator, List, Optional

import pytest

import hms_ffi

ROOT = Path(__file__).resolve().parents[3]
BUILD = ROOT / "build" / "release"
TEST_SCHEMA = str(ROOT / "tests" / "support" / "test.capnp")
START_DEADLINE = 20.0


def env_or(name: str, default: Path) -> str:
    return os.environ.get(name) or str(default)


BROKER = env_or("HMS_FFI_BROKER_BINARY", BUILD / "broker" / "hms-ffid")
TEST_SERVICE = env_or("HMS_FFI_TEST_SERVICE_BINARY", BUILD / "tests" / "hms-ffi-test-service")
GO_TEST_SERVICE = env_or("HMS_FFI_GO_TEST_SERVICE", BUILD / "bindings" / "go" / "hms-go-test-service")
RUST_TEST_SERVICE = env_or("HMS_FFI_RUST_TEST_SERVICE",
                           BUILD / "cargo-target" / "debug" / "examples" / "test_service")
CLI = env_or("HMS_FFI_CLI_BINARY", BUILD / "tools" / "hms-ffi")
ACH_SERVICE = env_or("HMS_FFI_ACH_SERVICE",
                     BUILD / "examples" / "hms-example-ach_transaction_service")


def wait_for(cond: Callable[[], bool], deadline: float = START_DEADLINE, what: str = "") -> None:
    """Waits (polling) until cond() is true, failing after `deadline` seconds."""
    end = time.monotonic() + deadline
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what or cond}")
        time.sleep(0.01)


class Proc:
    """A child process whose stdout lines are collected and can be waited for."""

    def __init__(self, argv: List[str], env: Optional[dict] = None) -> None:
        self.argv = argv
        self.p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  env={**os.environ, **(env or {})}, text=True)
        self.lines: List[str] = []
        self._cv = threading.Condition()
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()

    def _read(self) -> None:
        assert self.p.stdout is not None
        for line in self.p.stdout:
            with self._cv:
                self.lines.append(line.rstrip("\n"))
                self._cv.notify_all()
        with self._cv:
            self._cv.notify_all()

    def wait_line(self, needle: str, deadline: float = START_DEADLINE) -> str:
        with self._cv:
            ok = self._cv.wait_for(
                lambda: any(needle in l for l in self.lines) or self.p.poll() is not None,
                deadline)
            for l in self.lines:
                if needle in l:
                    return l
        raise AssertionError(f"{self.argv[0]}: no {needle!r} (ok={ok}); output:\n" +
                             "\n".join(self.lines))

    def kill9(self) -> None:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGKILL)
        self.p.wait(timeout=START_DEADLINE)

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(timeout=START_DEADLINE)
        self._t.join(timeout=5)


class Broker:
    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="hms-py-")
        self.socket = os.path.join(self.dir, "broker.sock")
        self.proc = Proc([BROKER, "--socket", self.socket, "--state-dir",
                          os.path.join(self.dir, "state"), "--log-level", "warn"])
        wait_for(lambda: os.path.exists(self.socket) or self.proc.p.poll() is not None,
                 what="the broker's socket")
        assert self.proc.p.poll() is None, "broker exited:\n" + "\n".join(self.proc.lines)
        self.procs: List[Proc] = []

    def connect(self, transport: str = "auto", **kw) -> hms_ffi.Client:
        """Connects, retrying on UnavailableError up to 20 s."""
        end = time.monotonic() + START_DEADLINE
        while True:
            try:
                return hms_ffi.connect(self.socket, transport=transport, **kw)
            except hms_ffi.UnavailableError:
                if time.monotonic() > end:
                    raise
                time.sleep(0.05)

    def start(self, argv: List[str], ready: str = "ready", env: Optional[dict] = None) -> Proc:
        p = Proc(argv, env)
        self.procs.append(p)
        p.wait_line(ready)
        return p

    def close(self) -> None:
        for p in reversed(self.procs):
            p.stop()
        self.proc.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def wait_bound(client: hms_ffi.Client, service: str, range_: str = "*") -> hms_ffi.Stub:
    """Binds, retrying on NOT_FOUND until the service is registered."""
    end = time.monotonic() + START_DEADLINE
    while True:
        try:
            return client.bind(service, range_)
        except (hms_ffi.NotFoundError, hms_ffi.UnavailableError):
            if time.monotonic() > end:
                raise
            time.sleep(0.02)


@pytest.fixture(scope="module")
def broker() -> Iterator[Broker]:
    b = Broker()
    try:
        yield b
    finally:
        b.close()


@pytest.fixture(scope="module")
def test_service(broker: Broker) -> Proc:
    """The C++ test service (hms.test), once per module."""
    return broker.start([TEST_SERVICE, "--socket", broker.socket])


@pytest.fixture(params=["auto", "socket"])
def transport(request) -> str:
    return request.param


@pytest.fixture
def client(broker: Broker, transport: str) -> Iterator[hms_ffi.Client]:
    c = broker.connect(transport)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def stub(client: hms_ffi.Client, test_service: Proc) -> Iterator[hms_ffi.Stub]:
    s = wait_bound(client, "hms.test")
    try:
        yield s
    finally:
        s.close()
