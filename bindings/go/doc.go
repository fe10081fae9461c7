// Package ffi is the Go binding of HMS-FFI, the shared-memory IPC broker: it calls services and
// serves them, publishes and subscribes, with JSON in and out, through the stable C ABI of
// libhmsffi (hms/ffi/hms_ffi.h).
//
// A call names a service, a version range, a method and its params; the library converts the
// params to a Cap'n Proto message in the shared-memory ring with the contract the service
// registered, and the reply back to JSON, which this package decodes into a Go value with
// encoding/json:
//
//	client, err := ffi.Connect(ctx, ffi.Options{Name: "hms-sys"})
//	if err != nil { ... }
//	defer client.Close()
//	cdf, err := client.Bind(ctx, "hms.cdf.debate", "^2.0")
//	if err != nil { ... }
//	defer cdf.Close()
//	var verdict struct {
//		Decision   string  `json:"decision"`
//		Confidence float64 `json:"confidence"`
//	}
//	err = cdf.Call(ctx, "evaluatePolicy", map[string]any{"policyId": "records.release"}, &verdict)
//
// # JSON mapping
//
// Field names are the schema's (camelCase). Int64 and UInt64 fields come back as decimal
// strings, so a Go struct field for one needs the ",string" option
// (`json:"seq,string"`); Data fields are base64, which is what encoding/json does with []byte;
// enums are their enumerants' names.
//
// # Context
//
// A call's deadline is its context's deadline (else the client's Options.DefaultTimeout), and
// cancelling the context cancels the call: the service sees it as cancelled and the caller gets
// an *Error with code CANCELLED (or DEADLINE_EXCEEDED) that also matches context.Canceled (or
// context.DeadlineExceeded) under errors.Is.
//
// # Errors
//
// Every failure the library, the broker or a service reports is an *Error carrying a Code
// numbered as gRPC's, a message, the source (the id of the service that returned it; "" when the
// library or the broker did) and details. errors.Is matches it against the sentinel of its code
// (ErrNotFound, ErrInvalidArgument, ...), and errors.As extracts it.
//
// # Serving
//
// Client.Serve registers a service under a Cap'n Proto interface and runs one handler per
// method, each request on a goroutine of its own. The library never calls Go from a thread of
// its own: requests are pulled by a goroutine of the service.
//
// # Handles
//
// Client, Stub, Stream, Service, Publisher and Subscription hold C handles: Close each when done
// (Close is idempotent and safe while other goroutines use the value; the C object is freed when
// the last of them returns). A finalizer frees what was forgotten, as a safety net. Every type is
// safe for concurrent use except where its documentation says otherwise.
package ffi
