package ffi_test

import (
	"context"
	"testing"
	"time"

	"hmsffi.dev/ffi"
)

// benchStub binds the C++ test service on a broker of the benchmark's own.
func benchStub(b *testing.B, transport ffi.Transport, env string) *ffi.Stub {
	br := startBroker(b)
	br.startTestService(b, env)
	client := br.connect(b, "go-bench", transport)
	return bind(b, client, "hms.test", "*")
}

// BenchmarkEcho64B is a JSON-level echo of 64 bytes of payload from Go to the C++ test
// service: with a context that cannot be cancelled (one crossing), with a deadline (an async
// call and a watcher), and as async calls, 16 in flight.
func BenchmarkEcho64B(b *testing.B) {
	in := echoMsg{Seq: 1, Payload: make([]byte, 64)}
	for _, tr := range transports {
		tr := tr
		b.Run(tr.name, func(b *testing.B) {
			stub := benchStub(b, tr.transport, tr.env)
			var out echoMsg
			b.Run("background", func(b *testing.B) {
				for i := 0; i < b.N; i++ {
					if err := stub.Call(context.Background(), "echo", in, &out); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run("deadline", func(b *testing.B) {
				ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
				defer cancel()
				for i := 0; i < b.N; i++ {
					if err := stub.Call(ctx, "echo", in, &out); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run("async16", func(b *testing.B) {
				ctx := context.Background()
				pending := make([]*ffi.Pending, 0, 16)
				for i := 0; i < b.N; i++ {
					p, err := stub.CallAsync(ctx, "echo", in)
					if err != nil {
						b.Fatal(err)
					}
					pending = append(pending, p)
					if len(pending) == cap(pending) || i == b.N-1 {
						for _, p := range pending {
							if err := p.Wait(ctx, &out); err != nil {
								b.Fatal(err)
							}
						}
						pending = pending[:0]
					}
				}
			})
		})
	}
}
