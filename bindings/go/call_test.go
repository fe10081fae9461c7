package ffi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"hmsffi.dev/ffi"
)

// The params and results of test.capnp's TestService. UInt64 fields travel as decimal strings.
type echoMsg struct {
	Seq     uint64 `json:"seq,string"`
	Payload []byte `json:"payload"`
}

type whoami struct {
	PID       uint32 `json:"pid"`
	Version   string `json:"version"`
	CallerPID uint32 `json:"callerPid"`
}

type countParams struct {
	From         uint64 `json:"from,string"`
	N            uint64 `json:"n,string"`
	PayloadBytes uint32 `json:"payloadBytes,omitempty"`
	DelayUs      uint32 `json:"delayUs,omitempty"`
	FailAt       uint64 `json:"failAt,string,omitempty"`
}

type countItem struct {
	Value   uint64 `json:"value,string"`
	Payload []byte `json:"payload"`
}

// TestCppService calls the C++ test service (hms-ffi-test-service) from Go, over each transport.
func TestCppService(t *testing.T) {
	for _, tr := range transports {
		tr := tr
		t.Run(tr.name, func(t *testing.T) {
			b := startBroker(t)
			svc := b.startTestService(t, tr.env, "--version", "1.2.0", "--workers", "8")
			client := b.connect(t, "go-caller", tr.transport)
			stub := bind(t, client, "hms.test", "^1.0")

			t.Run("Bind_NamesTheVersionBound", func(t *testing.T) {
				if stub.ServiceID() != "hms.test" || stub.Version() != "1.2.0" {
					t.Fatalf("bound %s %s, want hms.test 1.2.0", stub.ServiceID(), stub.Version())
				}
			})

			t.Run("Echo_ReturnsWhatWasSent", func(t *testing.T) {
				in := echoMsg{Seq: 1 << 60, Payload: []byte("hello\x00from go")}
				var out echoMsg
				if err := stub.Call(callCtx(t), "echo", in, &out); err != nil {
					t.Fatal(err)
				}
				if out.Seq != in.Seq || !bytes.Equal(out.Payload, in.Payload) {
					t.Fatalf("echo returned %+v, want %+v", out, in)
				}
			})

			t.Run("Echo_DecodesIntoMapsAndRawMessages_WithoutADeadline", func(t *testing.T) {
				var m map[string]any
				if err := stub.Call(context.Background(), "echo", map[string]any{"seq": 7}, &m); err != nil {
					t.Fatal(err)
				}
				if m["seq"] != "7" {
					t.Fatalf("echo returned %v, want seq \"7\"", m)
				}
				var raw json.RawMessage
				if err := stub.Call(context.Background(), "echo", json.RawMessage(`{"seq":"8"}`), &raw); err != nil {
					t.Fatal(err)
				}
				if !strings.Contains(string(raw), `"8"`) {
					t.Fatalf("echo returned %s", raw)
				}
				if err := stub.Call(context.Background(), "echo", nil, nil); err != nil {
					t.Fatal(err)
				}
			})

			t.Run("Whoami_SeesThisProcessAsTheCaller", func(t *testing.T) {
				var w whoami
				if err := stub.Call(callCtx(t), "whoami", nil, &w); err != nil {
					t.Fatal(err)
				}
				if int(w.CallerPID) != os.Getpid() || w.Version != "1.2.0" ||
					int(w.PID) != svc.cmd.Process.Pid {
					t.Fatalf("whoami returned %+v; this process is %d, the service %d", w, os.Getpid(),
						svc.cmd.Process.Pid)
				}
			})

			t.Run("Fail_ReturnsTheServicesStatus_WithSourceAndDetails", func(t *testing.T) {
				err := stub.Call(callCtx(t), "fail", map[string]any{"code": 5, "message": "no such thing"}, nil)
				e := wantCode(t, err, ffi.ErrNotFound, ffi.CodeNotFound)
				if e.Message != "no such thing" || e.Source != "hms.test" || e.Details["hint"] != "asked to fail" {
					t.Fatalf("got %#v", e)
				}
				if errors.Is(err, ffi.ErrInternal) {
					t.Fatalf("a NOT_FOUND error matches ErrInternal")
				}
				if !strings.HasPrefix(err.Error(), "NOT_FOUND: no such thing [source: hms.test]") {
					t.Fatalf("Error() is %q", err.Error())
				}
				for code, sentinel := range map[ffi.Code]error{
					ffi.CodeInvalidArgument: ffi.ErrInvalidArgument, ffi.CodePermissionDenied: ffi.ErrPermissionDenied,
					ffi.CodeAlreadyExists: ffi.ErrAlreadyExists, ffi.CodeUnauthenticated: ffi.ErrUnauthenticated,
					ffi.CodeResourceExhausted: ffi.ErrResourceExhausted, ffi.CodeFailedPrecondition: ffi.ErrFailedPrecondition,
				} {
					err := stub.Call(callCtx(t), "fail", map[string]any{"code": int(code), "message": "x"}, nil)
					wantCode(t, err, sentinel, code)
				}
			})

			t.Run("UnknownMethod_ReturnsUnimplemented", func(t *testing.T) {
				err := stub.Call(callCtx(t), "noSuchMethod", nil, nil)
				wantCode(t, err, ffi.ErrUnimplemented, ffi.CodeUnimplemented)
			})

			t.Run("UnknownField_ReturnsInvalidArgument_NamingIt", func(t *testing.T) {
				err := stub.Call(callCtx(t), "echo", map[string]any{"nope": 1}, nil)
				e := wantCode(t, err, ffi.ErrInvalidArgument, ffi.CodeInvalidArgument)
				if !strings.Contains(e.Message, "nope") {
					t.Fatalf("the message does not name the field: %q", e.Message)
				}
			})

			t.Run("ResultsThatDoNotDecode_ReturnInternal", func(t *testing.T) {
				var wrong struct {
					Seq bool `json:"seq"`
				}
				err := stub.Call(callCtx(t), "echo", echoMsg{Seq: 3}, &wrong)
				wantCode(t, err, ffi.ErrInternal, ffi.CodeInternal)
			})

			t.Run("ContextDeadline_ReturnsDeadlineExceeded", func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
				defer cancel()
				start := time.Now()
				err := stub.Call(ctx, "sleep", map[string]any{"ms": 2000}, nil)
				wantCode(t, err, ffi.ErrDeadlineExceeded, ffi.CodeDeadlineExceeded)
				if !errors.Is(err, context.DeadlineExceeded) {
					t.Fatalf("%v does not match context.DeadlineExceeded", err)
				}
				if d := time.Since(start); d >= 2*time.Second {
					t.Fatalf("the call returned after %v, not at its deadline", d)
				}
			})

			t.Run("ExpiredContext_ReturnsAtOnce", func(t *testing.T) {
				ctx, cancel := context.WithCancel(context.Background())
				cancel()
				err := stub.Call(ctx, "echo", nil, nil)
				wantCode(t, err, ffi.ErrCancelled, ffi.CodeCancelled)
			})

			t.Run("Cancel_ReturnsCancelled", func(t *testing.T) {
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				done := make(chan error, 1)
				go func() { done <- stub.Call(ctx, "sleep", map[string]any{"ms": 1501}, nil) }()
				svc.waitLine(t, "sleeping 1501") // the service runs it: now cancel
				start := time.Now()
				cancel()
				err := waitErr(t, done, "the cancelled call")
				wantCode(t, err, ffi.ErrCancelled, ffi.CodeCancelled)
				if !errors.Is(err, context.Canceled) {
					t.Fatalf("%v does not match context.Canceled", err)
				}
				if d := time.Since(start); d >= 2*time.Second {
					t.Fatalf("the cancelled call returned %v after the cancel", d)
				}
			})

			t.Run("Stream_ReadsEveryItemInOrder", func(t *testing.T) {
				s, err := stub.OpenStream(callCtx(t), "count", countParams{From: 10, N: 5, PayloadBytes: 3})
				if err != nil {
					t.Fatal(err)
				}
				defer s.Close()
				var got []uint64
				var item countItem
				for s.Next(&item) {
					if len(item.Payload) != 3 {
						t.Fatalf("item %d has %d payload bytes, want 3", item.Value, len(item.Payload))
					}
					got = append(got, item.Value)
				}
				if err := s.Err(); err != nil {
					t.Fatal(err)
				}
				if len(got) != 5 || got[0] != 10 || got[4] != 14 {
					t.Fatalf("got items %v, want 10..14", got)
				}
				if s.Next(&item) {
					t.Fatal("Next after the end returned true")
				}
			})

			t.Run("Stream_EndsWithTheServicesStatus", func(t *testing.T) {
				s, err := stub.OpenStream(callCtx(t), "count", countParams{N: 10, FailAt: 2})
				if err != nil {
					t.Fatal(err)
				}
				defer s.Close()
				n := 0
				for s.Next(nil) {
					n++
				}
				e := wantCode(t, s.Err(), ffi.ErrAborted, ffi.CodeAborted)
				if n != 2 || e.Source != "hms.test" {
					t.Fatalf("read %d items, then %#v; want 2 then ABORTED from hms.test", n, e)
				}
			})

			t.Run("Stream_CancelledByItsContext", func(t *testing.T) {
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				s, err := stub.OpenStream(ctx, "count", countParams{N: 1 << 40, DelayUs: 1000})
				if err != nil {
					t.Fatal(err)
				}
				defer s.Close()
				if !s.Next(nil) {
					t.Fatalf("no first item: %v", s.Err())
				}
				cancel()
				for s.Next(nil) {
				}
				wantCode(t, s.Err(), ffi.ErrCancelled, ffi.CodeCancelled)
			})

			t.Run("Stream_EndsAtItsContextsDeadline", func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
				defer cancel()
				start := time.Now()
				s, err := stub.OpenStream(ctx, "count", countParams{N: 1 << 40, DelayUs: 100000})
				if err != nil {
					t.Fatal(err)
				}
				defer s.Close()
				n := 0
				for s.Next(nil) {
					n++
				}
				wantCode(t, s.Err(), ffi.ErrDeadlineExceeded, ffi.CodeDeadlineExceeded)
				if d := time.Since(start); n == 0 || d > 5*time.Second {
					t.Fatalf("read %d items in %v", n, d)
				}
			})

			t.Run("OneWay_RunsTheCalls", func(t *testing.T) {
				for seq := 101; seq <= 103; seq++ {
					if err := stub.CallOneWay(callCtx(t), "note", map[string]any{"seq": seq}); err != nil {
						t.Fatal(err)
					}
				}
				eventually(t, "the three one-way calls", func() bool {
					var stats struct {
						Notes []string `json:"notes"`
					}
					if err := stub.Call(callCtx(t), "stats", nil, &stats); err != nil {
						t.Fatal(err)
					}
					return strings.Join(stats.Notes, ",") == "101,102,103"
				})
			})

			t.Run("Async_ManyInFlight", func(t *testing.T) {
				var pending []*ffi.Pending
				for i := uint64(0); i < 32; i++ {
					p, err := stub.CallAsync(callCtx(t), "echo", echoMsg{Seq: i})
					if err != nil {
						t.Fatal(err)
					}
					pending = append(pending, p)
				}
				for i, p := range pending {
					var out echoMsg
					if err := p.Wait(callCtx(t), &out); err != nil {
						t.Fatal(err)
					}
					if out.Seq != uint64(i) {
						t.Fatalf("call %d returned seq %d", i, out.Seq)
					}
				}
			})

			t.Run("Async_Cancel", func(t *testing.T) {
				p, err := stub.CallAsync(callCtx(t), "sleep", map[string]any{"ms": 1502})
				if err != nil {
					t.Fatal(err)
				}
				svc.waitLine(t, "sleeping 1502")
				p.Cancel()
				err = p.Wait(callCtx(t), nil)
				wantCode(t, err, ffi.ErrCancelled, ffi.CodeCancelled)
			})

			t.Run("Async_WaitGivesUpWithItsContext", func(t *testing.T) {
				p, err := stub.CallAsync(callCtx(t), "sleep", map[string]any{"ms": 500})
				if err != nil {
					t.Fatal(err)
				}
				ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
				defer cancel()
				wantCode(t, p.Wait(ctx, nil), ffi.ErrDeadlineExceeded, ffi.CodeDeadlineExceeded)
				if err := p.Wait(callCtx(t), nil); err != nil {
					t.Fatalf("the call itself failed: %v", err)
				}
			})

			t.Run("Contract_NamesTheMethods", func(t *testing.T) {
				raw, err := client.Contract(callCtx(t), "hms.test", "1.2.0")
				if err != nil {
					t.Fatal(err)
				}
				if !strings.Contains(string(raw), `"echo"`) || !strings.Contains(string(raw), `"count"`) {
					t.Fatalf("contract: %s", raw)
				}
			})

			t.Run("Bind_ReturnsNotFound_ForNoProvider", func(t *testing.T) {
				_, err := client.Bind(callCtx(t), "hms.no.such.service", "*")
				wantCode(t, err, ffi.ErrNotFound, ffi.CodeNotFound)
				_, err = client.Bind(callCtx(t), "hms.test", "^9")
				wantCode(t, err, ffi.ErrNotFound, ffi.CodeNotFound)
			})

			t.Run("ClosedStub_ReturnsFailedPrecondition", func(t *testing.T) {
				s := bind(t, client, "hms.test", "*")
				s.Close()
				s.Close()
				err := s.Call(callCtx(t), "echo", nil, nil)
				wantCode(t, err, ffi.ErrFailedPrecondition, ffi.CodeFailedPrecondition)
				if !errors.Is(err, ffi.ErrClosed) {
					t.Fatalf("%v does not match ErrClosed", err)
				}
			})
		})
	}
}

// TestCall_ReturnsUnavailable_WhenServiceIsKilledMidCall kills the C++ service with SIGKILL
// while it runs a call.
func TestCall_ReturnsUnavailable_WhenServiceIsKilledMidCall(t *testing.T) {
	for _, tr := range transports {
		tr := tr
		t.Run(tr.name, func(t *testing.T) {
			b := startBroker(t)
			svc := b.startTestService(t, tr.env, "--id", "hms.test.kill")
			client := b.connect(t, "go-caller", tr.transport)
			stub := bind(t, client, "hms.test.kill", "*")
			done := make(chan error, 1)
			go func() { done <- stub.Call(callCtx(t), "sleep", map[string]any{"ms": 5000}, nil) }()
			svc.waitLine(t, "sleeping 5000")
			svc.kill(syscall.SIGKILL)
			err := waitErr(t, done, "the call to the killed service")
			wantCode(t, err, ffi.ErrUnavailable, ffi.CodeUnavailable)
		})
	}
}

// TestCall_ReturnsUnavailable_WhenServiceIsKilledMidCall_NoDeadline is the same with a context
// that cannot be cancelled (the call takes the synchronous path).
func TestCall_ReturnsUnavailable_WhenServiceIsKilledMidCall_NoDeadline(t *testing.T) {
	b := startBroker(t)
	svc := b.startTestService(t, "", "--id", "hms.test.kill")
	client := b.connect(t, "go-caller", ffi.TransportAuto)
	stub := bind(t, client, "hms.test.kill", "*")
	done := make(chan error, 1)
	go func() { done <- stub.Call(context.Background(), "sleep", map[string]any{"ms": 5000}, nil) }()
	svc.waitLine(t, "sleeping 5000")
	svc.kill(syscall.SIGKILL)
	err := waitErr(t, done, "the call to the killed service")
	wantCode(t, err, ffi.ErrUnavailable, ffi.CodeUnavailable)
}

func TestConnect_ReturnsUnavailable_WithoutABroker(t *testing.T) {
	dir, err := os.MkdirTemp("", "hms-go-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	_, err = ffi.Connect(callCtx(t), ffi.Options{SocketPath: filepath.Join(dir, "none.sock")})
	e := wantCode(t, err, ffi.ErrUnavailable, ffi.CodeUnavailable)
	if !strings.Contains(e.Message, "none.sock") {
		t.Fatalf("the message does not name the socket: %q", e.Message)
	}
}

func TestCodes(t *testing.T) {
	if ffi.CodeNotFound.String() != "NOT_FOUND" || ffi.CodeUnauthenticated.String() != "UNAUTHENTICATED" ||
		ffi.Code(99).String() != "UNKNOWN" {
		t.Fatal("Code.String")
	}
	if ffi.ABIVersion()>>16 != 1 {
		t.Fatalf("ABI version %#x, want major 1", ffi.ABIVersion())
	}
	err := error(&ffi.Error{Code: ffi.CodeDeadlineExceeded, Message: "late"})
	if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) ||
		!errors.Is(err, ffi.ErrDeadlineExceeded) || errors.Is(err, ffi.ErrCancelled) {
		t.Fatal("errors.Is of DEADLINE_EXCEEDED")
	}
	if ffi.CodeOf(nil) != ffi.CodeOK || ffi.CodeOf(context.Canceled) != ffi.CodeCancelled ||
		ffi.CodeOf(errors.New("x")) != ffi.CodeUnknown {
		t.Fatal("CodeOf")
	}
}

// TestStub_ReturnsUnavailable_AfterItsClientClosed: the stubs, streams and subscriptions of a
// closed client answer UNAVAILABLE (the header's promise), and closing them afterwards is fine.
func TestStub_ReturnsUnavailable_AfterItsClientClosed(t *testing.T) {
	b := startBroker(t)
	b.startTestService(t, "")
	client := b.connect(t, "go-caller", ffi.TransportAuto)
	stub := bind(t, client, "hms.test", "*")
	if err := stub.Call(callCtx(t), "echo", nil, nil); err != nil {
		t.Fatal(err)
	}
	client.Close()
	client.Close()
	wantCode(t, stub.Call(context.Background(), "echo", nil, nil), ffi.ErrUnavailable, ffi.CodeUnavailable)
	wantCode(t, stub.Call(callCtx(t), "echo", nil, nil), ffi.ErrUnavailable, ffi.CodeUnavailable)
	_, err := client.Bind(callCtx(t), "hms.test", "*")
	wantCode(t, err, ffi.ErrFailedPrecondition, ffi.CodeFailedPrecondition)
	stub.Close()
}
