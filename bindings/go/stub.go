package ffi

/*
#include <stdlib.h>
#include "hms/ffi/hms_ffi.h"
*/
import "C"

import (
	"context"
	"encoding/json"
	"runtime"
	"sync"
	"time"
)

// Stub calls one bound service (one version of it) with JSON. It is safe for concurrent use;
// the library makes one synchronous call of a stub at a time (the others wait their turn), so
// bind a stub per goroutine, or use CallAsync, for calls in parallel.
type Stub struct {
	c       *C.hms_stub_t
	h       handle
	id      string
	version string
	methods *methodNames
}

// methodNames keeps the C copies of the method names a stub was called with, so that a call
// does not allocate one.
type methodNames struct {
	mu    sync.Mutex
	names map[string]*C.char
}

// get returns the C copy of name; a temporary one (free it) when the stub already keeps many: a
// caller inventing names must not grow the set without bound.
func (m *methodNames) get(name string) (s *C.char, temporary bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if s, ok := m.names[name]; ok {
		return s, false
	}
	s = C.CString(name)
	if len(m.names) >= 256 {
		return s, true
	}
	m.names[name] = s
	return s, false
}

func (m *methodNames) freeAll() {
	for k, s := range m.names {
		freeCString(s)
		delete(m.names, k)
	}
}

func newStub(c *C.hms_stub_t) *Stub {
	s := &Stub{
		c:       c,
		id:      C.GoString(C.hms_stub_service_id(c)),
		version: C.GoString(C.hms_stub_service_version(c)),
		methods: &methodNames{names: map[string]*C.char{}},
	}
	methods := s.methods
	s.h.init(func() {
		C.hms_stub_free(&c)
		methods.mu.Lock()
		methods.freeAll()
		methods.mu.Unlock()
	})
	runtime.SetFinalizer(s, (*Stub).Close)
	return s
}

// ServiceID is the id of the service bound ("hms.cdf.debate").
func (s *Stub) ServiceID() string { return s.id }

// Version is the exact version of the service bound ("2.1.0"): who answers the calls.
func (s *Stub) Version() string { return s.version }

// Close frees the stub once the calls, streams and pending calls made with it have ended.
// Close is idempotent; it always returns nil.
func (s *Stub) Close() error {
	if s.h.close() {
		runtime.SetFinalizer(s, nil)
	}
	return nil
}

// CallOption sets an option of one call.
type CallOption func(*callConfig)

type callConfig struct {
	traceparent string
}

// WithTraceparent carries a W3C traceparent ("00-<32 hex>-<16 hex>-<2 hex>") with the call.
func WithTraceparent(traceparent string) CallOption {
	return func(c *callConfig) { c.traceparent = traceparent }
}

// callOptions builds the C options of a call from ctx's deadline and opts; free releases them.
func callOptions(ctx context.Context, opts []CallOption) (o C.hms_call_options_t, free func(), err error) {
	if err := ctx.Err(); err != nil {
		return o, nil, contextError(err, "")
	}
	C.hms_call_options_init(&o)
	if dl, ok := ctx.Deadline(); ok {
		left := time.Until(dl)
		if left <= 0 {
			return o, nil, contextError(context.DeadlineExceeded, "")
		}
		o.timeout_ns = timeoutNs(left)
	}
	free = func() {}
	if len(opts) > 0 {
		var cfg callConfig
		for _, opt := range opts {
			opt(&cfg)
		}
		if cfg.traceparent != "" {
			tp := C.CString(cfg.traceparent)
			o.traceparent = tp
			free = func() { freeCString(tp) }
		}
	}
	return o, free, nil
}

// callError is the error of a call that ended with rc: a CANCELLED or DEADLINE_EXCEEDED
// reported once ctx ended is the context's doing, and takes its code (the library may see the
// cancel this binding made at ctx's deadline before the deadline itself) and wraps ctx.Err().
func callError(ctx context.Context, rc C.int, cerr *C.hms_error_t) error {
	e := errorFromC(rc, cerr)
	if e.Code == CodeCancelled || e.Code == CodeDeadlineExceeded {
		if ctxErr := ctx.Err(); ctxErr != nil {
			ce := contextError(ctxErr, e.Message)
			ce.Source, ce.Details = e.Source, e.Details
			return ce
		}
	}
	return e
}

// Call calls method with in as its params and decodes the results into out.
//
// in is a struct or map encoded with encoding/json, a json.RawMessage sent as it is, or nil
// ({}). out is a pointer to what encoding/json decodes into (a struct, a map, a
// *json.RawMessage), or nil to drop the results. The deadline is ctx's (else the client's
// default); cancelling ctx cancels the call.
//
// The error is an *Error: UNIMPLEMENTED for a method the contract lacks, INVALID_ARGUMENT for
// params that do not fit the schema (naming the field), DEADLINE_EXCEEDED or CANCELLED when ctx
// ended (matching context.DeadlineExceeded or context.Canceled too), UNAVAILABLE when the
// service went away, else the status the service answered with (Source is its id).
func (s *Stub) Call(ctx context.Context, method string, in, out any, opts ...CallOption) error {
	params, err := marshalJSON(in, CodeInvalidArgument, "the params of "+method)
	if err != nil {
		return err
	}
	o, freeOpts, err := callOptions(ctx, opts)
	if err != nil {
		return err
	}
	defer freeOpts()
	if !s.h.acquire() {
		return closedError("stub")
	}
	defer s.h.release()
	cm, temporary := s.methods.get(method)
	if temporary {
		defer freeCString(cm)
	}
	var cerr *C.hms_error_t
	if ctx.Done() == nil {
		// Nothing can cancel the call: one crossing.
		var result *C.char
		var n C.size_t
		if rc := C.hms_stub_call_json(s.c, cm, bytesPtr(params), C.size_t(len(params)), &o, &result,
			&n, &cerr); rc != 0 {
			return callError(ctx, rc, cerr)
		}
		return unmarshalJSON(takeBytes(result, n), out, "the results of "+method)
	}
	var f *C.hms_future_t
	if rc := C.hms_stub_call_async_json(s.c, cm, bytesPtr(params), C.size_t(len(params)), &o, &f,
		&cerr); rc != 0 {
		return callError(ctx, rc, cerr)
	}
	results, err := awaitFuture(ctx, nil, f, false, s.id+"."+method)
	C.hms_future_free(&f)
	if err != nil {
		return err
	}
	return unmarshalJSON(results, out, "the results of "+method)
}

// awaitFuture waits for the result of the call f (to what, "hms.test.echo") and takes it,
// cancelling the call when ctx ends or cancel is closed. With netpoll the goroutine waits in
// Go's poller on the future's descriptor (no OS thread held), else in C.
//
// It stops waiting at ctx's deadline even if the library has not completed the future by then
// (it then cancels the call and returns DEADLINE_EXCEEDED itself): a future is not always
// completed at its call's deadline (see README.md, "Known problems"). The caller frees f.
func awaitFuture(ctx context.Context, cancel <-chan struct{}, f *C.hms_future_t, netpoll bool,
	what string) ([]byte, error) {
	var stop, watcherDone chan struct{}
	if ctx.Done() != nil || cancel != nil {
		stop, watcherDone = make(chan struct{}), make(chan struct{})
		go func() {
			defer close(watcherDone)
			select {
			case <-ctx.Done():
				C.hms_future_cancel(f)
			case <-cancel:
				C.hms_future_cancel(f)
			case <-stop:
			}
		}()
	}
	deadline, _ := ctx.Deadline()
	var done, waited bool
	if netpoll {
		done, waited = waitReadable(int(C.hms_future_fd(f)),
			func() bool { return C.hms_future_poll(f) != 0 }, deadline)
	}
	if !waited {
		done = waitFuture(f, deadline)
	}
	if stop != nil {
		close(stop)
		<-watcherDone // the watcher may still be cancelling f: it must be done before f is freed
	}
	if !done {
		C.hms_future_cancel(f)
		return nil, &Error{Code: CodeDeadlineExceeded,
			Message: "no reply from " + what + " before the context's deadline",
			cause:   context.DeadlineExceeded}
	}
	var result *C.char
	var n C.size_t
	var cerr *C.hms_error_t
	if rc := C.hms_future_result_json(f, &result, &n, &cerr); rc != 0 {
		return nil, callError(ctx, rc, cerr)
	}
	return takeBytes(result, n), nil
}

// waitFuture waits in C until f has its result (true) or deadline (zero: none) passed (false).
func waitFuture(f *C.hms_future_t, deadline time.Time) bool {
	for {
		timeout := C.int64_t(-1)
		if !deadline.IsZero() {
			left := time.Until(deadline)
			if left <= 0 {
				return C.hms_future_poll(f) != 0
			}
			timeout = C.int64_t(left.Nanoseconds())
		}
		// BLOCKING up to the deadline; a cancel completes the future and ends the wait.
		if C.hms_future_wait(f, timeout) == 0 {
			return true
		}
	}
}

// CallOneWay sends a call to method that expects no reply: nil once it is in the channel (the
// service may not have run it yet). It waits while the service's ring is full, until ctx's
// deadline.
func (s *Stub) CallOneWay(ctx context.Context, method string, in any, opts ...CallOption) error {
	params, err := marshalJSON(in, CodeInvalidArgument, "the params of "+method)
	if err != nil {
		return err
	}
	o, freeOpts, err := callOptions(ctx, opts)
	if err != nil {
		return err
	}
	defer freeOpts()
	if !s.h.acquire() {
		return closedError("stub")
	}
	defer s.h.release()
	cm, temporary := s.methods.get(method)
	if temporary {
		defer freeCString(cm)
	}
	var cerr *C.hms_error_t
	if rc := C.hms_stub_call_oneway_json(s.c, cm, bytesPtr(params),
		C.size_t(len(params)), &o, &cerr); rc != 0 {
		return callError(ctx, rc, cerr)
	}
	return nil
}

// Pending is a call in flight, made by CallAsync.
type Pending struct {
	method     string
	done       chan struct{}
	cancel     chan struct{}
	cancelOnce sync.Once
	result     []byte // set before done is closed
	err        error  // set before done is closed
}

// CallAsync sends a call to method and returns at once (unless the service's ring is full) with
// the call in flight. ctx governs the call as in Call: its deadline is the call's, and
// cancelling it cancels the call. Waiting for the result holds no OS thread.
func (s *Stub) CallAsync(ctx context.Context, method string, in any, opts ...CallOption) (*Pending, error) {
	params, err := marshalJSON(in, CodeInvalidArgument, "the params of "+method)
	if err != nil {
		return nil, err
	}
	o, freeOpts, err := callOptions(ctx, opts)
	if err != nil {
		return nil, err
	}
	defer freeOpts()
	if !s.h.acquire() {
		return nil, closedError("stub")
	}
	cm, temporary := s.methods.get(method)
	if temporary {
		defer freeCString(cm)
	}
	var f *C.hms_future_t
	var cerr *C.hms_error_t
	if rc := C.hms_stub_call_async_json(s.c, cm, bytesPtr(params),
		C.size_t(len(params)), &o, &f, &cerr); rc != 0 {
		s.h.release()
		return nil, callError(ctx, rc, cerr)
	}
	p := &Pending{method: method, done: make(chan struct{}), cancel: make(chan struct{})}
	go func() {
		defer s.h.release() // the stub outlives its calls in flight
		p.result, p.err = awaitFuture(ctx, p.cancel, f, true, s.id+"."+method)
		C.hms_future_free(&f)
		close(p.done)
	}()
	return p, nil
}

// Done is closed when the result is there.
func (p *Pending) Done() <-chan struct{} { return p.done }

// Cancel cancels the call: it ends with CANCELLED unless the result came first.
func (p *Pending) Cancel() { p.cancelOnce.Do(func() { close(p.cancel) }) }

// Wait waits for the result and decodes it into out (as Call does; nil drops it). If ctx ends
// first, Wait returns ctx's error and the call goes on (Cancel stops it). Wait may be called
// more than once, from any goroutine.
func (p *Pending) Wait(ctx context.Context, out any) error {
	select {
	case <-p.done:
	case <-ctx.Done():
		return contextError(ctx.Err(), "")
	}
	if p.err != nil {
		return p.err
	}
	return unmarshalJSON(p.result, out, "the results of "+p.method)
}

// Result waits for the call (without a bound: select on Done for one) and returns its results
// as JSON, or its error.
func (p *Pending) Result() (json.RawMessage, error) {
	<-p.done
	return p.result, p.err
}
