// HMS-EMR: serves hms.emr.patient (PatientService) from an in-memory record store until SIGTERM.
// Allergies are sensitive: before it releases them, getPatient asks HMS-CDF's policy engine
// (hms.cdf.debate evaluatePolicy), a call made inside the handler, so it is part of the caller's
// trace (HMS-API -> HMS-EMR -> HMS-CDF; docs/observability.md). Without an answer from HMS-CDF
// the allergies are withheld, not released.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "common.hpp"
#include "hms/cdf/debate.capnp.h"
#include "hms/emr/patient.capnp.h"
#include "hms/ffi/client.hpp"

using hms::cdf::DebateService;
using hms::emr::PatientService;
using hms::ffi::CallContext;
using hms::ffi::Status;
using hms::ffi::StatusCode;

namespace {

struct Record {
  std::string mrn, given, family, birth;
  hms::emr::Sex sex;
  std::vector<std::pair<std::string, std::string>> allergies;
};

const std::map<std::string, Record>& store() {
  static const std::map<std::string, Record> records = {
      {"p-1001",
       {"MRN-55120",
        "Amina",
        "Okafor",
        "1984-03-12",
        hms::emr::Sex::FEMALE,
        {{"penicillin", "severe"}}}},
      {"p-1002", {"MRN-55121", "Lars", "Nilsson", "1957-11-02", hms::emr::Sex::MALE, {}}},
      {"p-1003",
       {"MRN-55122",
        "Mei",
        "Okafor",
        "2001-07-23",
        hms::emr::Sex::FEMALE,
        {{"latex", "mild"}, {"peanut", "moderate"}}}},
  };
  return records;
}

void fill(hms::emr::Patient::Builder p, const std::string& id, const Record& r, bool allergies) {
  p.setPatientId(id);
  p.setMrn(r.mrn);
  p.setGivenName(r.given);
  p.setFamilyName(r.family);
  p.setBirthDate(r.birth);
  p.setSex(r.sex);
  p.setUpdatedAtUnixMs(1'790'000'000'000);
  if (allergies) {
    auto list = p.initAllergies(uint(r.allergies.size()));
    for (size_t i = 0; i < r.allergies.size(); ++i) {
      list[uint(i)].setSubstance(r.allergies[i].first);
      list[uint(i)].setSeverity(r.allergies[i].second);
    }
  }
}

// The policy engine, bound on first use and again after its provider changed. Handlers run on
// several threads: the stub is shared (calls on one channel take turns), the lock only guards
// binding it.
class ReleasePolicy {
 public:
  explicit ReleasePolicy(hms::ffi::Client& client) : client_(client) {}

  // Whether HMS-CDF approves releasing sensitive data of a routine, consented encounter, within
  // what is left of the caller's deadline; the reason when it does not (or cannot say).
  bool approvesSensitive(const CallContext& ctx, std::string& why) {
    for (int attempt = 0; attempt < 2; ++attempt) {
      const auto cdf = stub(why);
      if (!cdf) return false;
      const int64_t now = std::chrono::duration_cast<std::chrono::nanoseconds>(
                              std::chrono::steady_clock::now().time_since_epoch())
                              .count();
      if (ctx.deadlineNs() <= now) {
        why = "no time left before the caller's deadline";
        return false;
      }
      hms::ffi::CallOptions options;
      options.timeout = std::chrono::nanoseconds(
          std::min<int64_t>(ctx.deadlineNs() - now, int64_t(2'000'000'000)));  // at most 2 s
      auto reply = cdf->call<&DebateService::Client::evaluatePolicyRequest>(
          [](auto params) {
            params.setPolicyId("records.release");
            params.setMaxRounds(3);
            auto facts = params.initFacts(3);
            const char* kv[3][2] = {
                {"encounter", "routine"}, {"consent", "yes"}, {"dataClass", "sensitive"}};
            for (uint i = 0; i < 3; ++i) {
              facts[i].setKey(kv[i][0]);
              facts[i].setValue(kv[i][1]);
            }
          },
          options);
      if (reply) {
        const bool approved = reply->results().getDecision() == hms::cdf::Decision::APPROVE;
        if (!approved) why = "HMS-CDF did not approve records.release";
        return approved;
      }
      why = reply.status().toString();
      if (reply.status().code() != StatusCode::kUnavailable) break;
      forget(cdf);  // its provider left: bind again, once
    }
    return false;
  }

 private:
  std::shared_ptr<hms::ffi::Stub<DebateService>> stub(std::string& why) {
    std::lock_guard lock(mu_);
    if (!cdf_) {
      auto bound = client_.bind<DebateService>("hms.cdf.debate", "^2.0");
      if (!bound) {
        why = bound.status().toString();
        return nullptr;
      }
      cdf_ = std::make_shared<hms::ffi::Stub<DebateService>>(std::move(*bound));
    }
    return cdf_;
  }
  void forget(const std::shared_ptr<hms::ffi::Stub<DebateService>>& gone) {
    std::lock_guard lock(mu_);
    if (cdf_ == gone) cdf_.reset();
  }

  hms::ffi::Client& client_;
  std::mutex mu_;
  std::shared_ptr<hms::ffi::Stub<DebateService>> cdf_;
};

}  // namespace

int main() {
  examples::blockStopSignals();
  auto client = hms::ffi::Client::connect({.name = "hms-emr"});
  if (!client) {
    std::fprintf(stderr, "hms-emr: %s\n", client.status().toString().c_str());
    return 1;
  }
  // Shared with the handler, which may still run while main() unwinds.
  auto policy = std::make_shared<ReleasePolicy>(**client);
  hms::ffi::ServiceDefinition<PatientService> def;
  def.on<&PatientService::Client::getPatientRequest>(
      [policy](CallContext& ctx, PatientService::GetPatientParams::Reader params,
               PatientService::GetPatientResults::Builder results) -> Status {
        const std::string id = params.getPatientId();
        auto it = store().find(id);
        if (it == store().end()) {
          return Status(StatusCode::kNotFound, "no patient with id '" + id + "'");
        }
        std::string withheld;
        bool allergies = params.getIncludeAllergies();
        if (allergies && !policy->approvesSensitive(ctx, withheld)) allergies = false;
        fill(results.initPatient(), id, it->second, allergies);
        std::printf("hms-emr: getPatient(%s) for pid %d%s%s\n", id.c_str(), int(ctx.callerPid()),
                    withheld.empty() ? "" : "; allergies withheld: ", withheld.c_str());
        std::fflush(stdout);
        return Status();
      });
  def.on<&PatientService::Client::searchPatientsRequest>(
      [](CallContext&, PatientService::SearchPatientsParams::Reader params,
         PatientService::SearchPatientsResults::Builder results) -> Status {
        std::vector<const std::pair<const std::string, Record>*> hits;
        for (const auto& e : store()) {
          if (e.second.family == params.getFamilyName().cStr()) hits.push_back(&e);
        }
        if (params.getLimit() > 0 && hits.size() > params.getLimit())
          hits.resize(params.getLimit());
        auto list = results.initPatients(uint(hits.size()));
        for (size_t i = 0; i < hits.size(); ++i)
          fill(list[uint(i)], hits[i]->first, hits[i]->second, false);
        return Status();
      });
  auto handle = (*client)->serve("hms.emr.patient", {1, 2, 0}, std::move(def),
                                 {.displayName = "EMR patient records",
                                  .description = "Patient demographics and allergies (HMS-EMR)"});
  if (!handle) {
    std::fprintf(stderr, "hms-emr: %s\n", handle.status().toString().c_str());
    return 1;
  }
  std::printf("hms-emr: serving hms.emr.patient 1.2.0\n");
  std::fflush(stdout);
  examples::waitForStopSignal();
  return 0;
}
