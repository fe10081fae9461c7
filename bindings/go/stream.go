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
)

// Stream reads the items of a server stream, like a bufio.Scanner:
//
//	s, err := stub.OpenStream(ctx, "count", map[string]any{"n": 3})
//	if err != nil { ... }
//	defer s.Close()
//	for s.Next(&item) { use(item) }
//	if err := s.Err(); err != nil { ... }
//
// Next is for one goroutine at a time; Close may be called from any.
type Stream struct {
	c      *C.hms_stream_t
	h      handle
	ctx    context.Context
	method string
	stop   chan struct{}
	once   sync.Once
	item   []byte
	err    error
	ended  bool
}

// OpenStream calls method, a method the service serves as a server stream, with in as its
// params (as Call). ctx governs the whole stream: cancelling it, or its deadline, ends the
// stream.
func (s *Stub) OpenStream(ctx context.Context, method string, in any, opts ...CallOption) (*Stream, error) {
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
	var c *C.hms_stream_t
	var cerr *C.hms_error_t
	if rc := C.hms_stub_open_stream_json(s.c, cm, bytesPtr(params), C.size_t(len(params)), &o,
		&c, &cerr); rc != 0 {
		s.h.release()
		return nil, callError(ctx, rc, cerr)
	}
	st := &Stream{c: c, ctx: ctx, method: method, stop: make(chan struct{})}
	stub := s
	// The stream holds a reference on its stub until it is freed.
	st.h.init(func() {
		C.hms_stream_free(&c)
		stub.h.release()
	})
	if ctx.Done() != nil {
		go st.watch(ctx.Done())
	}
	runtime.SetFinalizer(st, (*Stream).Close)
	return st, nil
}

// watch cancels the stream when its context ends, until the stream is closed.
func (s *Stream) watch(done <-chan struct{}) {
	select {
	case <-done:
		if s.h.acquire() {
			C.hms_stream_cancel(s.c)
			s.h.release()
		}
	case <-s.stop:
	}
}

// Next reads the next item and decodes it into out (nil: keep it as Item only). It returns
// false at the end of the stream or on an error (see Err); the stream is then closed.
func (s *Stream) Next(out any) bool {
	if s.ended {
		return false
	}
	if !s.h.acquire() {
		s.finish(closedError("stream"))
		return false
	}
	var item *C.char
	var n C.size_t
	var cerr *C.hms_error_t
	rc := C.hms_stream_next_json(s.c, &item, &n, &cerr)
	s.h.release()
	switch {
	case rc != 0:
		s.finish(callError(s.ctx, rc, cerr))
		return false
	case item == nil:
		s.finish(nil)
		return false
	}
	s.item = takeBytes(item, n)
	if err := unmarshalJSON(s.item, out, "an item of "+s.method); err != nil {
		s.finish(err)
		return false
	}
	return true
}

// Item is the last item Next read, as JSON.
func (s *Stream) Item() json.RawMessage { return s.item }

// Err is the error that ended the stream; nil while it runs and when the service finished it.
func (s *Stream) Err() error { return s.err }

func (s *Stream) finish(err error) {
	s.ended = true
	s.err = err
	s.Close()
}

// Close cancels the stream if it has not ended and frees it. Close is idempotent; it always
// returns nil.
func (s *Stream) Close() error {
	s.once.Do(func() {
		close(s.stop)
		runtime.SetFinalizer(s, nil)
	})
	s.h.close()
	return nil
}
