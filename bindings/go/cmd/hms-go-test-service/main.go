// Command hms-go-test-service serves tests/support/test.capnp's TestService from Go, as the C++
// hms-ffi-test-service does, for the cross-language tests (a C++, Rust or Go caller calling a Go
// service, and killing it mid-call).
//
//	hms-go-test-service [--socket PATH] [--id hms.test.go] [--version 1.0.0]
//	                    [--schema tests/support/test.capnp] [--transport auto|shm|socket]
//
// It prints "ready pid=<pid>" once registered and "sleeping <ms>" when a sleep starts, and
// serves until SIGTERM or SIGINT.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"hmsffi.dev/ffi"
)

type echo struct {
	Seq     uint64 `json:"seq,string"`
	Payload []byte `json:"payload"`
}

type countParams struct {
	From         uint64 `json:"from,string"`
	N            uint64 `json:"n,string"`
	PayloadBytes uint32 `json:"payloadBytes"`
	DelayUs      uint32 `json:"delayUs"`
	FailAt       uint64 `json:"failAt,string"`
}

type countItem struct {
	Value   uint64 `json:"value,string"`
	Payload []byte `json:"payload"`
}

// service is what the handlers remember across calls, as the C++ service does.
type service struct {
	version          string
	calls            atomic.Uint64
	mu               sync.Mutex
	notes            []uint64
	streamsCancelled atomic.Uint64
	streamsFinished  atomic.Uint64
}

func defaultSchema() string {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "tests/support/test.capnp"
	}
	return filepath.Join(filepath.Dir(file), "..", "..", "..", "..", "tests", "support", "test.capnp")
}

func main() {
	socket := flag.String("socket", "", "the broker's socket")
	id := flag.String("id", "hms.test.go", "the service id")
	version := flag.String("version", "1.0.0", "the version served")
	schema := flag.String("schema", defaultSchema(), "tests/support/test.capnp")
	transport := flag.String("transport", "auto", "auto, shm or socket")
	flag.Parse()

	opts := ffi.Options{SocketPath: *socket, Name: "go-test-service"}
	switch *transport {
	case "auto":
	case "shm":
		opts.Transport = ffi.TransportSharedMemory
	case "socket":
		opts.Transport = ffi.TransportSocket
	default:
		fmt.Fprintf(os.Stderr, "hms-go-test-service: unknown transport %q\n", *transport)
		os.Exit(2)
	}
	client, err := ffi.Connect(context.Background(), opts)
	if err != nil {
		fmt.Fprintf(os.Stderr, "hms-go-test-service: %v\n", err)
		os.Exit(1)
	}
	defer client.Close()
	s := &service{version: *version}
	svc, err := client.Serve(*id, *version, *schema, "TestService", s.handlers(),
		ffi.WithStream("count", s.count), ffi.WithConcurrency(8))
	if err != nil {
		fmt.Fprintf(os.Stderr, "hms-go-test-service: %v\n", err)
		os.Exit(3)
	}
	defer svc.Close()
	fmt.Printf("ready pid=%d\n", os.Getpid())

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	<-stop
}

func (s *service) handlers() map[string]ffi.HandlerFunc {
	return map[string]ffi.HandlerFunc{
		"echo": func(ctx context.Context, req *ffi.Request) (any, error) {
			var p echo
			if err := req.Params(&p); err != nil {
				return nil, err
			}
			return p, nil
		},
		"sleep": func(ctx context.Context, req *ffi.Request) (any, error) {
			var p struct {
				Ms uint32 `json:"ms"`
			}
			if err := req.Params(&p); err != nil {
				return nil, err
			}
			calls := s.calls.Add(1)
			var left time.Duration
			if dl, ok := ctx.Deadline(); ok {
				left = time.Until(dl)
			}
			fmt.Printf("sleeping %d\n", p.Ms)
			select {
			case <-time.After(time.Duration(p.Ms) * time.Millisecond):
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			return map[string]any{"timeLeftMs": uint64(left.Milliseconds()), "calls": calls}, nil
		},
		"fail": func(ctx context.Context, req *ffi.Request) (any, error) {
			var p struct {
				Code    int    `json:"code"`
				Message string `json:"message"`
			}
			if err := req.Params(&p); err != nil {
				return nil, err
			}
			if p.Code == 9999 {
				panic("handler exploded")
			}
			return nil, &ffi.Error{Code: ffi.Code(p.Code), Message: p.Message,
				Details: map[string]string{"hint": "asked to fail"}}
		},
		"blob": func(ctx context.Context, req *ffi.Request) (any, error) {
			var p struct {
				Size uint32 `json:"size"`
			}
			if err := req.Params(&p); err != nil {
				return nil, err
			}
			d := make([]byte, p.Size)
			for i := range d {
				d[i] = byte(i*31 + 7)
			}
			return map[string]any{"data": d}, nil
		},
		"whoami": func(ctx context.Context, req *ffi.Request) (any, error) {
			return map[string]any{"pid": os.Getpid(), "version": s.version,
				"callerPid": req.Caller().PID}, nil
		},
		"note": func(ctx context.Context, req *ffi.Request) (any, error) {
			var p struct {
				Seq uint64 `json:"seq,string"`
			}
			if err := req.Params(&p); err != nil {
				return nil, err
			}
			s.mu.Lock()
			s.notes = append(s.notes, p.Seq)
			s.mu.Unlock()
			return nil, nil
		},
		"stats": func(ctx context.Context, req *ffi.Request) (any, error) {
			s.mu.Lock()
			notes := make([]string, len(s.notes))
			for i, n := range s.notes {
				notes[i] = fmt.Sprint(n)
			}
			s.mu.Unlock()
			return map[string]any{"notes": notes, "streamsCancelled": fmt.Sprint(s.streamsCancelled.Load()),
				"streamsFinished": fmt.Sprint(s.streamsFinished.Load())}, nil
		},
	}
}

// count is the server stream: n items, value = from + i, a payload of payloadBytes derived from
// the value, delayUs between items; failAt (if not 0) ends it with ABORTED at that item.
func (s *service) count(ctx context.Context, req *ffi.Request, send func(any) error) error {
	var p countParams
	if err := req.Params(&p); err != nil {
		return err
	}
	for i := uint64(0); i < p.N; i++ {
		if p.FailAt != 0 && i == p.FailAt {
			return &ffi.Error{Code: ffi.CodeAborted, Message: fmt.Sprintf("asked to fail at %d", i)}
		}
		value := p.From + i
		payload := bytes.Repeat([]byte{0}, int(p.PayloadBytes))
		for k := range payload {
			payload[k] = byte(value*7 + uint64(k))
		}
		if err := send(countItem{Value: value, Payload: payload}); err != nil {
			if ctx.Err() != nil {
				s.streamsCancelled.Add(1)
			}
			return err
		}
		if p.DelayUs != 0 {
			select {
			case <-time.After(time.Duration(p.DelayUs) * time.Microsecond):
			case <-ctx.Done():
				s.streamsCancelled.Add(1)
				return ctx.Err()
			}
		}
	}
	s.streamsFinished.Add(1)
	return nil
}
