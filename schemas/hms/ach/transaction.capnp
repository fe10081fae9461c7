@0xddd967442f04463a;
# hms.ach.transaction: ACH payment entries (the seed's scenario 4.3). An ETL process submits a
# batch of entries asynchronously, one call per entry, and collects a result or an error for each.
# A rejected entry is an error Status whose details carry the NACHA return code ("returnCode")
# and the offending field ("field").

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("hms::ach");

enum EntryKind {
  credit @0;
  debit @1;
}

# NACHA standard entry class.
enum EntryClass {
  ppd @0;  # prearranged payment (consumer)
  ccd @1;  # corporate
  web @2;  # internet-initiated
}

struct Entry {
  id @0 :Text;             # the submitter's id for the entry, echoed in the result
  kind @1 :EntryKind;
  entryClass @2 :EntryClass;
  routingNumber @3 :Text;  # nine digits, the last an ABA check digit
  accountNumber @4 :Text;
  amountCents @5 :Int64;
  name @6 :Text;           # receiver's name
}

interface TransactionService {
  # Accepts one entry for the next settlement window, or rejects it with an error Status.
  submit @0 (entry :Entry)
      -> (id :Text, traceNumber :Text, settlementDate :Text, feeCents :Int64);
}
