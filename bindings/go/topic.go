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

// Publisher is the one publisher of a topic. Publish is for one goroutine at a time.
type Publisher struct {
	c     *C.hms_publisher_t
	h     handle
	topic string
}

// Advertise makes the client the one publisher of topic, whose messages are the struct
// typeName ("Vitals", or "Outer.Inner") of the Cap'n Proto schema file schemaFile (with both
// "", the type an earlier publisher advertised during the broker's life). slots is how many
// messages the topic's log keeps, a power of two (0: 256). Subscribers read from the next
// message on; the publisher waits for those that fall behind.
func (c *Client) Advertise(topic, schemaFile, typeName string, slots int) (*Publisher, error) {
	if !c.h.acquire() {
		return nil, closedError("client")
	}
	defer c.h.release()
	ct := C.CString(topic)
	defer freeCString(ct)
	schema, typ := cString(schemaFile, true), cString(typeName, true)
	defer freeCString(schema)
	defer freeCString(typ)
	var p *C.hms_publisher_t
	var cerr *C.hms_error_t
	if rc := C.hms_client_advertise_json(c.c, ct, schema, typ, C.uint32_t(slots), &p, &cerr); rc != 0 {
		return nil, errorFromC(rc, cerr)
	}
	pub := &Publisher{c: p, topic: topic}
	pub.h.init(func() { C.hms_publisher_free(&p) })
	runtime.SetFinalizer(pub, (*Publisher).Close)
	return pub, nil
}

// Topic is the topic's id.
func (p *Publisher) Topic() string { return p.topic }

// Publish publishes v (encoded with encoding/json as the topic's struct; a json.RawMessage as
// it is). It waits while a subscriber is too far behind.
func (p *Publisher) Publish(v any) error {
	b, err := marshalJSON(v, CodeInvalidArgument, "a message of "+p.topic)
	if err != nil {
		return err
	}
	if !p.h.acquire() {
		return closedError("publisher")
	}
	defer p.h.release()
	var cerr *C.hms_error_t
	if rc := C.hms_publisher_publish_json(p.c, bytesPtr(b), C.size_t(len(b)), &cerr); rc != 0 {
		return errorFromC(rc, cerr)
	}
	return nil
}

// Subscribers is how many subscribers the topic has now.
func (p *Publisher) Subscribers() int {
	if !p.h.acquire() {
		return 0
	}
	defer p.h.release()
	return int(C.hms_publisher_subscribers(p.c))
}

// Close stops publishing: subscribers read what was published, then UNAVAILABLE. Close is
// idempotent; it always returns nil.
func (p *Publisher) Close() error {
	if p.h.close() {
		runtime.SetFinalizer(p, nil)
	}
	return nil
}

// Message is one message of a topic.
type Message struct {
	// Seq is the message's sequence number in the topic, from 1.
	Seq uint64
	// Data is the message as JSON.
	Data json.RawMessage
}

// Decode decodes the message into out with encoding/json.
func (m Message) Decode(out any) error { return unmarshalJSON(m.Data, out, "a message") }

// Subscription reads a topic's messages in order, with Next or from the channel C (one of the
// two). Close may be called from any goroutine.
type Subscription struct {
	c     *C.hms_subscription_t
	h     handle
	topic string

	chOnce   sync.Once
	ch       chan Message
	chCancel context.CancelFunc
	mu       sync.Mutex
	err      error // what ended ch
}

// Subscribe subscribes to topic from the next message on. It waits for a publisher until ctx's
// deadline (without one, for the client's default timeout, or until ctx is cancelled).
func (c *Client) Subscribe(ctx context.Context, topic string) (*Subscription, error) {
	wait := c.defaultTimeout
	if dl, ok := ctx.Deadline(); ok {
		wait = time.Until(dl)
	}
	if wait < 0 {
		wait = 0
	}
	s, err := blocking(ctx, func() (*C.hms_subscription_t, error) {
		if !c.h.acquire() {
			return nil, closedError("client")
		}
		defer c.h.release()
		ct := C.CString(topic)
		defer freeCString(ct)
		var s *C.hms_subscription_t
		var cerr *C.hms_error_t
		if rc := C.hms_client_subscribe_json(c.c, ct, C.int64_t(wait.Milliseconds()), &s, &cerr); rc != 0 {
			return nil, callError(ctx, rc, cerr)
		}
		return s, nil
	}, func(s *C.hms_subscription_t) { C.hms_subscription_free(&s) })
	if err != nil {
		return nil, err
	}
	sub := &Subscription{c: s, topic: topic}
	sub.h.init(func() { C.hms_subscription_free(&s) })
	runtime.SetFinalizer(sub, (*Subscription).Close)
	return sub, nil
}

// Topic is the topic's id.
func (s *Subscription) Topic() string { return s.topic }

// Next waits for the next message, until ctx ends, and decodes it into out (nil: drop it); it
// returns the message's sequence number. The error is UNAVAILABLE once the publisher left and
// every message was read.
func (s *Subscription) Next(ctx context.Context, out any) (uint64, error) {
	m, err := s.next(ctx)
	if err != nil {
		return 0, err
	}
	return m.Seq, m.Decode(out)
}

func (s *Subscription) next(ctx context.Context) (Message, error) {
	for {
		if err := ctx.Err(); err != nil {
			return Message{}, contextError(err, "")
		}
		slice := pollInterval
		if dl, ok := ctx.Deadline(); ok {
			if left := time.Until(dl); left < slice {
				slice = left
			}
		}
		if !s.h.acquire() {
			return Message{}, closedError("subscription")
		}
		var msg *C.char
		var n C.size_t
		var seq C.uint64_t
		var cerr *C.hms_error_t
		rc := C.hms_subscription_next_json(s.c, timeoutNs(slice), &msg, &n, &seq, &cerr)
		s.h.release()
		switch {
		case rc == 0:
			return Message{Seq: uint64(seq), Data: takeBytes(msg, n)}, nil
		case Code(rc) == CodeDeadlineExceeded:
			C.hms_error_free(&cerr) // none yet: look at ctx and Close, and wait again
		default:
			return Message{}, errorFromC(rc, cerr)
		}
	}
}

// C returns a channel that delivers the messages, in order, until the subscription ends (the
// publisher left, an error: see Err) or is closed. Do not mix it with Next.
func (s *Subscription) C() <-chan Message {
	s.chOnce.Do(func() {
		s.ch = make(chan Message)
		var ctx context.Context
		ctx, s.chCancel = context.WithCancel(context.Background())
		go s.pump(ctx)
	})
	return s.ch
}

func (s *Subscription) pump(ctx context.Context) {
	defer close(s.ch)
	for {
		m, err := s.next(ctx)
		if err != nil {
			if ctx.Err() == nil {
				s.mu.Lock()
				s.err = err
				s.mu.Unlock()
			}
			return
		}
		select {
		case s.ch <- m:
		case <-ctx.Done():
			return
		}
	}
}

// Err is the error that ended C's channel (nil if Close did).
func (s *Subscription) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Close ends the subscription (and C's channel). Close is idempotent; it always returns nil.
func (s *Subscription) Close() error {
	s.chOnce.Do(func() { // C cannot start a pump after Close: its channel is closed
		s.ch = make(chan Message)
		close(s.ch)
	})
	if s.chCancel != nil {
		s.chCancel()
	}
	if s.h.close() {
		runtime.SetFinalizer(s, nil)
	}
	return nil
}
