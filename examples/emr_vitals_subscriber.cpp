// Subscribers of hms.emr.vitals, each in a process of its own, each with its own needs:
//
//   --role chart   the ward's live chart: the latest reading per bed matters, not every one, so
//                  it subscribes drop_oldest (a slow chart never holds the monitors back) and
//                  reports how many readings it skipped.
//   --role alarm   the alarm service: must see every reading (block_publisher) and raises an
//                  alarm on hypoxia (SpO2 < 90), tachycardia (> 130/min), hypertension (> 180).
//   --role audit   the audit trail: every reading, in order, none missing (block_publisher);
//                  exits 2 if one is missing or out of order.
//
//   hms-example-emr_vitals_subscriber --role R [--history N] [--wait-seconds S]
//
// Waits up to S seconds (default 10) for the topic to be published, reads until the publisher
// closes it, prints what it saw.
#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <string>

#include "hms/emr/vitals.capnp.h"
#include "hms/ffi/client.hpp"

using hms::emr::VitalSigns;
using hms::ffi::StatusCode;

namespace {

const char* argOr(int argc, char** argv, const char* name, const char* fallback) {
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::strcmp(argv[i], name) == 0) return argv[i + 1];
  }
  return fallback;
}

struct Latest {
  uint16_t heartRate = 0, systolic = 0, diastolic = 0;
  uint8_t spo2 = 0;
  std::string patient;
};

}  // namespace

int main(int argc, char** argv) {
  const std::string role = argOr(argc, argv, "--role", "");
  if (role != "chart" && role != "alarm" && role != "audit") {
    std::fprintf(stderr, "usage: %s --role chart|alarm|audit [--history N]\n", argv[0]);
    return 2;
  }
  hms::ffi::ClientOptions co;
  co.name = "hms-emr-vitals-" + role;
  auto client = hms::ffi::Client::connect(co);
  if (!client) {
    std::fprintf(stderr, "cannot connect: %s\n", client.status().toString().c_str());
    return 1;
  }
  hms::ffi::SubscribeOptions so;
  so.policy = role == "chart" ? hms::ffi::SlowConsumer::kDropOldest
                              : hms::ffi::SlowConsumer::kBlockPublisher;
  so.history = uint32_t(std::stoul(argOr(argc, argv, "--history", "0")));
  // Wait for the monitor gateway to come up if it is not there yet.
  so.waitForPublisher = std::chrono::seconds(std::stoul(argOr(argc, argv, "--wait-seconds", "10")));
  auto sub = (*client)->subscribe<VitalSigns>("hms.emr.vitals", so);
  if (!sub) {
    std::fprintf(stderr, "%s: cannot subscribe: %s\n", role.c_str(),
                 sub.status().toString().c_str());
    return 1;
  }
  std::printf("%s: subscribed to hms.emr.vitals (%s, %s)\n", role.c_str(),
              so.policy == hms::ffi::SlowConsumer::kDropOldest ? "drop_oldest" : "block_publisher",
              !sub->sharedMemory() ? "over a socket"
              : so.policy == hms::ffi::SlowConsumer::kDropOldest
                  ? "copied from shared memory"
                  : "read in place in shared memory");
  std::fflush(stdout);

  std::map<std::string, Latest> chart;
  unsigned long readings = 0, alarms = 0, outOfOrder = 0;
  uint64_t first = 0, last = 0;
  hms::ffi::Status end;
  while ((end = sub->next(std::chrono::seconds(30)))) {
    auto v = sub->message();
    ++readings;
    if (first == 0) first = sub->sequence();
    if (last != 0 && sub->sequence() != last + 1 + sub->missed()) ++outOfOrder;
    last = sub->sequence();
    if (role == "chart") {
      Latest& l = chart[v.getBedId()];
      l = {v.getHeartRate(), v.getSystolic(), v.getDiastolic(), v.getSpo2(), v.getPatientId()};
    } else if (role == "alarm") {
      const char* what = v.getSpo2() < 90         ? "hypoxia"
                         : v.getHeartRate() > 130 ? "tachycardia"
                         : v.getSystolic() > 180  ? "hypertension"
                                                  : nullptr;
      if (what && ++alarms <= 3) {
        std::printf("alarm: %s at %s (%s): SpO2 %u%%, HR %u/min, BP %u/%u\n", what,
                    v.getBedId().cStr(), v.getPatientId().cStr(), unsigned(v.getSpo2()),
                    unsigned(v.getHeartRate()), unsigned(v.getSystolic()),
                    unsigned(v.getDiastolic()));
      }
    }
  }
  if (end.code() != StatusCode::kUnavailable) {
    std::fprintf(stderr, "%s: the subscription failed: %s\n", role.c_str(), end.toString().c_str());
    return 1;
  }
  if (role == "chart") {
    std::printf("chart: %lu readings shown, %lu skipped (drop_oldest), latest per bed:\n", readings,
                (unsigned long)sub->dropped());
    for (const auto& [bed, l] : chart) {
      std::printf("  %-7s %-7s HR %3u  SpO2 %3u%%  BP %3u/%u\n", bed.c_str(), l.patient.c_str(),
                  unsigned(l.heartRate), unsigned(l.spo2), unsigned(l.systolic),
                  unsigned(l.diastolic));
    }
  } else if (role == "alarm") {
    std::printf("alarm: %lu readings checked, %lu alarms raised\n", readings, alarms);
  } else {
    const bool whole = outOfOrder == 0 && sub->dropped() == 0 && last == first + readings - 1;
    std::printf("audit: %lu readings, sequence %lu..%lu, %s\n", readings, (unsigned long)first,
                (unsigned long)last, whole ? "none missing" : "GAPS FOUND");
    if (!whole) return 2;
  }
  return outOfOrder == 0 ? 0 : 2;
}
