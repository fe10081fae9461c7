package ffi

/*
#include <stdlib.h>
#include "hms/ffi/hms_ffi.h"
*/
import "C"

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"runtime/debug"
	"sort"
	"strings"
	"sync"
	"time"
	"unsafe"
)

// HandlerFunc answers one request of a method: it returns the results (encoded with
// encoding/json as the method's results struct; nil is {}) or an error. An *Error (also wrapped)
// answers with its code, message and details; context.Canceled and context.DeadlineExceeded
// with CANCELLED and DEADLINE_EXCEEDED; any other error with INTERNAL and its text; a panic with
// INTERNAL.
//
// ctx carries the caller's deadline and is cancelled when the caller cancels the call or goes
// away (the answer is not read then), and when the Service is closed.
type HandlerFunc func(ctx context.Context, req *Request) (any, error)

// StreamHandlerFunc serves a server-stream method: it sends the items with send (each encoded
// as the method's results struct; send waits while the caller's ring is full and fails once
// the caller stopped reading) and returns nil to finish the stream, or an error to end it with
// that status (mapped as for HandlerFunc). send must not be called after it returned.
type StreamHandlerFunc func(ctx context.Context, req *Request, send func(item any) error) error

// Caller is who made a request: the identity of the calling process as the kernel told the
// broker, its client name, and the claims of the token the broker verified (docs/security.md).
// The caller cannot alter any of it. Without an access policy on the broker, Authenticated is
// false, Subject and Issuer are "" and Roles is empty.
type Caller struct {
	PID    int
	UID    uint32
	GID    uint32
	Groups []uint32 // the supplementary groups
	Name   string   // the client name the caller connected with

	Authenticated bool     // the broker verified a token of the caller
	Subject       string   // the token's subject ("" when not authenticated)
	Issuer        string   // the token's issuer ("" when not authenticated)
	Roles         []string // the roles the broker's policy gives the caller (empty: no policy)

	// Host is the name of the caller's host when a gateway brought the call in from another
	// host (docs/gateway.md), as that link's TLS certificate names it; its UID, PID, Name,
	// Subject and Issuer are then as that host knows them. "" for a caller of this host.
	Host string
}

// HasRole reports whether the broker's policy gives the caller role.
func (c Caller) HasRole(role string) bool {
	for _, r := range c.Roles {
		if r == role {
			return true
		}
	}
	return false
}

// callerJSON is hms_request_caller_json's object.
type callerJSON struct {
	GID           uint32   `json:"gid"`
	Groups        []uint32 `json:"groups"`
	Authenticated bool     `json:"authenticated"`
	Subject       string   `json:"subject"`
	Issuer        string   `json:"issuer"`
	Roles         []string `json:"roles"`
	Host          string   `json:"host"`
}

// decodeCaller fills c's fields besides PID, UID and Name from hms_request_caller_json's text.
// Text that does not decode leaves them unset: not authenticated, no roles.
func decodeCaller(c *Caller, text string) {
	var j callerJSON
	if err := json.Unmarshal([]byte(text), &j); err != nil {
		return
	}
	c.GID, c.Groups = j.GID, j.Groups
	c.Authenticated, c.Subject, c.Issuer = j.Authenticated, j.Subject, j.Issuer
	c.Roles = j.Roles
	c.Host = j.Host
	if c.Groups == nil {
		c.Groups = []uint32{}
	}
	if c.Roles == nil {
		c.Roles = []string{}
	}
}

// Request is one call to a Service, handed to its handler.
type Request struct {
	method      string
	stream      bool
	params      json.RawMessage
	caller      Caller
	callerJSON  string // hms_request_caller_json, decoded into caller at the first Caller()
	callerOnce  sync.Once
	traceparent string

	mu sync.RWMutex
	c  *C.hms_request_t // nil once answered; the handle is freed under mu's write lock
}

// Method is the name of the method called.
func (r *Request) Method() string { return r.method }

// IsStream reports whether the method is a server stream.
func (r *Request) IsStream() bool { return r.stream }

// Params decodes the params into v with encoding/json. The error is an INVALID_ARGUMENT *Error,
// fit to be returned by the handler.
func (r *Request) Params(v any) error {
	if err := json.Unmarshal(r.params, v); err != nil {
		return encodingError(CodeInvalidArgument, "decoding the params of "+r.method, err)
	}
	return nil
}

// RawParams returns the params as JSON.
func (r *Request) RawParams() json.RawMessage { return r.params }

// Caller returns who made the request. Its slices are the caller's own copies.
func (r *Request) Caller() Caller {
	r.callerOnce.Do(func() { decodeCaller(&r.caller, r.callerJSON) })
	c := r.caller
	c.Groups = append([]uint32{}, c.Groups...)
	c.Roles = append([]string{}, c.Roles...)
	return c
}

// CallerJSON returns who made the request as the library gives it (hms_request_caller_json):
// {"uid":1001,"gid":1001,"pid":4242,"groups":[1001,27],"name":"hms-api",
// "authenticated":true,"subject":"alice","issuer":"hms-auth","roles":["doctor"]}.
func (r *Request) CallerJSON() string { return r.callerJSON }

// Traceparent is the W3C traceparent the caller sent, or "".
func (r *Request) Traceparent() string { return r.traceparent }

// cancelled reports whether the caller cancelled, its deadline passed or it went away.
func (r *Request) cancelled() bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.c != nil && C.hms_request_cancelled(r.c) != 0
}

// deadlinePassed reports whether the call's deadline has passed.
func (r *Request) deadlinePassed() bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.c != nil && C.hms_request_time_left_ns(r.c) == 0
}

// take hands the request's C handle to the one who answers it, once.
func (r *Request) take() *C.hms_request_t {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.c
	r.c = nil
	return c
}

// ServiceOption sets an option of Client.Serve.
type ServiceOption func(*serviceConfig)

type serviceConfig struct {
	streams      map[string]StreamHandlerFunc
	displayName  string
	description  string
	ringBytes    uint32
	concurrency  uint32
	importPath   string
	errorHandler func(error)
}

// WithStream serves method, a server-stream method of the interface, with h.
func WithStream(method string, h StreamHandlerFunc) ServiceOption {
	return func(c *serviceConfig) { c.streams[method] = h }
}

// WithDisplayName sets the name the registry shows for the service.
func WithDisplayName(name string) ServiceOption {
	return func(c *serviceConfig) { c.displayName = name }
}

// WithDescription sets the description the registry shows for the service.
func WithDescription(text string) ServiceOption {
	return func(c *serviceConfig) { c.description = text }
}

// WithRingBytes sets the size of each ring of a channel to the service (default 1 MiB); a
// request or reply may take a little under half of it.
func WithRingBytes(n uint32) ServiceOption {
	return func(c *serviceConfig) { c.ringBytes = n }
}

// WithConcurrency sets how many requests run at once, each on a goroutine (default 16); more
// wait in their channels.
func WithConcurrency(n uint32) ServiceOption {
	return func(c *serviceConfig) { c.concurrency = n }
}

// WithImportPath sets the directories searched for the schema file's imports (default
// /usr/include and /usr/local/include, where /capnp/c++.capnp lives).
func WithImportPath(dirs ...string) ServiceOption {
	return func(c *serviceConfig) { c.importPath = strings.Join(dirs, ":") }
}

// WithErrorHandler sets a function called (from the service's goroutines) with the errors no
// caller can see: an answer the library refused (the caller got INTERNAL), a failure to take
// requests. By default they are dropped.
func WithErrorHandler(f func(error)) ServiceOption {
	return func(c *serviceConfig) { c.errorHandler = f }
}

// Service is a service registered and served by a Client. It serves until Close, or until its
// client is closed.
type Service struct {
	c        *C.hms_service_t
	id       string
	version  string
	handlers map[string]HandlerFunc
	streams  map[string]StreamHandlerFunc
	onError  func(error)

	base       context.Context // the parent of every handler's context; cancelled by Close
	cancelBase context.CancelFunc
	closing    chan struct{}
	loopDone   chan struct{}
	inflight   sync.WaitGroup
	closeOnce  sync.Once
}

// pollInterval bounds each wait for a request, so that the loop notices Close even if the
// library's stop did not wake it.
const pollInterval = 200 * time.Millisecond

// cancelPollInterval is how often a running handler's request is checked for cancellation.
const cancelPollInterval = 20 * time.Millisecond

// Serve registers serviceID at version ("2.1.0") with the contract of the interface
// interfaceName ("DebateService") in the Cap'n Proto schema file schemaFile, and serves it:
// handlers maps method names ("evaluatePolicy") to their handlers; WithStream adds the
// server-stream methods (a method is a stream because it is served as one). A request of a
// method with no handler is answered UNIMPLEMENTED.
//
// The broker checks the contract: FAILED_PRECONDITION for an incompatible change of one it
// knows, ALREADY_EXISTS when a live client provides that id and version. A handler or WithStream
// naming a method the interface lacks, or a method given both, is INVALID_ARGUMENT.
func (c *Client) Serve(serviceID, version, schemaFile, interfaceName string,
	handlers map[string]HandlerFunc, opts ...ServiceOption) (*Service, error) {
	cfg := serviceConfig{streams: map[string]StreamHandlerFunc{}}
	for _, opt := range opts {
		opt(&cfg)
	}
	if !c.h.acquire() {
		return nil, closedError("client")
	}
	defer c.h.release()

	var o C.hms_service_options_t
	C.hms_service_options_init(&o)
	o.display_name = cString(cfg.displayName, true)
	defer freeCString(o.display_name)
	o.description = cString(cfg.description, true)
	defer freeCString(o.description)
	o.import_path = cString(cfg.importPath, true)
	defer freeCString(o.import_path)
	if cfg.ringBytes != 0 {
		o.ring_bytes = C.uint32_t(cfg.ringBytes)
	}
	if cfg.concurrency != 0 {
		o.concurrency = C.uint32_t(cfg.concurrency)
	}
	streams := make([]string, 0, len(cfg.streams))
	for m := range cfg.streams {
		if _, ok := handlers[m]; ok {
			return nil, &Error{Code: CodeInvalidArgument,
				Message: fmt.Sprintf("ffi: serving %s %s: %q has both a handler and a stream handler",
					serviceID, version, m)}
		}
		streams = append(streams, m)
	}
	sort.Strings(streams)
	o.stream_methods = cString(strings.Join(streams, ","), true)
	defer freeCString(o.stream_methods)
	id, v := C.CString(serviceID), C.CString(version)
	defer freeCString(id)
	defer freeCString(v)
	schema, iface := C.CString(schemaFile), C.CString(interfaceName)
	defer freeCString(schema)
	defer freeCString(iface)
	var svc *C.hms_service_t
	var cerr *C.hms_error_t
	if rc := C.hms_client_serve(c.c, id, v, schema, iface, &o, &svc, &cerr); rc != 0 {
		return nil, errorFromC(rc, cerr)
	}
	s := &Service{
		c:        svc,
		id:       serviceID,
		version:  version,
		handlers: make(map[string]HandlerFunc, len(handlers)),
		streams:  cfg.streams,
		onError:  cfg.errorHandler,
		closing:  make(chan struct{}),
		loopDone: make(chan struct{}),
	}
	for m, h := range handlers {
		s.handlers[m] = h
	}
	s.base, s.cancelBase = context.WithCancel(context.Background())
	if err := s.checkHandlers(c.contractMethods(serviceID, version)); err != nil {
		close(s.loopDone)
		s.Close()
		return nil, err
	}
	go s.loop()
	return s, nil
}

// contractMethods returns the names of the methods of a contract, or nil if it could not be
// read.
func (c *Client) contractMethods(serviceID, version string) map[string]bool {
	raw, err := c.Contract(context.Background(), serviceID, version)
	if err != nil {
		return nil
	}
	var contract struct {
		Methods []struct {
			Name string `json:"name"`
		} `json:"methods"`
	}
	if json.Unmarshal(raw, &contract) != nil || len(contract.Methods) == 0 {
		return nil
	}
	methods := make(map[string]bool, len(contract.Methods))
	for _, m := range contract.Methods {
		methods[m.Name] = true
	}
	return methods
}

// checkHandlers refuses a handler for a method the interface lacks (the library checks the
// stream methods itself).
func (s *Service) checkHandlers(methods map[string]bool) error {
	if methods == nil {
		return nil // nothing to check against; requests will say it
	}
	var problems []string
	for m := range s.handlers {
		if !methods[m] {
			problems = append(problems, fmt.Sprintf("a handler for %q, which the interface lacks", m))
		}
	}
	if len(problems) == 0 {
		return nil
	}
	sort.Strings(problems)
	return &Error{Code: CodeInvalidArgument,
		Message: fmt.Sprintf("ffi: serving %s %s: %s", s.id, s.version, strings.Join(problems, "; "))}
}

// ID is the service's id.
func (s *Service) ID() string { return s.id }

// Version is the version the service registered.
func (s *Service) Version() string { return s.version }

// Close cancels the contexts of the handlers still running, takes the service out of the
// registry, waits for those handlers to return and frees the service. The callers of requests
// not answered by then get CANCELLED or UNAVAILABLE. Close is idempotent; it always returns nil.
func (s *Service) Close() error {
	s.closeOnce.Do(func() {
		close(s.closing)
		// The handlers first: were hms_service_stop to wait for the answers of the requests
		// handed out (its workers wait for them), it would wait for the handlers.
		s.cancelBase()
		C.hms_service_stop(s.c)
		<-s.loopDone
		s.inflight.Wait()
		C.hms_service_free(&s.c)
	})
	return nil
}

func (s *Service) report(err error) {
	if s.onError != nil {
		s.onError(err)
	}
}

func (s *Service) isClosing() bool {
	select {
	case <-s.closing:
		return true
	default:
		return false
	}
}

// loop takes the requests, each to a goroutine of its own, until the service stops.
func (s *Service) loop() {
	defer func() {
		close(s.loopDone)
		if !s.isClosing() {
			go s.Close() // stopped from outside (its client closed): free it
		}
	}()
	for !s.isClosing() {
		var req *C.hms_request_t
		var cerr *C.hms_error_t
		rc := C.hms_service_next(s.c, C.int64_t(pollInterval), &req, &cerr)
		switch {
		case rc == 0:
			s.inflight.Add(1)
			go s.serve(req)
		case Code(rc) == CodeDeadlineExceeded:
			C.hms_error_free(&cerr)
		case Code(rc) == CodeUnavailable:
			C.hms_error_free(&cerr)
			return
		default:
			s.report(fmt.Errorf("ffi: %s %s: taking a request: %w", s.id, s.version, errorFromC(rc, cerr)))
			select {
			case <-s.closing:
			case <-time.After(pollInterval):
			}
		}
	}
}

// serve runs the handler of one request and answers it.
func (s *Service) serve(c *C.hms_request_t) {
	defer s.inflight.Done()
	r := &Request{
		c:      c,
		method: goString(C.hms_request_method(c)),
		stream: C.hms_request_is_stream(c) != 0,
		caller: Caller{
			PID:  int(C.hms_request_caller_pid(c)),
			UID:  uint32(C.hms_request_caller_uid(c)),
			Name: goString(C.hms_request_caller_name(c)),
		},
		callerJSON:  goString(C.hms_request_caller_json(c)),
		traceparent: goString(C.hms_request_traceparent(c)),
	}
	var ctx context.Context
	var cancel context.CancelFunc
	if left := int64(C.hms_request_time_left_ns(c)); left != math.MaxInt64 {
		ctx, cancel = context.WithTimeout(s.base, time.Duration(left))
	} else {
		ctx, cancel = context.WithCancel(s.base)
	}
	defer cancel()

	var params *C.char
	var n C.size_t
	var cerr *C.hms_error_t
	if rc := C.hms_request_params_json(c, &params, &n, &cerr); rc != 0 {
		s.replyError(r, errorFromC(rc, cerr))
		return
	}
	r.params = takeBytes(params, n)

	watchDone := make(chan struct{})
	defer close(watchDone)
	go watchRequest(r, cancel, watchDone)

	if r.stream {
		h := s.streams[r.method]
		if h == nil {
			s.replyError(r, s.unimplemented(r))
			return
		}
		send := func(item any) error { return s.sendItem(r, item) }
		if err := runStreamHandler(ctx, h, r, send); err != nil {
			s.replyError(r, err)
			return
		}
		s.replyJSON(r, []byte("{}")) // finishes the stream
		return
	}
	h := s.handlers[r.method]
	if h == nil {
		s.replyError(r, s.unimplemented(r))
		return
	}
	res, err := runHandler(ctx, h, r)
	if err != nil {
		s.replyError(r, err)
		return
	}
	b, err := marshalJSON(res, CodeInternal, "the results of "+r.method)
	if err != nil {
		s.replyError(r, err)
		return
	}
	s.replyJSON(r, b)
}

// watchRequest cancels a handler's context once the caller cancelled, its deadline passed or
// it went away; hms_request_cancelled is cheap (an atomic load), so it is polled.
func watchRequest(r *Request, cancel context.CancelFunc, done <-chan struct{}) {
	t := time.NewTicker(cancelPollInterval)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
			if r.cancelled() {
				// Past its deadline the context ends by its own timer, a moment later, with
				// context.DeadlineExceeded: the handler then answers what the caller sees.
				if !r.deadlinePassed() {
					cancel()
				}
				return
			}
		}
	}
}

func (s *Service) unimplemented(r *Request) error {
	kind := "method"
	if r.stream {
		kind = "stream method"
	}
	return &Error{Code: CodeUnimplemented,
		Message: fmt.Sprintf("%s %s has no handler for the %s %q", s.id, s.version, kind, r.method)}
}

func runHandler(ctx context.Context, h HandlerFunc, r *Request) (res any, err error) {
	defer func() {
		if p := recover(); p != nil {
			res, err = nil, panicError(r, p)
		}
	}()
	return h(ctx, r)
}

func runStreamHandler(ctx context.Context, h StreamHandlerFunc, r *Request,
	send func(any) error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = panicError(r, p)
		}
	}()
	return h(ctx, r, send)
}

func panicError(r *Request, p any) error {
	return &Error{Code: CodeInternal, Message: fmt.Sprintf("the handler of %s panicked: %v", r.method, p),
		cause: fmt.Errorf("panic: %v\n%s", p, debug.Stack())}
}

func (s *Service) sendItem(r *Request, item any) error {
	b, err := marshalJSON(item, CodeInternal, "an item of "+r.method)
	if err != nil {
		return err
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.c == nil {
		return &Error{Code: CodeFailedPrecondition,
			Message: "ffi: send called after the stream handler of " + r.method + " returned"}
	}
	var cerr *C.hms_error_t
	if rc := C.hms_request_stream_json(r.c, bytesPtr(b), C.size_t(len(b)), &cerr); rc != 0 {
		return errorFromC(rc, cerr)
	}
	return nil
}

func (s *Service) replyJSON(r *Request, results []byte) {
	c := r.take()
	if c == nil {
		return
	}
	var cerr *C.hms_error_t
	if rc := C.hms_request_reply_json(&c, bytesPtr(results), C.size_t(len(results)), &cerr); rc != 0 {
		s.report(fmt.Errorf("ffi: %s %s: the answer to %s was refused (the caller got INTERNAL): %w",
			s.id, s.version, r.method, errorFromC(rc, cerr)))
	}
	C.hms_request_free(&c) // a no-op: the reply freed it
}

// replyError answers with the status err maps to (see HandlerFunc).
func (s *Service) replyError(r *Request, err error) {
	c := r.take()
	if c == nil {
		return
	}
	code, msg, details := CodeInternal, err.Error(), map[string]string(nil)
	var e *Error
	switch {
	case errors.As(err, &e):
		code, msg, details = e.Code, e.Message, e.Details
		if code == CodeOK {
			code = CodeUnknown
		}
	case errors.Is(err, context.Canceled):
		code = CodeCancelled
	case errors.Is(err, context.DeadlineExceeded):
		code = CodeDeadlineExceeded
	}
	cmsg := C.CString(msg)
	defer C.free(unsafe.Pointer(cmsg))
	var cdetails *C.char
	if len(details) > 0 {
		if b, err := json.Marshal(details); err == nil {
			cdetails = C.CString(string(b))
			defer C.free(unsafe.Pointer(cdetails))
		}
	}
	var cerr *C.hms_error_t
	if rc := C.hms_request_reply_error(&c, C.int(code), cmsg, cdetails, &cerr); rc != 0 {
		s.report(fmt.Errorf("ffi: %s %s: the error answer to %s was refused: %w",
			s.id, s.version, r.method, errorFromC(rc, cerr)))
	}
	C.hms_request_free(&c)
}
