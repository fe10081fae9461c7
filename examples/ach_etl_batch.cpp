// HMS-ETL: the nightly payroll extract. Submits every entry of a batch to hms.ach.transaction
// asynchronously (all in flight at once, no thread per call) and collects, per entry, the trace
// number it was accepted under or the error it was rejected with.
//
//   hms-example-ach_etl_batch [--count N]
//
// Exits 0 when every entry got exactly one outcome, whatever it was; 1 when the service could not
// be reached; 2 when an outcome is missing, doubled or belongs to another entry.
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <vector>

#include "hms/ach/transaction.capnp.h"
#include "hms/ffi/client.hpp"

using hms::ach::EntryClass;
using hms::ach::EntryKind;
using hms::ach::TransactionService;
using hms::ffi::Reply;
using hms::ffi::Result;
using hms::ffi::Status;

namespace {

struct Entry {
  std::string id, routing, account, name;
  EntryKind kind;
  EntryClass entryClass;
  int64_t amountCents;
};

struct Outcome {
  unsigned count = 0;  // outcomes seen for the entry: exactly one expected
  bool wrongEntry = false;
  Status status;
  std::string trace;
};

// Completes an eight-digit routing prefix with its ABA check digit.
std::string withCheckDigit(const std::string& prefix8) {
  static constexpr int kWeights[3] = {3, 7, 1};
  int sum = 0;
  for (size_t i = 0; i < 8; ++i) sum += (prefix8[i] - '0') * kWeights[i % 3];
  return prefix8 + char('0' + (10 - sum % 10) % 10);
}

// The extract: a fixed pseudo-random batch, so every run submits the same entries. Like real
// extracts it has a few bad rows: a mistyped routing number, a zero amount, an entry the upstream
// system exported twice, accounts the bank does not know or has closed.
std::vector<Entry> extract(unsigned count) {
  static const char* const kNames[] = {"A. Okafor", "L. Nilsson", "M. Okafor",  "R. Das",
                                       "J. Moreau", "T. Haddad",  "S. Ivanova", "K. Tanaka"};
  static const char* const kBanks[] = {"02100002", "11100061", "32227016", "07100001"};
  std::mt19937 rng(20261125);
  std::vector<Entry> batch;
  batch.reserve(count);
  for (unsigned i = 0; i < count; ++i) {
    Entry e;
    e.id = "PAY-" + std::to_string(100000 + i);
    e.routing = withCheckDigit(kBanks[rng() % 4]);
    e.account = "40000" + std::to_string(1000 + rng() % 44);  // 1040-1043: not at this bank
    e.name = kNames[rng() % 8];
    e.kind = rng() % 4 == 0 ? EntryKind::DEBIT : EntryKind::CREDIT;
    e.entryClass = rng() % 5 == 0 ? EntryClass::WEB : EntryClass::PPD;
    e.amountCents = 5'000 + int64_t(rng() % 400'000);
    if (i % 97 == 13) e.routing[8] = char('0' + (e.routing[8] - '0' + 1) % 10);  // typo
    if (i % 211 == 17) e.amountCents = 0;
    if (i % 250 == 249) e.id = batch[i - 1].id;  // exported twice
    batch.push_back(std::move(e));
  }
  return batch;
}

std::string detail(const Status& s, const char* key) {
  for (const auto& [k, v] : s.details()) {
    if (k == key) return v;
  }
  return "-";
}

}  // namespace

int main(int argc, char** argv) {
  unsigned count = 1000;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--count") == 0 && i + 1 < argc) {
      count = unsigned(std::strtoul(argv[++i], nullptr, 10));
    } else {
      std::fprintf(stderr, "usage: %s [--count N]\n", argv[0]);
      return 1;
    }
  }
  auto client = hms::ffi::Client::connect({.name = "hms-etl"});
  if (!client) {
    std::fprintf(stderr, "hms-etl: %s\n", client.status().toString().c_str());
    return 1;
  }
  auto ach = (*client)->bind<TransactionService>("hms.ach.transaction", "^1.0.0");
  if (!ach) {
    std::fprintf(stderr, "hms-etl: %s\n", ach.status().toString().c_str());
    return 1;
  }
  const std::vector<Entry> batch = extract(count);
  std::vector<Outcome> outcomes(batch.size());
  std::mutex mu;
  std::condition_variable allDone;
  size_t done = 0;

  const auto start = std::chrono::steady_clock::now();
  for (size_t i = 0; i < batch.size(); ++i) {
    const Entry& e = batch[i];
    // The callback runs on the client's completion thread once the entry's result is back; the
    // loop goes on submitting meanwhile (it waits only when the channel's ring is full).
    ach->callAsync<&TransactionService::Client::submitRequest>(
        [&e](TransactionService::SubmitParams::Builder params) {
          auto entry = params.initEntry();
          entry.setId(e.id);
          entry.setKind(e.kind);
          entry.setEntryClass(e.entryClass);
          entry.setRoutingNumber(e.routing);
          entry.setAccountNumber(e.account);
          entry.setAmountCents(e.amountCents);
          entry.setName(e.name);
        },
        [&, i](Result<Reply<TransactionService::SubmitResults>> r) {
          Outcome o;
          if (r) {
            auto res = r->results();
            o.wrongEntry = batch[i].id != res.getId().cStr();
            o.trace = res.getTraceNumber().cStr();
          } else {
            o.status = r.status();
          }
          std::lock_guard lock(mu);
          o.count = outcomes[i].count + 1;
          outcomes[i] = std::move(o);
          if (++done == batch.size()) allDone.notify_one();
        },
        {.timeout = std::chrono::seconds(30)});
  }
  {
    // Every call ends within its deadline, with its result or an error, so this wait ends too.
    std::unique_lock lock(mu);
    allDone.wait(lock, [&] { return done == batch.size(); });
  }
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();

  size_t accepted = 0, broken = 0;
  int64_t credits = 0, debits = 0;
  std::map<std::string, size_t> rejections;  // "CODE returnCode" -> entries
  std::vector<size_t> rejected;
  for (size_t i = 0; i < batch.size(); ++i) {
    const Outcome& o = outcomes[i];
    if (o.count != 1 || o.wrongEntry) {
      ++broken;
      std::fprintf(stderr, "hms-etl: entry %s: %u outcomes%s\n", batch[i].id.c_str(), o.count,
                   o.wrongEntry ? ", one for another entry" : "");
    } else if (o.status) {
      ++accepted;
      (batch[i].kind == EntryKind::DEBIT ? debits : credits) += batch[i].amountCents;
    } else {
      rejected.push_back(i);
      ++rejections[std::string(hms::ffi::statusCodeName(o.status.code())) + " " +
                   detail(o.status, "returnCode")];
    }
  }
  std::printf("hms-etl: %zu entries in %.1f ms: %zu accepted, %zu rejected\n", batch.size(), ms,
              accepted, rejected.size());
  std::printf("hms-etl: accepted credits $%lld.%02lld, debits $%lld.%02lld\n",
              (long long)(credits / 100), (long long)(credits % 100), (long long)(debits / 100),
              (long long)(debits % 100));
  for (const auto& [kind, n] : rejections)
    std::printf("hms-etl: rejected %-26s %zu\n", kind.c_str(), n);
  for (size_t k = 0; k < rejected.size() && k < 6; ++k) {
    const size_t i = rejected[k];
    std::printf("hms-etl:   %s %-10s -> %s\n", batch[i].id.c_str(), batch[i].name.c_str(),
                outcomes[i].status.toString().c_str());
  }
  for (size_t i = 0, shown = 0; i < batch.size() && shown < 3; ++i) {
    if (outcomes[i].count == 1 && outcomes[i].status) {
      std::printf("hms-etl:   %s accepted, trace %s\n", batch[i].id.c_str(),
                  outcomes[i].trace.c_str());
      ++shown;
    }
  }
  return broken == 0 ? 0 : 2;
}
