// Command hms-emr is HMS-EMR in Go (the seed's §4.2): it serves hms.emr.patient 1.2.0
// (schemas/hms/emr/patient.capnp, PatientService) from the same in-memory records as the C++
// examples/emr_patient_service.cpp, until SIGTERM or SIGINT.
//
//	hms-emr [--socket PATH] [--schema schemas/hms/emr/patient.capnp] [--transport auto|shm|socket]
//
// It prints "hms-emr [go]: ready" once registered and a line per request.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"syscall"

	"hmsffi.dev/ffi"
)

type allergy struct {
	Substance string `json:"substance"`
	Severity  string `json:"severity"`
}

type record struct {
	mrn, given, family, birth, sex string
	allergies                      []allergy
}

type patient struct {
	PatientID       string    `json:"patientId"`
	Mrn             string    `json:"mrn"`
	GivenName       string    `json:"givenName"`
	FamilyName      string    `json:"familyName"`
	BirthDate       string    `json:"birthDate"`
	Sex             string    `json:"sex"`
	Allergies       []allergy `json:"allergies,omitempty"`
	UpdatedAtUnixMs int64     `json:"updatedAtUnixMs,string"`
}

// The same records as the C++ HMS-EMR, in id order.
var ids = []string{"p-1001", "p-1002", "p-1003"}
var store = map[string]record{
	"p-1001": {"MRN-55120", "Amina", "Okafor", "1984-03-12", "female",
		[]allergy{{"penicillin", "severe"}}},
	"p-1002": {"MRN-55121", "Lars", "Nilsson", "1957-11-02", "male", nil},
	"p-1003": {"MRN-55122", "Mei", "Okafor", "2001-07-23", "female",
		[]allergy{{"latex", "mild"}, {"peanut", "moderate"}}},
}

func fill(id string, r record, withAllergies bool) patient {
	p := patient{PatientID: id, Mrn: r.mrn, GivenName: r.given, FamilyName: r.family,
		BirthDate: r.birth, Sex: r.sex, UpdatedAtUnixMs: 1_790_000_000_000}
	if withAllergies {
		p.Allergies = append([]allergy{}, r.allergies...)
	}
	return p
}

func defaultSchema() string {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "schemas/hms/emr/patient.capnp"
	}
	return filepath.Join(filepath.Dir(file), "..", "..", "..", "..", "schemas", "hms", "emr",
		"patient.capnp")
}

func logf(format string, args ...any) {
	fmt.Printf("hms-emr [go]: "+format+"\n", args...)
}

func main() {
	socket := flag.String("socket", "", "the broker's socket (default: $HMS_FFI_SOCKET, else the per-user default)")
	schema := flag.String("schema", defaultSchema(), "schemas/hms/emr/patient.capnp")
	transport := flag.String("transport", "auto", "auto, shm or socket")
	flag.Parse()

	opts := ffi.Options{SocketPath: *socket, Name: "hms-emr"}
	switch *transport {
	case "auto":
	case "shm":
		opts.Transport = ffi.TransportSharedMemory
	case "socket":
		opts.Transport = ffi.TransportSocket
	default:
		fmt.Fprintf(os.Stderr, "hms-emr [go]: unknown transport %q\n", *transport)
		os.Exit(2)
	}
	client, err := ffi.Connect(context.Background(), opts)
	if err != nil {
		fmt.Fprintf(os.Stderr, "hms-emr [go]: %v\n", err)
		os.Exit(1)
	}
	defer client.Close()

	handlers := map[string]ffi.HandlerFunc{
		"getPatient": func(ctx context.Context, req *ffi.Request) (any, error) {
			var p struct {
				PatientID        string `json:"patientId"`
				IncludeAllergies bool   `json:"includeAllergies"`
			}
			if err := req.Params(&p); err != nil {
				return nil, err
			}
			if p.PatientID == "" {
				logf("getPatient() for pid %d -> INVALID_ARGUMENT", req.Caller().PID)
				return nil, &ffi.Error{Code: ffi.CodeInvalidArgument, Message: "patientId is empty",
					Details: map[string]string{"field": "patientId"}}
			}
			r, ok := store[p.PatientID]
			if !ok {
				logf("getPatient(%s) for pid %d -> NOT_FOUND", p.PatientID, req.Caller().PID)
				return nil, &ffi.Error{Code: ffi.CodeNotFound,
					Message: fmt.Sprintf("no patient with id '%s'", p.PatientID),
					Details: map[string]string{"patientId": p.PatientID}}
			}
			logf("getPatient(%s) for pid %d", p.PatientID, req.Caller().PID)
			return map[string]any{"patient": fill(p.PatientID, r, p.IncludeAllergies)}, nil
		},
		"searchPatients": func(ctx context.Context, req *ffi.Request) (any, error) {
			var p struct {
				FamilyName string `json:"familyName"`
				Limit      uint32 `json:"limit"`
			}
			if err := req.Params(&p); err != nil {
				return nil, err
			}
			hits := []patient{}
			for _, id := range ids {
				if r := store[id]; r.family == p.FamilyName {
					hits = append(hits, fill(id, r, false))
				}
			}
			if p.Limit > 0 && len(hits) > int(p.Limit) {
				hits = hits[:p.Limit]
			}
			logf("searchPatients(%s) for pid %d -> %d patients", p.FamilyName, req.Caller().PID, len(hits))
			return map[string]any{"patients": hits}, nil
		},
	}
	svc, err := client.Serve("hms.emr.patient", "1.2.0", *schema, "PatientService", handlers,
		ffi.WithDisplayName("EMR patient records"),
		ffi.WithDescription("Patient demographics and allergies (HMS-EMR)"))
	if err != nil {
		fmt.Fprintf(os.Stderr, "hms-emr [go]: %v\n", err)
		os.Exit(3)
	}
	defer svc.Close()
	logf("serving hms.emr.patient 1.2.0 (pid %d)", os.Getpid())
	logf("ready")

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	<-stop
	logf("stopping")
}
