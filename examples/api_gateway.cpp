// HMS-API: looks patients up in HMS-EMR through hms.emr.patient, as the seed's API gateway does.
#include <cstdio>

#include "hms/emr/patient.capnp.h"
#include "hms/ffi/client.hpp"

using hms::emr::PatientService;

int main() {
  auto client = hms::ffi::Client::connect({.name = "hms-api"});
  if (!client) {
    std::fprintf(stderr, "hms-api: %s\n", client.status().toString().c_str());
    return 1;
  }
  auto emr = (*client)->bind<PatientService>("hms.emr.patient", "^1.0");
  if (!emr) {
    std::fprintf(stderr, "hms-api: %s\n", emr.status().toString().c_str());
    return 1;
  }
  std::printf("hms-api: bound hms.emr.patient %s (pid %d)\n",
              emr->service().version.toString().c_str(), int(emr->service().providerPid));
  for (const char* id : {"p-1001", "p-1003", "p-9999"}) {
    auto reply = emr->call<&PatientService::Client::getPatientRequest>([&](auto params) {
      params.setPatientId(id);
      params.setIncludeAllergies(true);
    });
    if (!reply) {
      std::printf("hms-api: getPatient(%s) -> %s\n", id, reply.status().toString().c_str());
      continue;
    }
    auto p = reply->results().getPatient();
    std::printf("hms-api: getPatient(%s) -> %s %s, born %s, %u allerg%s\n", id,
                p.getGivenName().cStr(), p.getFamilyName().cStr(), p.getBirthDate().cStr(),
                p.getAllergies().size(), p.getAllergies().size() == 1 ? "y" : "ies");
  }
  auto found = emr->call<&PatientService::Client::searchPatientsRequest>([](auto params) {
    params.setFamilyName("Okafor");
    params.setLimit(10);
  });
  if (!found) {
    std::fprintf(stderr, "hms-api: searchPatients: %s\n", found.status().toString().c_str());
    return 1;
  }
  std::printf("hms-api: searchPatients(Okafor) -> %u patients\n",
              found->results().getPatients().size());
  return 0;
}
