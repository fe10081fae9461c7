// HMS-ACH: serves hms.ach.transaction (TransactionService): validates ACH entries, posts them to
// an in-memory ledger and assigns trace numbers, or rejects them with a NACHA return code.
#include <cctype>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <map>
#include <mutex>
#include <set>
#include <string>

#include "common.hpp"
#include "hms/ach/transaction.capnp.h"
#include "hms/ffi/client.hpp"

using hms::ach::EntryClass;
using hms::ach::EntryKind;
using hms::ach::TransactionService;
using hms::ffi::CallContext;
using hms::ffi::Status;
using hms::ffi::StatusCode;

namespace {

constexpr const char* kOdfi = "09100001";      // our routing number's first eight digits
constexpr int64_t kWebLimitCents = 2'500'000;  // $25,000 per internet-initiated entry

// ABA check: 3·d1 + 7·d2 + d3 + 3·d4 + ... over the nine digits is a multiple of ten.
bool validRoutingNumber(std::string_view r) {
  if (r.size() != 9) return false;
  static constexpr int kWeights[3] = {3, 7, 1};
  int sum = 0;
  for (size_t i = 0; i < 9; ++i) {
    if (!std::isdigit(static_cast<unsigned char>(r[i]))) return false;
    sum += (r[i] - '0') * kWeights[i % 3];
  }
  return sum % 10 == 0;
}

bool validAccountNumber(std::string_view a) {
  if (a.empty() || a.size() > 17) return false;
  for (char c : a) {
    if (!std::isdigit(static_cast<unsigned char>(c))) return false;
  }
  return true;
}

Status reject(StatusCode code, std::string message, const char* returnCode, const char* field) {
  return Status(code, std::move(message), {}, {{"returnCode", returnCode}, {"field", field}});
}

// The next weekday after today (UTC), as YYYY-MM-DD: the settlement window entries go to.
std::string nextSettlementDate() {
  std::time_t t = std::time(nullptr);
  std::tm day{};
  do {
    t += 24 * 3600;
    gmtime_r(&t, &day);
  } while (day.tm_wday == 0 || day.tm_wday == 6);
  char buf[16];
  std::strftime(buf, sizeof buf, "%Y-%m-%d", &day);
  return buf;
}

// The receiving accounts this demo bank knows: balances in cents; closed accounts refuse entries.
class Ledger {
 public:
  Ledger() {
    for (int i = 0; i < 40; ++i) balances_["40000" + std::to_string(1000 + i)] = 150'000 * (i % 7);
    closed_.insert("400001013");
    closed_.insert("400001029");
  }

  Status post(TransactionService::SubmitParams::Reader params,
              TransactionService::SubmitResults::Builder results) {
    auto e = params.getEntry();
    const std::string id = e.getId();
    if (id.empty())
      return reject(StatusCode::kInvalidArgument, "entry id is required", "R17", "id");
    if (e.getAmountCents() <= 0) {
      return reject(StatusCode::kInvalidArgument, "amount must be positive", "R17", "amountCents");
    }
    if (!validRoutingNumber(e.getRoutingNumber().cStr())) {
      return reject(StatusCode::kInvalidArgument,
                    "routing number '" + std::string(e.getRoutingNumber().cStr()) +
                        "' fails the ABA check digit",
                    "R28", "routingNumber");
    }
    const std::string account = e.getAccountNumber();
    if (!validAccountNumber(account)) {
      return reject(StatusCode::kInvalidArgument, "account number must be 1-17 digits", "R04",
                    "accountNumber");
    }
    if (e.getEntryClass() == EntryClass::WEB && e.getAmountCents() > kWebLimitCents) {
      return reject(StatusCode::kOutOfRange, "WEB entries are limited to $25,000.00", "R17",
                    "amountCents");
    }

    std::lock_guard lock(mu_);
    if (seen_.count(id)) {
      return reject(StatusCode::kAlreadyExists, "entry '" + id + "' was already accepted", "R24",
                    "id");
    }
    auto it = balances_.find(account);
    if (it == balances_.end()) {
      return reject(StatusCode::kNotFound, "no account " + account, "R03", "accountNumber");
    }
    if (closed_.count(account)) {
      return reject(StatusCode::kFailedPrecondition, "account " + account + " is closed", "R02",
                    "accountNumber");
    }
    if (e.getKind() == EntryKind::DEBIT) {
      if (it->second < e.getAmountCents()) {
        return reject(StatusCode::kFailedPrecondition, "insufficient funds in " + account, "R01",
                      "amountCents");
      }
      it->second -= e.getAmountCents();
    } else {
      it->second += e.getAmountCents();
    }
    seen_.insert(id);
    char trace[16];
    std::snprintf(trace, sizeof trace, "%s%07u", kOdfi, ++sequence_ % 10'000'000);
    results.setId(id);
    results.setTraceNumber(trace);
    results.setSettlementDate(settlementDate_);
    results.setFeeCents(e.getEntryClass() == EntryClass::CCD ? 12 : 8);
    return Status();
  }

 private:
  std::mutex mu_;
  std::map<std::string, int64_t> balances_;
  std::set<std::string> closed_;
  std::set<std::string> seen_;  // accepted entry ids: a resubmitted entry is a duplicate (R24)
  unsigned sequence_ = 0;
  const std::string settlementDate_ = nextSettlementDate();
};

}  // namespace

int main() {
  examples::blockStopSignals();
  auto client = hms::ffi::Client::connect({.name = "hms-ach"});
  if (!client) {
    std::fprintf(stderr, "hms-ach: %s\n", client.status().toString().c_str());
    return 1;
  }
  Ledger ledger;
  hms::ffi::ServiceDefinition<TransactionService> def;
  def.on<&TransactionService::Client::submitRequest>(
      [&ledger](CallContext&, TransactionService::SubmitParams::Reader params,
                TransactionService::SubmitResults::Builder results) {
        return ledger.post(params, results);
      });
  auto handle = (*client)->serve(
      "hms.ach.transaction", {1, 0, 0}, std::move(def),
      {.displayName = "ACH entries", .description = "ACH entry validation and posting (HMS-ACH)"});
  if (!handle) {
    std::fprintf(stderr, "hms-ach: %s\n", handle.status().toString().c_str());
    return 1;
  }
  std::printf("hms-ach: serving hms.ach.transaction 1.0.0\n");
  std::fflush(stdout);
  examples::waitForStopSignal();
  return 0;
}
