// HMS-EMR monitor gateway: publishes bedside monitors' readings on hms.emr.vitals (VitalSigns),
// one topic, any number of subscribers (the seed's pattern 3.4).
//
//   hms-example-emr_vitals_monitor [--count N] [--beds B] [--interval-us U] [--wait-subscribers K]
//
// Publishes N readings (default 5000) round-robin over B beds (default 12), U microseconds apart
// (default 0), after waiting for K subscribers (default 0), then closes the topic: subscribers
// read what was published and see the end. Some readings are abnormal on purpose (low SpO2,
// tachycardia, hypertension), for the alarm subscriber to find.
#include <time.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>

#include "hms/emr/vitals.capnp.h"
#include "hms/ffi/client.hpp"

using hms::emr::VitalSigns;

namespace {

unsigned long argOr(int argc, char** argv, const char* name, unsigned long fallback) {
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::strcmp(argv[i], name) == 0) return std::stoul(argv[i + 1]);
  }
  return fallback;
}

int64_t realtimeNs() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return int64_t(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

// A plausible reading for bed `bed` at reading `n`; every 97th is hypoxic, every 211th
// tachycardic, every 307th hypertensive.
void reading(VitalSigns::Builder v, unsigned long n, unsigned bed) {
  v.setPatientId("p-" + std::to_string(1000 + bed));
  v.setBedId("icu-" + std::to_string(bed + 1));
  v.setTakenAtNs(realtimeNs());
  v.setHeartRate(uint16_t(n % 211 == 0 ? 142 : 62 + (n * 7 + bed) % 30));
  v.setSpo2(uint8_t(n % 97 == 0 ? 86 : 94 + (n + bed) % 6));
  v.setSystolic(uint16_t(n % 307 == 0 ? 192 : 108 + (n * 3 + bed) % 30));
  v.setDiastolic(uint16_t(68 + (n + 2 * bed) % 16));
  v.setRespiratoryRate(uint8_t(12 + (n + bed) % 8));
  v.setTemperatureDeciC(int16_t(365 + int((n + bed) % 12) - 4));
}

}  // namespace

int main(int argc, char** argv) {
  const unsigned long count = argOr(argc, argv, "--count", 5000);
  const unsigned beds = unsigned(argOr(argc, argv, "--beds", 12));
  const unsigned long intervalUs = argOr(argc, argv, "--interval-us", 0);
  const unsigned long waitFor = argOr(argc, argv, "--wait-subscribers", 0);

  hms::ffi::ClientOptions co;
  co.name = "hms-emr-monitor-gateway";
  auto client = hms::ffi::Client::connect(co);
  if (!client) {
    std::fprintf(stderr, "cannot connect: %s\n", client.status().toString().c_str());
    return 1;
  }
  hms::ffi::TopicOptions to;
  to.slots = 1024;  // how far a drop_oldest subscriber may lag, and the history kept
  to.maxMessageBytes = 240;
  to.displayName = "Bedside vital signs";
  to.description = "One VitalSigns per monitor reading, all beds of the unit";
  auto vitals = (*client)->advertise<VitalSigns>("hms.emr.vitals", to);
  if (!vitals) {
    std::fprintf(stderr, "cannot publish hms.emr.vitals: %s\n", vitals.status().toString().c_str());
    return 1;
  }
  std::printf("publishing hms.emr.vitals (%s)\n",
              (*client)->usesSharedMemory() ? "shared memory" : "sockets");
  std::fflush(stdout);
  const auto waitUntil = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (vitals->subscribers() < waitFor) {
    if (std::chrono::steady_clock::now() > waitUntil) {
      std::fprintf(stderr, "only %zu of %lu subscribers came within 30 s\n", vitals->subscribers(),
                   waitFor);
      return 1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  const auto start = std::chrono::steady_clock::now();
  for (unsigned long n = 1; n <= count; ++n) {
    auto s = vitals->publish([&](VitalSigns::Builder v) { reading(v, n, unsigned(n % beds)); });
    if (!s) {
      std::fprintf(stderr, "reading %lu not published: %s\n", n, s.toString().c_str());
      return 1;
    }
    if (intervalUs) std::this_thread::sleep_for(std::chrono::microseconds(intervalUs));
  }
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  std::printf("published %lu readings of %u beds to %zu subscribers in %.1f ms\n", count, beds,
              vitals->subscribers(), ms);
  if (auto s = vitals->close(); !s) {
    std::fprintf(stderr, "close: %s\n", s.toString().c_str());
    return 1;
  }
  return 0;
}
