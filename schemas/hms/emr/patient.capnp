@0xc451d97d4518a247;
# hms.emr.patient: the electronic medical record's patient service (the seed's HMS-EMR
# PatientService, called by HMS-API). Mirrors the seed's protobuf contract field for field.

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("hms::emr");

enum Sex {
  unknown @0;
  female @1;
  male @2;
  other @3;
}

struct Allergy {
  substance @0 :Text;
  severity @1 :Text;
}

struct Patient {
  patientId @0 :Text;
  mrn @1 :Text;                # medical record number
  givenName @2 :Text;
  familyName @3 :Text;
  birthDate @4 :Text;          # ISO 8601 date
  sex @5 :Sex;
  allergies @6 :List(Allergy);
  updatedAtUnixMs @7 :Int64;
}

interface PatientService {
  getPatient @0 (patientId :Text, includeAllergies :Bool) -> (patient :Patient);
  searchPatients @1 (familyName :Text, limit :UInt32) -> (patients :List(Patient));
}
