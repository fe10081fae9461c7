@0xb8f1a3c2d4e5f607;
# hms.emr.vitals: bedside monitors' readings, published as a stream of events (the seed's
# pattern 3.4). One publisher (the monitor gateway), any number of subscribers: the chart, the
# alarm service, the audit trail.

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("hms::emr");

struct VitalSigns {
  patientId @0 :Text;
  bedId @1 :Text;
  takenAtNs @2 :Int64;           # CLOCK_REALTIME, ns since the epoch
  heartRate @3 :UInt16;          # beats per minute
  spo2 @4 :UInt8;                # oxygen saturation, percent
  systolic @5 :UInt16;           # mmHg
  diastolic @6 :UInt16;          # mmHg
  respiratoryRate @7 :UInt8;     # breaths per minute
  temperatureDeciC @8 :Int16;    # tenths of a degree Celsius
}
