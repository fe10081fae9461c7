#!/usr/bin/env python3
"""HMS-ETL [python]: the nightly payroll extract, the seed's §4.3 caller.

Submits every entry of a batch to hms.ach.transaction (HMS-ACH, in Ruby or C++) ASYNCHRONOUSLY
(all in flight at once, no thread per call) and collects, per entry, the trace number it was
accepted under or the error it was rejected with (UNAVAILABLE for the calls in flight when the
service dies), so every entry is accounted for.

    hms_etl.py [--socket PATH] [--count N] [--mode futures|asyncio] [--timeout S]

The batch is the one the C++ HMS-ETL (examples/ach_etl_batch.cpp) submits: the same fixed
pseudo-random extract (std::mt19937, seed 20261125), with its few bad rows.
Exits 0 when every entry got exactly one outcome, whatever it was; 1 when the service could not be
reached; 2 when an outcome is missing, doubled or belongs to another entry.
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import concurrent.futures
import os
import sys
import time
from dataclasses import dataclass
from typing import Dict, List, Optional

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import hms_ffi  # noqa: E402

PREFIX = "hms-etl [python]: "


class MT19937:
    """std::mt19937, so the extract is the C++ HMS-ETL's, entry for entry."""

    def __init__(self, seed: int) -> None:
        self.mt = [0] * 624
        self.i = 624
        self.mt[0] = seed & 0xFFFFFFFF
        for k in range(1, 624):
            self.mt[k] = (1812433253 * (self.mt[k - 1] ^ (self.mt[k - 1] >> 30)) + k) & 0xFFFFFFFF

    def __call__(self) -> int:
        if self.i >= 624:
            mt = self.mt
            for k in range(624):
                y = (mt[k] & 0x80000000) | (mt[(k + 1) % 624] & 0x7FFFFFFF)
                mt[k] = mt[(k + 397) % 624] ^ (y >> 1) ^ (0x9908B0DF if y & 1 else 0)
            self.i = 0
        y = self.mt[self.i]
        self.i += 1
        y ^= y >> 11
        y ^= (y << 7) & 0x9D2C5680
        y ^= (y << 15) & 0xEFC60000
        y ^= y >> 18
        return y & 0xFFFFFFFF


def with_check_digit(prefix8: str) -> str:
    """Completes an eight-digit routing prefix with its ABA check digit."""
    weights = (3, 7, 1)
    s = sum(int(c) * weights[i % 3] for i, c in enumerate(prefix8))
    return prefix8 + str((10 - s % 10) % 10)


@dataclass
class Entry:
    id: str
    kind: str
    entry_class: str
    routing: str
    account: str
    amount_cents: int
    name: str

    def params(self) -> dict:
        return {"entry": {"id": self.id, "kind": self.kind, "entryClass": self.entry_class,
                          "routingNumber": self.routing, "accountNumber": self.account,
                          "amountCents": str(self.amount_cents), "name": self.name}}


def extract(count: int) -> List[Entry]:
    """The fixed batch, with a mistyped routing number, zero amounts, an entry exported twice and
    accounts the bank does not know or has closed (as real extracts have)."""
    names = ["A. Okafor", "L. Nilsson", "M. Okafor", "R. Das", "J. Moreau", "T. Haddad",
             "S. Ivanova", "K. Tanaka"]
    banks = ["02100002", "11100061", "32227016", "07100001"]
    rng = MT19937(20261125)
    batch: List[Entry] = []
    for i in range(count):
        routing = with_check_digit(banks[rng() % 4])
        account = "40000" + str(1000 + rng() % 44)
        name = names[rng() % 8]
        kind = "debit" if rng() % 4 == 0 else "credit"
        entry_class = "web" if rng() % 5 == 0 else "ppd"
        amount = 5_000 + rng() % 400_000
        eid = f"PAY-{100000 + i}"
        if i % 97 == 13:
            routing = routing[:8] + str((int(routing[8]) + 1) % 10)  # typo
        if i % 211 == 17:
            amount = 0
        if i % 250 == 249:
            eid = batch[i - 1].id  # exported twice
        batch.append(Entry(eid, kind, entry_class, routing, account, amount, name))
    return batch


@dataclass
class Outcome:
    count: int = 0  # outcomes seen: exactly one expected
    wrong_entry: bool = False
    error: Optional[hms_ffi.HmsError] = None
    trace: str = ""


def record(outcomes: List[Outcome], batch: List[Entry], i: int, result: Optional[dict],
           error: Optional[BaseException]) -> None:
    o = outcomes[i]
    o.count += 1
    if error is not None:
        if not isinstance(error, hms_ffi.HmsError):  # never expected: count it as UNKNOWN
            error = hms_ffi.UnknownError(f"{type(error).__name__}: {error}")
        o.error = error
    else:
        assert result is not None
        o.wrong_entry = result.get("id") != batch[i].id
        o.trace = str(result.get("traceNumber", ""))


def run_futures(stub: hms_ffi.Stub, batch: List[Entry], outcomes: List[Outcome],
                timeout: float) -> None:
    """Every call in flight at once as concurrent.futures (one watcher thread completes them)."""
    futures: Dict[concurrent.futures.Future, int] = {}
    for i, e in enumerate(batch):
        try:
            futures[stub.call_async("submit", e.params(), timeout=timeout)] = i
        except hms_ffi.HmsError as err:  # refused before it was sent
            record(outcomes, batch, i, None, err)
    for fut in concurrent.futures.as_completed(futures):
        i = futures[fut]
        err = fut.exception()
        record(outcomes, batch, i, None if err else fut.result(), err)


def run_asyncio(stub: hms_ffi.Stub, batch: List[Entry], outcomes: List[Outcome],
                timeout: float) -> None:
    """Every call in flight at once on one asyncio loop (completion fds on the loop)."""
    async def one(i: int, e: Entry) -> None:
        try:
            r = await stub.call_async_aio("submit", e.params(), timeout=timeout)
            record(outcomes, batch, i, r, None)
        except hms_ffi.HmsError as err:
            record(outcomes, batch, i, None, err)

    async def main() -> None:
        await asyncio.gather(*(one(i, e) for i, e in enumerate(batch)))

    asyncio.run(main())


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--socket", default=None, help="the broker's socket (default $HMS_FFI_SOCKET)")
    ap.add_argument("--count", type=int, default=1000, help="entries in the batch (1000)")
    ap.add_argument("--mode", choices=["futures", "asyncio"], default="futures")
    ap.add_argument("--timeout", type=float, default=30.0, help="each call's deadline, s (30)")
    ap.add_argument("--transport", choices=["auto", "shm", "socket"], default="auto")
    args = ap.parse_args(argv)

    try:
        client = hms_ffi.connect(args.socket, name="hms-etl [python]", transport=args.transport)
    except hms_ffi.HmsError as e:
        print(PREFIX + str(e), file=sys.stderr)
        return 1
    with client:
        try:
            stub = client.bind("hms.ach.transaction", "^1.0.0")
        except hms_ffi.HmsError as e:
            print(PREFIX + str(e), file=sys.stderr)
            return 1
        with stub:
            batch = extract(args.count)
            outcomes = [Outcome() for _ in batch]
            print(PREFIX + f"submitting {len(batch)} entries to {stub.service_id} "
                  f"{stub.version} asynchronously ({args.mode})", flush=True)
            start = time.monotonic()
            (run_futures if args.mode == "futures" else run_asyncio)(stub, batch, outcomes,
                                                                     args.timeout)
            ms = (time.monotonic() - start) * 1000

    accepted, broken = 0, 0
    credits = debits = 0
    rejections: Dict[str, int] = collections.Counter()
    rejected: List[int] = []
    for i, o in enumerate(outcomes):
        if o.count != 1 or o.wrong_entry:
            broken += 1
            print(PREFIX + f"entry {batch[i].id}: {o.count} outcomes"
                  + (", one for another entry" if o.wrong_entry else ""), file=sys.stderr)
        elif o.error is None:
            accepted += 1
            if batch[i].kind == "debit":
                debits += batch[i].amount_cents
            else:
                credits += batch[i].amount_cents
        else:
            rejected.append(i)
            rejections[f"{o.error.code_name} {o.error.details.get('returnCode', '-')}"] += 1
    unavailable = sum(1 for i in rejected if outcomes[i].error.code == 14)  # type: ignore[union-attr]
    print(PREFIX + f"{len(batch)} entries in {ms:.1f} ms: {accepted} accepted, "
          f"{len(rejected)} rejected ({unavailable} UNAVAILABLE), {broken} unaccounted")
    print(PREFIX + f"accepted credits ${credits // 100}.{credits % 100:02d}, "
          f"debits ${debits // 100}.{debits % 100:02d}")
    for kind in sorted(rejections):
        print(PREFIX + f"rejected {kind:<26} {rejections[kind]}")
    for i in rejected[:6]:
        print(PREFIX + f"  {batch[i].id} {batch[i].name:<10} -> {outcomes[i].error}")
    for i in [i for i, o in enumerate(outcomes) if o.count == 1 and o.error is None][:3]:
        print(PREFIX + f"  {batch[i].id} accepted, trace {outcomes[i].trace}")
    print(PREFIX + ("every entry accounted for" if broken == 0 else
                    f"{broken} entries NOT accounted for"), flush=True)
    return 0 if broken == 0 else 2


if __name__ == "__main__":
    sys.exit(main())
