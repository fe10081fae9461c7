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
	"time"
)

// Transport says what a client's channels run over.
type Transport int

const (
	// TransportAuto uses shared memory where both ends can map it, else a Unix socket; it defers
	// to $HMS_FFI_TRANSPORT (auto, shm, socket) when that is set.
	TransportAuto Transport = iota
	// TransportSharedMemory uses shared memory only.
	TransportSharedMemory
	// TransportSocket uses Unix sockets only; the client maps no shared memory.
	TransportSocket
)

// WaitMode says how a caller waits for a reply over shared memory.
type WaitMode int

const (
	// WaitAdaptive polls briefly, then sleeps (the default).
	WaitAdaptive WaitMode = iota
	// WaitSpin polls until the deadline: the lowest latency, and a core kept busy.
	WaitSpin
	// WaitBlocking sleeps at once.
	WaitBlocking
)

// Options configure Connect. The zero value connects to the default broker with the defaults.
type Options struct {
	// SocketPath is the broker's socket; "": $HMS_FFI_SOCKET, else the per-user default.
	SocketPath string
	// Name is shown in the registry and the broker's log; "": "<program>[<pid>]".
	Name string
	// Transport forces shared memory or sockets; TransportAuto defers to $HMS_FFI_TRANSPORT.
	Transport Transport
	// WaitMode is how calls wait for their replies.
	WaitMode WaitMode
	// DefaultTimeout is the deadline of a call whose context has none; 0: 30 s.
	DefaultTimeout time.Duration
	// NoReconnect stops the client from reconnecting to a broker that restarted (by default it
	// reconnects and registers its services again).
	NoReconnect bool
}

// Client is a connection to the broker: it binds stubs, serves services, publishes and
// subscribes. It is safe for concurrent use.
type Client struct {
	c              *C.hms_client_t
	h              handle
	defaultTimeout time.Duration
}

// Connect connects to the broker; it waits at most 5 s, or until ctx ends.
func Connect(ctx context.Context, opts Options) (*Client, error) {
	c, err := blocking(ctx, func() (*C.hms_client_t, error) { return connect(opts) },
		func(c *C.hms_client_t) { C.hms_client_free(&c) })
	if err != nil {
		return nil, err
	}
	client := &Client{c: c, defaultTimeout: 30 * time.Second}
	if opts.DefaultTimeout > 0 {
		client.defaultTimeout = opts.DefaultTimeout
	}
	// The free function captures the C pointer, not client: a cycle through client would keep
	// its finalizer from running.
	client.h.init(func() { C.hms_client_free(&c) })
	runtime.SetFinalizer(client, (*Client).Close)
	return client, nil
}

func connect(opts Options) (*C.hms_client_t, error) {
	var o C.hms_client_options_t
	C.hms_client_options_init(&o)
	o.socket_path = cString(opts.SocketPath, true)
	defer freeCString(o.socket_path)
	o.name = cString(opts.Name, true)
	defer freeCString(o.name)
	o.transport = C.hms_transport_t(opts.Transport)
	o.wait_mode = C.hms_wait_mode_t(opts.WaitMode)
	if opts.DefaultTimeout > 0 {
		o.default_timeout_ms = C.int64_t((opts.DefaultTimeout + time.Millisecond - 1) / time.Millisecond)
	}
	if opts.NoReconnect {
		o.reconnect = 0
	}
	var c *C.hms_client_t
	var cerr *C.hms_error_t
	if rc := C.hms_client_connect(&o, &c, &cerr); rc != 0 {
		return nil, errorFromC(rc, cerr)
	}
	return c, nil
}

// Close closes the client: its services leave the registry, and the stubs, services, streams,
// publishers and subscriptions made from it answer UNAVAILABLE from then on (close them too).
// Close is idempotent; it always returns nil.
func (c *Client) Close() error {
	if c.h.close() {
		runtime.SetFinalizer(c, nil)
	}
	return nil
}

// ID is the client's id in the broker's registry (0 once closed).
func (c *Client) ID() uint64 {
	if !c.h.acquire() {
		return 0
	}
	defer c.h.release()
	return uint64(C.hms_client_id(c.c))
}

// UsesSharedMemory reports whether the client maps shared memory (false: its channels run over
// Unix sockets).
func (c *Client) UsesSharedMemory() bool {
	if !c.h.acquire() {
		return false
	}
	defer c.h.release()
	return C.hms_client_uses_shared_memory(c.c) != 0
}

// Contract returns the contract of serviceID at exactly version ("2.1.0") as the broker stores
// it: {"id","version","interface","methods":[{"name","ordinal","stream"}],...}.
func (c *Client) Contract(ctx context.Context, serviceID, version string) (json.RawMessage, error) {
	return blocking(ctx, func() (json.RawMessage, error) {
		if !c.h.acquire() {
			return nil, closedError("client")
		}
		defer c.h.release()
		id, v := C.CString(serviceID), C.CString(version)
		defer freeCString(id)
		defer freeCString(v)
		var out *C.char
		var n C.size_t
		var cerr *C.hms_error_t
		if rc := C.hms_client_contract_json(c.c, id, v, &out, &n, &cerr); rc != 0 {
			return nil, errorFromC(rc, cerr)
		}
		return json.RawMessage(takeBytes(out, n)), nil
	}, nil)
}

// Bind returns a stub on the highest live version of serviceID in versionRange ("^2.1", "*";
// "": any), with its contract. The error is NOT_FOUND (naming the live versions) when there is
// none.
func (c *Client) Bind(ctx context.Context, serviceID, versionRange string) (*Stub, error) {
	s, err := blocking(ctx, func() (*C.hms_stub_t, error) {
		if !c.h.acquire() {
			return nil, closedError("client")
		}
		defer c.h.release()
		id, r := C.CString(serviceID), cString(versionRange, true)
		defer freeCString(id)
		defer freeCString(r)
		var s *C.hms_stub_t
		var cerr *C.hms_error_t
		if rc := C.hms_client_bind(c.c, id, r, &s, &cerr); rc != 0 {
			return nil, errorFromC(rc, cerr)
		}
		return s, nil
	}, func(s *C.hms_stub_t) { C.hms_stub_free(&s) })
	if err != nil {
		return nil, err
	}
	return newStub(s), nil
}

type blockingResult[T any] struct {
	v   T
	err error
}

// blocking runs f, which blocks in C for a bounded time, and returns its result; if ctx ends
// first it returns ctx's error at once, and undo (when not nil) releases what f makes once it
// returns.
func blocking[T any](ctx context.Context, f func() (T, error), undo func(T)) (T, error) {
	var zero T
	if err := ctx.Err(); err != nil {
		return zero, contextError(err, "")
	}
	if ctx.Done() == nil {
		return f()
	}
	ch := make(chan blockingResult[T], 1)
	go func() {
		v, err := f()
		ch <- blockingResult[T]{v, err}
	}()
	select {
	case r := <-ch:
		return r.v, r.err
	case <-ctx.Done():
		go func() {
			if r := <-ch; r.err == nil && undo != nil {
				undo(r.v)
			}
		}()
		return zero, contextError(ctx.Err(), "")
	}
}
