package ffi_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"hmsffi.dev/ffi"
)

// tick is test.capnp's Tick.
type tick struct {
	Seq     uint64 `json:"seq,string"`
	Payload []byte `json:"payload"`
}

// TestPubSub publishes test.capnp's Tick from Go to Go subscribers, with Next and with C.
func TestPubSub(t *testing.T) {
	for _, tr := range transports {
		tr := tr
		t.Run(tr.name, func(t *testing.T) {
			b := startBroker(t)
			pubClient := b.connect(t, "go-publisher", tr.transport)
			subClient := b.connect(t, "go-subscriber", tr.transport)

			pub, err := pubClient.Advertise("hms.test.go.ticks", testSchema(t), "Tick", 16)
			if err != nil {
				t.Fatalf("Advertise: %v", err)
			}
			defer pub.Close()
			if pub.Topic() != "hms.test.go.ticks" {
				t.Fatalf("topic %q", pub.Topic())
			}
			byNext, err := subClient.Subscribe(callCtx(t), "hms.test.go.ticks")
			if err != nil {
				t.Fatalf("Subscribe: %v", err)
			}
			defer byNext.Close()
			byChan, err := subClient.Subscribe(callCtx(t), "hms.test.go.ticks")
			if err != nil {
				t.Fatalf("Subscribe: %v", err)
			}
			defer byChan.Close()
			eventually(t, "the publisher counting two subscribers", func() bool { return pub.Subscribers() == 2 })

			const n = 40 // more than the log's 16 slots: the publisher waits for the readers
			published := make(chan error, 1)
			go func() {
				for seq := uint64(1); seq <= n; seq++ {
					if err := pub.Publish(tick{Seq: seq, Payload: tickPayload(seq)}); err != nil {
						published <- err
						return
					}
				}
				published <- nil
			}()

			chanDone := make(chan error, 1)
			go func() {
				for want := uint64(1); want <= n; want++ {
					select {
					case m, ok := <-byChan.C():
						if !ok {
							chanDone <- byChan.Err()
							return
						}
						var got tick
						if err := m.Decode(&got); err != nil {
							chanDone <- err
							return
						}
						if m.Seq != want || got.Seq != want || !bytes.Equal(got.Payload, tickPayload(want)) {
							t.Errorf("C delivered #%d %+v, want %d", m.Seq, got, want)
						}
					case <-time.After(callDeadline):
						t.Errorf("C delivered nothing for %v", callDeadline)
						chanDone <- nil
						return
					}
				}
				chanDone <- nil
			}()

			for want := uint64(1); want <= n; want++ {
				var got tick
				seq, err := byNext.Next(callCtx(t), &got)
				if err != nil {
					t.Fatalf("Next: %v", err)
				}
				if seq != want || got.Seq != want || !bytes.Equal(got.Payload, tickPayload(want)) {
					t.Fatalf("Next returned #%d %+v, want %d", seq, got, want)
				}
			}
			if err := waitErr(t, published, "publishing"); err != nil {
				t.Fatalf("Publish: %v", err)
			}
			if err := waitErr(t, chanDone, "reading from C"); err != nil {
				t.Fatalf("C: %v", err)
			}

			// Nothing more: Next waits until its context ends.
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			defer cancel()
			_, err = byNext.Next(ctx, nil)
			wantCode(t, err, ffi.ErrDeadlineExceeded, ffi.CodeDeadlineExceeded)

			// A message that does not fit the type is refused, naming the field.
			wantCode(t, pub.Publish(map[string]any{"nope": 1}), ffi.ErrInvalidArgument, ffi.CodeInvalidArgument)

			// The publisher leaves: what was published is read, then UNAVAILABLE.
			if err := pub.Publish(tick{Seq: n + 1, Payload: tickPayload(n + 1)}); err != nil {
				t.Fatal(err)
			}
			pub.Close()
			seq, err := byNext.Next(callCtx(t), nil)
			if err != nil || seq != n+1 {
				t.Fatalf("after the publisher left: #%d, %v; want #%d", seq, err, n+1)
			}
			_, err = byNext.Next(callCtx(t), nil)
			wantCode(t, err, ffi.ErrUnavailable, ffi.CodeUnavailable)
			for range byChan.C() {
			}
			wantCode(t, byChan.Err(), ffi.ErrUnavailable, ffi.CodeUnavailable)
		})
	}
}

func TestSubscription_CloseEndsItsChannel(t *testing.T) {
	b := startBroker(t)
	c := b.connect(t, "go-pubsub", ffi.TransportAuto)
	pub, err := c.Advertise("hms.test.go.close", testSchema(t), "Tick", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	sub, err := c.Subscribe(callCtx(t), "hms.test.go.close")
	if err != nil {
		t.Fatal(err)
	}
	ch := sub.C()
	sub.Close()
	sub.Close()
	select {
	case _, ok := <-ch:
		if ok {
			t.Fatal("a message on a closed subscription")
		}
	case <-time.After(callDeadline):
		t.Fatal("Close did not end C's channel")
	}
	if sub.Err() != nil {
		t.Fatalf("Err after Close: %v", sub.Err())
	}
	_, err = sub.Next(callCtx(t), nil)
	wantCode(t, err, ffi.ErrFailedPrecondition, ffi.CodeFailedPrecondition)
}

func TestSubscribe_WaitsForAPublisher(t *testing.T) {
	b := startBroker(t)
	c := b.connect(t, "go-pubsub", ffi.TransportAuto)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := c.Subscribe(ctx, "hms.test.go.nobody"); err == nil {
		t.Fatal("subscribed to a topic nobody publishes")
	}
	done := make(chan error, 1)
	go func() {
		sub, err := c.Subscribe(callCtx(t), "hms.test.go.later")
		if err == nil {
			sub.Close()
		}
		done <- err
	}()
	pub, err := c.Advertise("hms.test.go.later", testSchema(t), "Tick", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	if err := waitErr(t, done, "Subscribe"); err != nil {
		t.Fatalf("Subscribe did not wait for the publisher: %v", err)
	}
}
