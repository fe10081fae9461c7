package ffi_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"hmsffi.dev/ffi"
)

// goTestService serves test.capnp's TestService from Go and tells the test what its handlers saw.
type goTestService struct {
	sleepStarted chan int           // the ms of each sleep that started
	sleepEnded   chan error         // how each sleep ended: nil, or its context's error
	deadlineLeft chan time.Duration // what each sleep's context had left when it started
	mu           sync.Mutex
	notes        []uint64
	lastCaller   ffi.Caller // who called whoami last
}

func newGoTestService() *goTestService {
	return &goTestService{
		sleepStarted: make(chan int, 16),
		sleepEnded:   make(chan error, 16),
		deadlineLeft: make(chan time.Duration, 16),
	}
}

func (g *goTestService) handlers() map[string]ffi.HandlerFunc {
	return map[string]ffi.HandlerFunc{
		"echo": func(ctx context.Context, req *ffi.Request) (any, error) {
			var p echoMsg
			if err := req.Params(&p); err != nil {
				return nil, err
			}
			return p, nil
		},
		"whoami": func(ctx context.Context, req *ffi.Request) (any, error) {
			g.mu.Lock()
			g.lastCaller = req.Caller()
			g.mu.Unlock()
			return whoami{PID: uint32(os.Getpid()), Version: req.Caller().Name,
				CallerPID: uint32(req.Caller().PID)}, nil
		},
		"fail": func(ctx context.Context, req *ffi.Request) (any, error) {
			var p struct {
				Code    int    `json:"code"`
				Message string `json:"message"`
			}
			if err := req.Params(&p); err != nil {
				return nil, err
			}
			details := map[string]string{"resource_type": "policy", "resource_id": "p-42",
				"uid": strconv.Itoa(int(req.Caller().UID))}
			if tp := req.Traceparent(); tp != "" {
				details["traceparent"] = tp
			}
			return nil, &ffi.Error{Code: ffi.Code(p.Code), Message: p.Message, Details: details}
		},
		"blob": func(ctx context.Context, req *ffi.Request) (any, error) {
			return nil, errors.New("the disk is on fire")
		},
		"stats": func(ctx context.Context, req *ffi.Request) (any, error) {
			panic("stats exploded")
		},
		"sleep": func(ctx context.Context, req *ffi.Request) (any, error) {
			var p struct {
				Ms int `json:"ms"`
			}
			if err := req.Params(&p); err != nil {
				return nil, err
			}
			left := time.Duration(-1)
			if dl, ok := ctx.Deadline(); ok {
				left = time.Until(dl)
			}
			g.deadlineLeft <- left
			g.sleepStarted <- p.Ms
			select {
			case <-time.After(time.Duration(p.Ms) * time.Millisecond):
				g.sleepEnded <- nil
				return map[string]any{"timeLeftMs": left.Milliseconds()}, nil
			case <-ctx.Done():
				g.sleepEnded <- ctx.Err()
				return nil, ctx.Err()
			}
		},
		"note": func(ctx context.Context, req *ffi.Request) (any, error) {
			var p struct {
				Seq uint64 `json:"seq,string"`
			}
			if err := req.Params(&p); err != nil {
				return nil, err
			}
			g.mu.Lock()
			g.notes = append(g.notes, p.Seq)
			g.mu.Unlock()
			return nil, nil
		},
	}
}

func countHandler(ctx context.Context, req *ffi.Request, send func(any) error) error {
	var p countParams
	if err := req.Params(&p); err != nil {
		return err
	}
	for i := uint64(0); i < p.N; i++ {
		if p.FailAt != 0 && i == p.FailAt {
			return &ffi.Error{Code: ffi.CodeAborted, Message: "asked to fail",
				Details: map[string]string{"at": "2"}}
		}
		if err := send(countItem{Value: p.From + i, Payload: bytes.Repeat([]byte{byte(i)}, int(p.PayloadBytes))}); err != nil {
			return err
		}
		if p.DelayUs != 0 {
			time.Sleep(time.Duration(p.DelayUs) * time.Microsecond)
		}
	}
	return nil
}

func serveGoTestService(t *testing.T, c *ffi.Client, id string, g *goTestService) *ffi.Service {
	t.Helper()
	var errMu sync.Mutex
	var errs []error
	svc, err := c.Serve(id, "1.0.0", testSchema(t), "TestService", g.handlers(),
		ffi.WithStream("count", countHandler), ffi.WithConcurrency(8),
		ffi.WithErrorHandler(func(err error) {
			errMu.Lock()
			errs = append(errs, err)
			errMu.Unlock()
		}))
	if err != nil {
		t.Fatalf("Serve: %v", err)
	}
	t.Cleanup(func() {
		svc.Close()
		errMu.Lock()
		defer errMu.Unlock()
		for _, err := range errs {
			t.Logf("service error: %v", err)
		}
	})
	return svc
}

// TestGoService serves TestService from Go and calls it from Go through another client.
func TestGoService(t *testing.T) {
	for _, tr := range transports {
		tr := tr
		t.Run(tr.name, func(t *testing.T) {
			b := startBroker(t)
			server := b.connect(t, "go-server", tr.transport)
			g := newGoTestService()
			svc := serveGoTestService(t, server, "hms.gotest", g)
			if svc.ID() != "hms.gotest" || svc.Version() != "1.0.0" {
				t.Fatalf("service %s %s", svc.ID(), svc.Version())
			}
			client := b.connect(t, "go-caller", tr.transport)
			stub := bind(t, client, "hms.gotest", "^1")

			t.Run("Echo_ReturnsWhatWasSent", func(t *testing.T) {
				in := echoMsg{Seq: 1<<64 - 1, Payload: []byte{0, 1, 2, 255}}
				var out echoMsg
				if err := stub.Call(callCtx(t), "echo", in, &out); err != nil {
					t.Fatal(err)
				}
				if out.Seq != in.Seq || !bytes.Equal(out.Payload, in.Payload) {
					t.Fatalf("echo returned %+v, want %+v", out, in)
				}
			})

			t.Run("Whoami_SeesTheCaller", func(t *testing.T) {
				var w whoami
				if err := stub.Call(context.Background(), "whoami", nil, &w); err != nil {
					t.Fatal(err)
				}
				if int(w.CallerPID) != os.Getpid() || w.Version != "go-caller" {
					t.Fatalf("whoami returned %+v", w)
				}
				g.mu.Lock()
				c := g.lastCaller
				g.mu.Unlock()
				// The broker runs without an access policy: no token, no roles.
				if c.PID != os.Getpid() || c.UID != uint32(os.Getuid()) || c.GID != uint32(os.Getegid()) ||
					c.Name != "go-caller" || c.Authenticated || c.Subject != "" || c.Issuer != "" ||
					len(c.Roles) != 0 || c.Roles == nil || c.HasRole("doctor") || c.Host != "" {
					t.Fatalf("the handler saw the caller %+v", c)
				}
			})

			t.Run("ErrorReply_ReachesTheCaller_WithSourceAndDetails", func(t *testing.T) {
				err := stub.Call(callCtx(t), "fail", map[string]any{"code": 5, "message": "no policy p-42"}, nil)
				e := wantCode(t, err, ffi.ErrNotFound, ffi.CodeNotFound)
				if e.Message != "no policy p-42" || e.Source != "hms.gotest" ||
					e.Details["resource_type"] != "policy" || e.Details["resource_id"] != "p-42" {
					t.Fatalf("got %#v", e)
				}
				if e.Details["uid"] != strconv.Itoa(os.Getuid()) || e.Details["traceparent"] != "" {
					t.Fatalf("got %#v", e)
				}
				err = stub.Call(callCtx(t), "fail", map[string]any{"code": 3, "message": "bad"}, nil)
				wantCode(t, err, ffi.ErrInvalidArgument, ffi.CodeInvalidArgument)
			})

			t.Run("Traceparent_ReachesTheHandler", func(t *testing.T) {
				const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
				err := stub.Call(callCtx(t), "fail", map[string]any{"code": 5}, nil, ffi.WithTraceparent(tp))
				if e := wantCode(t, err, ffi.ErrNotFound, ffi.CodeNotFound); e.Details["traceparent"] != tp {
					t.Fatalf("the handler saw traceparent %q, want %q", e.Details["traceparent"], tp)
				}
			})

			t.Run("PlainError_ReturnsInternal", func(t *testing.T) {
				e := wantCode(t, stub.Call(callCtx(t), "blob", nil, nil), ffi.ErrInternal, ffi.CodeInternal)
				if !strings.Contains(e.Message, "the disk is on fire") || e.Source != "hms.gotest" {
					t.Fatalf("got %#v", e)
				}
			})

			t.Run("Panic_ReturnsInternal", func(t *testing.T) {
				e := wantCode(t, stub.Call(callCtx(t), "stats", nil, nil), ffi.ErrInternal, ffi.CodeInternal)
				if !strings.Contains(e.Message, "stats exploded") {
					t.Fatalf("got %#v", e)
				}
			})

			t.Run("MethodTheContractLacks_ReturnsUnimplemented", func(t *testing.T) {
				wantCode(t, stub.Call(callCtx(t), "whoami2", nil, nil), ffi.ErrUnimplemented, ffi.CodeUnimplemented)
			})

			t.Run("BadParams_ReturnInvalidArgument", func(t *testing.T) {
				wantCode(t, stub.Call(callCtx(t), "echo", map[string]any{"seq": "x"}, nil),
					ffi.ErrInvalidArgument, ffi.CodeInvalidArgument)
			})

			t.Run("Deadline_ReachesTheHandler", func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
				defer cancel()
				err := stub.Call(ctx, "sleep", map[string]any{"ms": 10000}, nil)
				wantCode(t, err, ffi.ErrDeadlineExceeded, ffi.CodeDeadlineExceeded)
				if left := <-g.deadlineLeft; left < 0 || left > 500*time.Millisecond {
					t.Fatalf("the handler's context had %v left, want a deadline within 500ms", left)
				}
				<-g.sleepStarted
				select {
				case err := <-g.sleepEnded:
					if err == nil {
						t.Fatal("the handler slept on past its deadline")
					}
				case <-time.After(callDeadline):
					t.Fatal("the handler's context did not end")
				}
			})

			t.Run("Cancel_ReachesTheHandler", func(t *testing.T) {
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				done := make(chan error, 1)
				go func() { done <- stub.Call(ctx, "sleep", map[string]any{"ms": 20000}, nil) }()
				<-g.deadlineLeft
				if ms := <-g.sleepStarted; ms != 20000 {
					t.Fatalf("a sleep of %d started", ms)
				}
				cancel()
				wantCode(t, waitErr(t, done, "the cancelled call"), ffi.ErrCancelled, ffi.CodeCancelled)
				select {
				case err := <-g.sleepEnded:
					if err == nil {
						t.Fatal("the handler slept on after the caller cancelled")
					}
				case <-time.After(callDeadline):
					t.Fatal("the caller's cancel did not reach the handler's context")
				}
			})

			t.Run("Stream_SendsEveryItem", func(t *testing.T) {
				s, err := stub.OpenStream(callCtx(t), "count", countParams{From: 5, N: 4, PayloadBytes: 2})
				if err != nil {
					t.Fatal(err)
				}
				defer s.Close()
				var got []uint64
				var item countItem
				for s.Next(&item) {
					got = append(got, item.Value)
				}
				if s.Err() != nil || len(got) != 4 || got[0] != 5 || got[3] != 8 {
					t.Fatalf("got %v, %v; want 5..8", got, s.Err())
				}
			})

			t.Run("Stream_EndsWithTheHandlersError", func(t *testing.T) {
				s, err := stub.OpenStream(callCtx(t), "count", countParams{N: 5, FailAt: 2})
				if err != nil {
					t.Fatal(err)
				}
				defer s.Close()
				n := 0
				for s.Next(nil) {
					n++
				}
				e := wantCode(t, s.Err(), ffi.ErrAborted, ffi.CodeAborted)
				if n != 2 || e.Details["at"] != "2" || e.Source != "hms.gotest" {
					t.Fatalf("read %d items, then %#v", n, e)
				}
			})

			t.Run("OneWay_RunsTheCalls", func(t *testing.T) {
				for seq := uint64(1); seq <= 3; seq++ {
					if err := stub.CallOneWay(callCtx(t), "note", map[string]any{"seq": seq}); err != nil {
						t.Fatal(err)
					}
				}
				eventually(t, "the three one-way calls", func() bool {
					g.mu.Lock()
					defer g.mu.Unlock()
					return len(g.notes) == 3
				})
			})

			t.Run("Async_ManyInFlight", func(t *testing.T) {
				var pending []*ffi.Pending
				for i := uint64(0); i < 16; i++ {
					p, err := stub.CallAsync(context.Background(), "echo", echoMsg{Seq: i})
					if err != nil {
						t.Fatal(err)
					}
					pending = append(pending, p)
				}
				for i, p := range pending {
					var out echoMsg
					if err := p.Wait(callCtx(t), &out); err != nil || out.Seq != uint64(i) {
						t.Fatalf("call %d: %+v, %v", i, out, err)
					}
				}
			})

			t.Run("CalledFromCpp_ByTheCLI", func(t *testing.T) {
				out, code := b.cli(t, tr.env, "call", "hms.gotest", "echo", `{"seq":"5","payload":"AAE="}`, "--compact")
				if code != 0 || !strings.Contains(out, `"seq":"5"`) || !strings.Contains(out, `"AAE="`) {
					t.Fatalf("hms-ffi call echo: exit %d, %s", code, out)
				}
				out, code = b.cli(t, tr.env, "call", "hms.gotest", "fail", `{"code":5,"message":"gone"}`)
				if code != 64+5 || !strings.Contains(out, "NOT_FOUND") || !strings.Contains(out, "hms.gotest") ||
					!strings.Contains(out, "p-42") {
					t.Fatalf("hms-ffi call fail: exit %d, %s", code, out)
				}
				out, code = b.cli(t, tr.env, "call", "hms.gotest", "count", `{"n":"3"}`)
				if code != 0 || strings.Count(out, `"value"`) != 3 {
					t.Fatalf("hms-ffi call count: exit %d, %s", code, out)
				}
			})
		})
	}
}

func TestServe_RefusesHandlersTheInterfaceLacks(t *testing.T) {
	b := startBroker(t)
	c := b.connect(t, "go-server", ffi.TransportAuto)
	_, err := c.Serve("hms.gotest.bad", "1.0.0", testSchema(t), "TestService",
		map[string]ffi.HandlerFunc{"nope": func(context.Context, *ffi.Request) (any, error) { return nil, nil }})
	e := wantCode(t, err, ffi.ErrInvalidArgument, ffi.CodeInvalidArgument)
	if !strings.Contains(e.Message, `"nope"`) {
		t.Fatalf("the message does not name the handler: %q", e.Message)
	}
	_, err = c.Serve("hms.gotest.bad", "1.0.0", testSchema(t), "TestService", nil,
		ffi.WithStream("nope", countHandler))
	wantCode(t, err, ffi.ErrInvalidArgument, ffi.CodeInvalidArgument)
	_, err = c.Serve("hms.gotest.bad", "1.0.0", testSchema(t), "TestService",
		map[string]ffi.HandlerFunc{"count": func(context.Context, *ffi.Request) (any, error) { return nil, nil }},
		ffi.WithStream("count", countHandler))
	wantCode(t, err, ffi.ErrInvalidArgument, ffi.CodeInvalidArgument)
	// The refused registrations left: a correct one takes the same id and version. Its methods
	// without a handler are answered UNIMPLEMENTED, by the Go service.
	svc, err := c.Serve("hms.gotest.bad", "1.0.0", testSchema(t), "TestService", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	stub := bind(t, c, "hms.gotest.bad", "*")
	if e := wantCode(t, stub.Call(callCtx(t), "echo", nil, nil), ffi.ErrUnimplemented,
		ffi.CodeUnimplemented); e.Source != "hms.gotest.bad" {
		t.Fatalf("got %#v", e)
	}
}

// TestGoService_HandlerIsCancelled_WhenTheCallerIsKilled kills a C++ caller (the CLI) with
// SIGKILL while the Go handler runs its call.
func TestGoService_HandlerIsCancelled_WhenTheCallerIsKilled(t *testing.T) {
	b := startBroker(t)
	server := b.connect(t, "go-server", ffi.TransportAuto)
	g := newGoTestService()
	serveGoTestService(t, server, "hms.gotest", g)
	caller := startProcess(t, "hms-ffi call", nil, cliBinary(), "--socket", b.sock, "call",
		"hms.gotest", "sleep", `{"ms":20000}`)
	select {
	case <-g.sleepStarted:
	case <-time.After(callDeadline):
		t.Fatal("the call did not reach the handler")
	}
	caller.kill(syscall.SIGKILL)
	select {
	case err := <-g.sleepEnded:
		if err == nil {
			t.Fatal("the handler slept on after its caller was killed")
		}
	case <-time.After(callDeadline):
		t.Fatal("the caller's death did not reach the handler's context")
	}
}

func TestServe_ReturnsAnError_ForAnUnknownInterfaceOrSchema(t *testing.T) {
	b := startBroker(t)
	c := b.connect(t, "go-server", ffi.TransportAuto)
	_, err := c.Serve("hms.gotest.x", "1.0.0", testSchema(t), "NoSuchInterface", nil)
	if ffi.CodeOf(err) == ffi.CodeOK {
		t.Fatal("served an interface the schema lacks")
	}
	_, err = c.Serve("hms.gotest.x", "1.0.0", filepath.Join(t.TempDir(), "none.capnp"), "TestService", nil)
	if ffi.CodeOf(err) == ffi.CodeOK {
		t.Fatal("served from a schema file that does not exist")
	}
	_, err = c.Serve("hms.gotest.x", "not-a-version", testSchema(t), "TestService", nil)
	wantCode(t, err, ffi.ErrInvalidArgument, ffi.CodeInvalidArgument)
}

func TestServe_ReturnsAlreadyExists_ForAServedVersion(t *testing.T) {
	b := startBroker(t)
	c := b.connect(t, "go-server", ffi.TransportAuto)
	serveGoTestService(t, c, "hms.gotest.twice", newGoTestService())
	other := b.connect(t, "go-server-2", ffi.TransportAuto)
	_, err := other.Serve("hms.gotest.twice", "1.0.0", testSchema(t), "TestService", nil)
	wantCode(t, err, ffi.ErrAlreadyExists, ffi.CodeAlreadyExists)
}

func TestServiceClose_TakesItOutOfTheRegistry(t *testing.T) {
	b := startBroker(t)
	server := b.connect(t, "go-server", ffi.TransportAuto)
	svc := serveGoTestService(t, server, "hms.gotest.close", newGoTestService())
	client := b.connect(t, "go-caller", ffi.TransportAuto)
	stub := bind(t, client, "hms.gotest.close", "*")
	if err := stub.Call(callCtx(t), "echo", nil, nil); err != nil {
		t.Fatal(err)
	}
	svc.Close()
	svc.Close()
	err := stub.Call(callCtx(t), "echo", nil, nil)
	if code := ffi.CodeOf(err); code != ffi.CodeUnavailable && code != ffi.CodeNotFound {
		t.Fatalf("a call to a closed service returned %v, want UNAVAILABLE or NOT_FOUND", err)
	}
	eventually(t, "the service leaving the registry", func() bool {
		_, err := client.Bind(callCtx(t), "hms.gotest.close", "*")
		return errors.Is(err, ffi.ErrNotFound)
	})
}

// TestServiceClose_EndsTheHandlersStillRunning closes a service while a handler waits on its
// context: Close cancels it and returns.
func TestServiceClose_EndsTheHandlersStillRunning(t *testing.T) {
	b := startBroker(t)
	server := b.connect(t, "go-server", ffi.TransportAuto)
	g := newGoTestService()
	svc := serveGoTestService(t, server, "hms.gotest.busy", g)
	client := b.connect(t, "go-caller", ffi.TransportAuto)
	stub := bind(t, client, "hms.gotest.busy", "*")
	done := make(chan error, 1)
	go func() { done <- stub.Call(context.Background(), "sleep", map[string]any{"ms": 60000}, nil) }()
	<-g.sleepStarted
	closed := make(chan error, 1)
	go func() { closed <- svc.Close() }()
	waitErr(t, closed, "Service.Close")
	if err := <-g.sleepEnded; !errors.Is(err, context.Canceled) {
		t.Fatalf("the handler ended with %v, want context.Canceled", err)
	}
	if err := waitErr(t, done, "the call"); ffi.CodeOf(err) == ffi.CodeOK {
		t.Fatal("the call succeeded")
	}
}

func TestService_StopsWhenItsClientCloses(t *testing.T) {
	b := startBroker(t)
	server := b.connect(t, "go-server", ffi.TransportAuto)
	serveGoTestService(t, server, "hms.gotest.owner", newGoTestService())
	client := b.connect(t, "go-caller", ffi.TransportAuto)
	bind(t, client, "hms.gotest.owner", "*")
	server.Close()
	eventually(t, "the service leaving the registry", func() bool {
		_, err := client.Bind(callCtx(t), "hms.gotest.owner", "*")
		return errors.Is(err, ffi.ErrNotFound)
	})
}

// TestCppServiceAndGoServiceSideBySide binds the C++ and the Go TestService from one client.
func TestCppServiceAndGoServiceSideBySide(t *testing.T) {
	b := startBroker(t)
	b.startTestService(t, "")
	server := b.connect(t, "go-server", ffi.TransportAuto)
	serveGoTestService(t, server, "hms.gotest", newGoTestService())
	client := b.connect(t, "go-caller", ffi.TransportAuto)
	for _, id := range []string{"hms.test", "hms.gotest"} {
		stub := bind(t, client, id, "*")
		var out echoMsg
		if err := stub.Call(callCtx(t), "echo", echoMsg{Seq: 42}, &out); err != nil || out.Seq != 42 {
			t.Fatalf("%s: %+v, %v", id, out, err)
		}
	}
}
