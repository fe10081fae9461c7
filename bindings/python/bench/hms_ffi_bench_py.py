#!/usr/bin/python3
"""hms_ffi_bench_py measures the Python binding for hms-ffi-bench (P13 in
../shared/design/PERFORMANCE.md), as bindings/go/cmd/hms-ffi-bench-go does for Go: a JSON-level
call echoing 64 bytes to the bench's echo service, in slices, each just after a slice of Python's
own blocking Unix-socket ping-pong of 64 bytes with a child process, so that both are measured in
the same placement; then the rate of a batch of async calls with up to 256 in flight. It prints
one JSON object per row on stdout; hms-ffi-bench runs it and reports the ratio.

    hms_ffi_bench_py.py --socket PATH --service ID --wait blocking|adaptive --iterations N [--peer-cpu C]
    hms_ffi_bench_py.py --uds-echo [--peer-cpu C] [--uds-fd FD]  (the ping-pong's peer; run by the first)

The peer is pinned to --peer-cpu (hms-ffi-bench passes the CPU its echo service runs on), so that
the baseline crosses CPUs as the calls do. Exits 1 (with a message on stderr) on any failure.
"""
import argparse
import base64
import collections
import json
import os
import socket
import subprocess
import sys
import time

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(_HERE))  # bindings/python: the hms_ffi package
if "HMS_FFI_LIBRARY" not in os.environ:  # a build tree's library, if there is one
    _lib = os.path.join(_HERE, "..", "..", "..", "build", "release", "libclient", "libhmsffi.so.1")
    if os.path.exists(_lib):
        os.environ["HMS_FFI_LIBRARY"] = os.path.abspath(_lib)

SLICES = 10
MSG_BYTES = 64
BATCH_CALLS = 20000
BATCH_IN_FLIGHT = 256


def fail(msg: str) -> None:
    print(f"hms_ffi_bench_py: {msg}", file=sys.stderr, flush=True)
    sys.exit(1)


def percentile(ns, q: float) -> float:
    if not ns:
        return 0.0
    s = sorted(ns)
    return s[int(q * (len(s) - 1))] / 1000


def summarize(name: str, ns) -> dict:
    return {"lang": "python", "name": name, "samples": len(ns), "p50_us": percentile(ns, 0.5),
            "p90_us": percentile(ns, 0.9), "p99_us": percentile(ns, 0.99)}


def timed(n: int, f):
    clock = time.perf_counter_ns
    out = []
    append = out.append
    for _ in range(n):
        t = clock()
        f()
        append(clock() - t)
    return out


def uds_echo(fd: int, peer_cpu: int) -> None:
    """The peer: blocking reads and writes of 64 bytes on `fd` until EOF."""
    if peer_cpu >= 0:
        try:
            os.sched_setaffinity(0, {peer_cpu})
        except (OSError, ValueError):
            pass
    while True:
        buf = b""
        while len(buf) < MSG_BYTES:
            try:
                chunk = os.read(fd, MSG_BYTES - len(buf))
            except OSError:
                sys.exit(0)
            if not chunk:
                sys.exit(0)
            buf += chunk
        try:
            os.write(fd, buf)
        except OSError:
            sys.exit(0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--socket", default="", help="the broker's socket")
    p.add_argument("--service", default="hms.bench.echo.adaptive", help="the echo service's id")
    p.add_argument("--wait", default="adaptive", help="blocking or adaptive")
    p.add_argument("--iterations", type=int, default=20000, help="samples of each row")
    p.add_argument("--uds-echo", action="store_true", help="be the ping-pong's peer")
    p.add_argument("--uds-fd", type=int, default=3, help="the peer's end of the socketpair")
    p.add_argument("--peer-cpu", type=int, default=-1,
                   help="the CPU of the ping-pong's peer (-1: not pinned)")
    a = p.parse_args()
    if a.uds_echo:
        uds_echo(a.uds_fd, a.peer_cpu)
        return
    if a.wait not in ("blocking", "adaptive"):
        fail(f"--wait takes blocking or adaptive, not {a.wait!r}")

    import hms_ffi

    # Python's own baseline: a socketpair with a child process echoing on its end.
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        child = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--uds-echo", "--uds-fd",
             str(theirs.fileno()), "--peer-cpu", str(a.peer_cpu)],
            pass_fds=(theirs.fileno(),), stdout=subprocess.DEVNULL)
    except OSError as e:
        fail(f"starting the ping-pong peer: {e}")
    theirs.close()
    fd = mine.fileno()
    msg = bytes([7]) * MSG_BYTES
    write, read = os.write, os.read

    def uds() -> None:
        if write(fd, msg) != MSG_BYTES:
            raise OSError("short write")
        back = read(fd, MSG_BYTES)
        while len(back) < MSG_BYTES:
            chunk = read(fd, MSG_BYTES - len(back))
            if not chunk:
                raise OSError("the peer closed the socket")
            back += chunk
        if back != msg:
            raise OSError("the peer echoed other bytes")

    try:
        client = hms_ffi.connect(socket_path=a.socket or None, name="bench-py",
                                 wait_mode=a.wait)
    except Exception as e:  # noqa: BLE001 - any failure ends the bench
        fail(f"connect: {e}")
    try:
        stub = client.bind(a.service, "*")
    except Exception as e:  # noqa: BLE001
        fail(f"bind {a.service}: {e}")

    payload = base64.b64encode(bytes(range(MSG_BYTES))).decode()
    params = {"payload": payload}

    def check(out) -> None:
        got = out.get("payload") if isinstance(out, dict) else None
        if got != payload:
            n = len(base64.b64decode(got)) if isinstance(got, str) else -1
            raise ValueError(f"the echo came back with other bytes ({n} bytes)")

    def call() -> None:
        check(stub.call("echo", params))

    per = max(100, a.iterations // SLICES)
    try:
        timed(per, uds)  # warm-up of both
    except Exception as e:  # noqa: BLE001
        fail(f"uds: {e}")
    try:
        timed(per, call)
    except Exception as e:  # noqa: BLE001
        fail(f"call: {e}")
    all_uds, all_call, ratios = [], [], []
    for _ in range(SLICES):
        try:
            u = timed(per, uds)
        except Exception as e:  # noqa: BLE001
            fail(f"uds: {e}")
        try:
            c = timed(per, call)
        except Exception as e:  # noqa: BLE001
            fail(f"call: {e}")
        all_uds += u
        all_call += c
        ratios.append(percentile(c, 0.5) / percentile(u, 0.5))
    mine.close()
    child.wait()
    ratios.sort()

    # The async batch: BATCH_CALLS calls with up to BATCH_IN_FLIGHT in flight (the oldest is
    # awaited before the next is sent once the window is full).
    def batch(n: int) -> None:
        in_flight = collections.deque()
        for _ in range(n):
            if len(in_flight) >= BATCH_IN_FLIGHT:
                check(in_flight.popleft().result(timeout=30))
            in_flight.append(stub.call_async("echo", params))
        while in_flight:
            check(in_flight.popleft().result(timeout=30))

    try:
        batch(min(BATCH_CALLS, 2 * BATCH_IN_FLIGHT))  # warm-up
        t = time.perf_counter_ns()
        batch(BATCH_CALLS)
        elapsed = time.perf_counter_ns() - t
    except Exception as e:  # noqa: BLE001
        fail(f"async batch: {e}")
    stub.close()
    client.close()

    base = summarize("python UDS ping-pong (blocking)", all_uds)
    r = summarize(f"python JSON call, {a.wait}", all_call)
    r["ratio_p50_to_baseline"] = ratios[len(ratios) // 2]
    rate = {"lang": "python", "name": f"python async batch ({BATCH_IN_FLIGHT} in flight), {a.wait}",
            "samples": BATCH_CALLS, "p50_us": 0, "p90_us": 0, "p99_us": 0,
            "calls_per_sec": BATCH_CALLS * 1e9 / elapsed}
    for row in (base, r, rate):
        print(json.dumps(row, separators=(",", ":")))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
