package ffi_test

import (
	"os"
	"strconv"
	"strings"
	"testing"

	"hmsffi.dev/ffi"
)

// threads is the number of OS threads of this process.
func threads(t *testing.T) int {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Skip("no /proc/self/status")
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "Threads:") {
			n, _ := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(l, "Threads:")))
			return n
		}
	}
	t.Skip("no thread count")
	return 0
}

// TestCallAsync_HoldsNoThreadPerCallInFlight: a call in flight waits in Go's poller on its
// future's descriptor, not in a blocked cgo call (which would hold an OS thread each).
func TestCallAsync_HoldsNoThreadPerCallInFlight(t *testing.T) {
	b := startBroker(t)
	b.startTestService(t, "")
	client := b.connect(t, "go-caller", ffi.TransportAuto)
	stub := bind(t, client, "hms.test", "*")
	if err := stub.Call(callCtx(t), "echo", nil, nil); err != nil { // the channel is open
		t.Fatal(err)
	}
	before := threads(t)
	const n = 64
	var pending []*ffi.Pending
	for i := 0; i < n; i++ {
		p, err := stub.CallAsync(callCtx(t), "sleep", map[string]any{"ms": 20})
		if err != nil {
			t.Fatal(err)
		}
		pending = append(pending, p)
	}
	during := threads(t)
	for _, p := range pending {
		if err := p.Wait(callCtx(t), nil); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("threads: %d before, %d with %d calls in flight", before, during, n)
	if during-before >= n/2 {
		t.Fatalf("%d calls in flight took %d more threads", n, during-before)
	}
}
