// Command hms-ffi-bench-go measures the Go binding for hms-ffi-bench (P13 in
// ../shared/design/PERFORMANCE.md): a JSON-level call echoing 64 bytes to the bench's echo
// service, in slices, each just after a slice of Go's own blocking Unix-socket ping-pong of 64
// bytes with a child process, so that both are measured in the same placement. It prints one
// JSON object per row on stdout; hms-ffi-bench runs it and reports the ratio.
//
//	hms-ffi-bench-go --socket PATH --service ID --wait blocking|adaptive --iterations N [--peer-cpu C]
//	hms-ffi-bench-go --uds-echo [--peer-cpu C]  (the ping-pong's peer, on fd 3; run by the first)
//
// The peer is pinned to --peer-cpu (hms-ffi-bench passes the CPU its echo service runs on), so
// that the baseline crosses CPUs as the calls do.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"sort"
	"strconv"
	"syscall"
	"time"
	"unsafe"

	"hmsffi.dev/ffi"
)

const slices = 10

type row struct {
	Lang        string  `json:"lang"`
	Name        string  `json:"name"`
	Samples     int     `json:"samples"`
	P50         float64 `json:"p50_us"`
	P90         float64 `json:"p90_us"`
	P99         float64 `json:"p99_us"`
	RatioToBase float64 `json:"ratio_p50_to_baseline,omitempty"`
}

func percentile(ns []int64, q float64) float64 {
	s := append([]int64(nil), ns...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	if len(s) == 0 {
		return 0
	}
	return float64(s[int(q*float64(len(s)-1))]) / 1000
}

func summarize(name string, ns []int64) row {
	return row{Lang: "go", Name: name, Samples: len(ns), P50: percentile(ns, 0.5),
		P90: percentile(ns, 0.9), P99: percentile(ns, 0.99)}
}

func timed(n int, f func() error) ([]int64, error) {
	out := make([]int64, 0, n)
	for i := 0; i < n; i++ {
		t := time.Now()
		if err := f(); err != nil {
			return nil, err
		}
		out = append(out, int64(time.Since(t)))
	}
	return out, nil
}

// pin moves the calling thread (the peer's only busy one) to `cpu`; -1 leaves it.
func pin(cpu int) {
	if cpu < 0 || cpu >= 1024 {
		return
	}
	var mask [16]uint64
	mask[cpu/64] |= 1 << (uint(cpu) % 64)
	_, _, _ = syscall.RawSyscall(syscall.SYS_SCHED_SETAFFINITY, 0, uintptr(len(mask)*8),
		uintptr(unsafe.Pointer(&mask[0])))
}

// udsEcho is the peer: blocking reads and writes of 64 bytes on fd 3 until EOF.
func udsEcho() {
	buf := make([]byte, 64)
	for {
		got := 0
		for got < len(buf) {
			n, err := syscall.Read(3, buf[got:])
			if n <= 0 || err != nil {
				os.Exit(0)
			}
			got += n
		}
		if _, err := syscall.Write(3, buf); err != nil {
			os.Exit(0)
		}
	}
}

func fail(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "hms-ffi-bench-go: "+format+"\n", a...)
	os.Exit(1)
}

func main() {
	socket := flag.String("socket", "", "the broker's socket")
	service := flag.String("service", "hms.bench.echo.adaptive", "the echo service's id")
	wait := flag.String("wait", "adaptive", "blocking or adaptive")
	iterations := flag.Int("iterations", 20000, "samples of each row")
	peer := flag.Bool("uds-echo", false, "be the ping-pong's peer on fd 3")
	peerCPU := flag.Int("peer-cpu", -1, "the CPU of the ping-pong's peer (-1: not pinned)")
	flag.Parse()
	if *peer {
		runtime.LockOSThread()
		pin(*peerCPU)
		udsEcho()
		return
	}
	mode := ffi.WaitAdaptive
	switch *wait {
	case "adaptive":
	case "blocking":
		mode = ffi.WaitBlocking
	default:
		fail("--wait takes blocking or adaptive, not %q", *wait)
	}

	// Go's own baseline: a socketpair with a child process echoing on its end.
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		fail("socketpair: %v", err)
	}
	child := exec.Command(os.Args[0], "--uds-echo", "--peer-cpu", strconv.Itoa(*peerCPU))
	child.ExtraFiles = []*os.File{os.NewFile(uintptr(fds[1]), "uds-peer")}
	child.Stderr = os.Stderr
	if err := child.Start(); err != nil {
		fail("starting the ping-pong peer: %v", err)
	}
	syscall.Close(fds[1])
	msg := bytes.Repeat([]byte{7}, 64)
	back := make([]byte, 64)
	uds := func() error {
		if _, err := syscall.Write(fds[0], msg); err != nil {
			return err
		}
		for got := 0; got < len(back); {
			n, err := syscall.Read(fds[0], back[got:])
			if err != nil || n <= 0 {
				return fmt.Errorf("read: %v", err)
			}
			got += n
		}
		return nil
	}

	ctx := context.Background()
	client, err := ffi.Connect(ctx, ffi.Options{SocketPath: *socket, Name: "bench-go", WaitMode: mode})
	if err != nil {
		fail("%v", err)
	}
	defer client.Close()
	stub, err := client.Bind(ctx, *service, "*")
	if err != nil {
		fail("%v", err)
	}
	type echo struct {
		Payload []byte `json:"payload"`
	}
	in := echo{Payload: make([]byte, 64)}
	var out echo
	call := func() error {
		if err := stub.Call(ctx, "echo", in, &out); err != nil {
			return err
		}
		if len(out.Payload) != 64 {
			return fmt.Errorf("the echo came back with %d bytes", len(out.Payload))
		}
		return nil
	}

	per := *iterations / slices
	if per < 100 {
		per = 100
	}
	// Warm-up of both.
	if _, err := timed(per, uds); err != nil {
		fail("uds: %v", err)
	}
	if _, err := timed(per, call); err != nil {
		fail("call: %v", err)
	}
	var allUds, allCall []int64
	ratios := make([]float64, 0, slices)
	for k := 0; k < slices; k++ {
		u, err := timed(per, uds)
		if err != nil {
			fail("uds: %v", err)
		}
		c, err := timed(per, call)
		if err != nil {
			fail("call: %v", err)
		}
		allUds = append(allUds, u...)
		allCall = append(allCall, c...)
		ratios = append(ratios, percentile(c, 0.5)/percentile(u, 0.5))
	}
	syscall.Close(fds[0])
	_ = child.Wait()
	sort.Float64s(ratios)

	enc := json.NewEncoder(os.Stdout)
	base := summarize("go UDS ping-pong (blocking)", allUds)
	r := summarize("go JSON call, "+*wait, allCall)
	r.RatioToBase = ratios[len(ratios)/2]
	_ = enc.Encode(base)
	_ = enc.Encode(r)
}
