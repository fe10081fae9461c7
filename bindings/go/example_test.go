package ffi_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"hmsffi.dev/ffi"
)

func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	client, err := ffi.Connect(ctx, ffi.Options{Name: "hms-sys"})
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()
	cdf, err := client.Bind(ctx, "hms.cdf.debate", "^2.0")
	if err != nil {
		log.Fatal(err)
	}
	defer cdf.Close()
	var verdict struct {
		Decision   string  `json:"decision"`
		Confidence float64 `json:"confidence"`
	}
	params := map[string]any{
		"policyId":  "records.release",
		"facts":     []map[string]string{{"key": "consent", "value": "yes"}},
		"maxRounds": 3,
	}
	if err := cdf.Call(ctx, "evaluatePolicy", params, &verdict); err != nil {
		var e *ffi.Error
		if errors.As(err, &e) {
			log.Fatalf("%v from %q: %s %v", e.Code, e.Source, e.Message, e.Details)
		}
		log.Fatal(err)
	}
	fmt.Println(verdict.Decision, verdict.Confidence)
}

func ExampleClient_Serve() {
	client, err := ffi.Connect(context.Background(), ffi.Options{Name: "hms-emr"})
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()
	getPatient := func(ctx context.Context, req *ffi.Request) (any, error) {
		var p struct {
			PatientID string `json:"patientId"`
		}
		if err := req.Params(&p); err != nil {
			return nil, err
		}
		if p.PatientID != "p-1001" {
			return nil, &ffi.Error{Code: ffi.CodeNotFound, Message: "no patient " + p.PatientID,
				Details: map[string]string{"resource_type": "patient", "resource_id": p.PatientID}}
		}
		return map[string]any{"patient": map[string]any{"patientId": p.PatientID, "givenName": "Ada"}}, nil
	}
	svc, err := client.Serve("hms.emr.patient", "1.2.0", "schemas/hms/emr/patient.capnp",
		"PatientService", map[string]ffi.HandlerFunc{"getPatient": getPatient})
	if err != nil {
		log.Fatal(err)
	}
	defer svc.Close()
	select {} // serve until killed
}

func ExampleStub_OpenStream() {
	ctx := context.Background()
	client, err := ffi.Connect(ctx, ffi.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()
	stub, err := client.Bind(ctx, "hms.test", "*")
	if err != nil {
		log.Fatal(err)
	}
	defer stub.Close()
	s, err := stub.OpenStream(ctx, "count", map[string]any{"from": 1, "n": 3})
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()
	var item struct {
		Value uint64 `json:"value,string"`
	}
	for s.Next(&item) {
		fmt.Println(item.Value)
	}
	if err := s.Err(); err != nil {
		log.Fatal(err)
	}
}

func ExampleSubscription_C() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	client, err := ffi.Connect(ctx, ffi.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()
	sub, err := client.Subscribe(ctx, "hms.emr.vitals")
	if err != nil {
		log.Fatal(err)
	}
	defer sub.Close()
	for m := range sub.C() {
		var v map[string]any
		if err := m.Decode(&v); err != nil {
			log.Fatal(err)
		}
		fmt.Println(m.Seq, v)
	}
	if err := sub.Err(); errors.Is(err, ffi.ErrUnavailable) {
		fmt.Println("the publisher left")
	}
}
