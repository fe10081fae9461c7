package ffi_test

import (
	"context"
	"os"
	"syscall"
	"testing"

	"hmsffi.dev/ffi"
)

// serviceProcesses are the TestService providers in other processes: the Go one of
// cmd/hms-go-test-service and, when it is built, the Rust one of bindings/rust.
func serviceProcesses(t *testing.T) []struct{ name, id, bin string } {
	procs := []struct{ name, id, bin string }{
		{"go", "hms.test.go", buildCommand(t, "HMS_FFI_GO_TEST_SERVICE", "./cmd/hms-go-test-service")},
	}
	rust := envOr("HMS_FFI_RUST_TEST_SERVICE",
		repoRoot(t)+"/bindings/rust/target/debug/examples/test_service")
	if _, err := os.Stat(rust); err == nil {
		procs = append(procs, struct{ name, id, bin string }{"rust", "hms.test.rust", rust})
	} else {
		t.Logf("no Rust test service at %s (cargo build --examples in bindings/rust): not called", rust)
	}
	return procs
}

// TestServiceProcesses calls TestService served by Go and Rust processes, and kills each with
// SIGKILL mid-call: the caller gets UNAVAILABLE.
func TestServiceProcesses(t *testing.T) {
	for _, p := range serviceProcesses(t) {
		p := p
		for _, tr := range transports {
			tr := tr
			t.Run(p.name+"/"+tr.name, func(t *testing.T) {
				b := startBroker(t)
				args := []string{"--socket", b.sock, "--id", p.id}
				if tr.env != "" {
					args = append(args, "--transport", tr.env)
				}
				svc := startProcess(t, p.id, nil, p.bin, args...)
				svc.waitLine(t, "ready")
				client := b.connect(t, "go-caller", tr.transport)
				stub := bind(t, client, p.id, "*")

				in := echoMsg{Seq: 1<<63 + 5, Payload: []byte("across languages")}
				var out echoMsg
				if err := stub.Call(callCtx(t), "echo", in, &out); err != nil {
					t.Fatal(err)
				}
				if out.Seq != in.Seq || string(out.Payload) != string(in.Payload) {
					t.Fatalf("echo returned %+v", out)
				}
				var w whoami
				if err := stub.Call(context.Background(), "whoami", nil, &w); err != nil {
					t.Fatal(err)
				}
				if int(w.PID) != svc.cmd.Process.Pid || int(w.CallerPID) != os.Getpid() {
					t.Fatalf("whoami returned %+v", w)
				}
				err := stub.Call(callCtx(t), "fail", map[string]any{"code": 5, "message": "gone"}, nil)
				if e := wantCode(t, err, ffi.ErrNotFound, ffi.CodeNotFound); e.Source != p.id || e.Message != "gone" {
					t.Fatalf("got %#v", e)
				}
				s, err := stub.OpenStream(callCtx(t), "count", countParams{From: 1, N: 3})
				if err != nil {
					t.Fatal(err)
				}
				n := 0
				for s.Next(nil) {
					n++
				}
				if s.Err() != nil || n != 3 {
					t.Fatalf("read %d items, then %v", n, s.Err())
				}

				done := make(chan error, 1)
				go func() { done <- stub.Call(callCtx(t), "sleep", map[string]any{"ms": 5000}, nil) }()
				svc.waitLine(t, "sleeping 5000")
				svc.kill(syscall.SIGKILL)
				err = waitErr(t, done, "the call to the killed service")
				wantCode(t, err, ffi.ErrUnavailable, ffi.CodeUnavailable)
			})
		}
	}
}
