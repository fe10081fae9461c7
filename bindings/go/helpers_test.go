package ffi_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"hmsffi.dev/ffi"
)

// The deadlines the tests wait with: generous, as a loaded 2-core CI machine needs; a test that
// passes never waits them out.
const (
	startDeadline = 20 * time.Second
	callDeadline  = 20 * time.Second
)

// transports are the two the suite runs over. "auto" is shared memory unless $HMS_FFI_TRANSPORT
// says otherwise.
var transports = []struct {
	name      string
	transport ffi.Transport
	env       string // $HMS_FFI_TRANSPORT for the C++ processes
}{
	{"auto", ffi.TransportAuto, ""},
	{"socket", ffi.TransportSocket, "socket"},
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// repoRoot is the root of the HMS-FFI tree (bindings/go is two levels down).
func repoRoot(t testing.TB) string {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Clean(filepath.Join(wd, "..", ".."))
}

func testSchema(t testing.TB) string {
	return filepath.Join(repoRoot(t), "tests", "support", "test.capnp")
}

// syncBuffer collects a process's output for the log of a failed test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// process is a child process that the test's cleanup stops (SIGTERM, then SIGKILL) and waits
// for. Its stdout lines can be waited for.
type process struct {
	name   string
	cmd    *exec.Cmd
	stderr syncBuffer
	exited chan struct{}
	err    error // set before exited is closed

	mu      sync.Mutex
	lines   []string
	changed chan struct{} // closed and replaced on each new line
}

func startProcess(t testing.TB, name string, env []string, bin string, args ...string) *process {
	t.Helper()
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("%s: %v (build the tree first, or set the binary's path in the environment)", name, err)
	}
	p := &process{name: name, exited: make(chan struct{}), changed: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stderr = &p.stderr
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			p.mu.Lock()
			p.lines = append(p.lines, sc.Text())
			close(p.changed)
			p.changed = make(chan struct{})
			p.mu.Unlock()
		}
	}()
	go func() {
		<-readDone // Wait closes the pipe: read it to the end first
		p.err = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("%s stdout:\n%s\n%s stderr:\n%s", name, strings.Join(p.output(), "\n"), name,
				p.stderr.String())
		}
	})
	return p
}

func (p *process) output() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.lines...)
}

// waitLine waits for a line of stdout starting with prefix (at most startDeadline) and returns
// it.
func (p *process) waitLine(t testing.TB, prefix string) string {
	t.Helper()
	deadline := time.After(startDeadline)
	for {
		p.mu.Lock()
		for _, l := range p.lines {
			if strings.HasPrefix(l, prefix) {
				p.mu.Unlock()
				return l
			}
		}
		changed := p.changed
		p.mu.Unlock()
		select {
		case <-changed:
		case <-p.exited:
			t.Fatalf("%s exited (%v) before printing %q; stderr:\n%s", p.name, p.err, prefix,
				p.stderr.String())
		case <-deadline:
			t.Fatalf("%s did not print %q within %v; stderr:\n%s", p.name, prefix, startDeadline,
				p.stderr.String())
		}
	}
}

func (p *process) kill(sig syscall.Signal) {
	select {
	case <-p.exited:
	default:
		_ = p.cmd.Process.Signal(sig)
	}
}

func (p *process) stop() {
	p.kill(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		p.kill(syscall.SIGKILL)
		<-p.exited
	}
}

// broker is an hms-ffid of the test's own, on a private socket, stopped by the test's cleanup.
type broker struct {
	dir  string
	sock string
	proc *process
}

func startBroker(t testing.TB) *broker {
	t.Helper()
	// Not t.TempDir(): its path grows with the test's name, and a socket's path must fit in
	// 108 bytes. MkdirTemp's directory is 0700, as the client's broker check wants.
	dir, err := os.MkdirTemp("", "hms-go-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) }) // runs after the broker's cleanup stopped it
	b := &broker{dir: dir, sock: filepath.Join(dir, "broker.sock")}
	bin := envOr("HMS_FFI_BROKER_BINARY", "/work/main/build/release/broker/hms-ffid")
	b.proc = startProcess(t, "hms-ffid", nil, bin, "--socket", b.sock, "--state-dir",
		filepath.Join(dir, "state"), "--log-level", "warn")
	deadline := time.Now().Add(startDeadline)
	for {
		if _, err := os.Stat(b.sock); err == nil {
			return b
		}
		select {
		case <-b.proc.exited:
			t.Fatalf("hms-ffid exited (%v); stderr:\n%s", b.proc.err, b.proc.stderr.String())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("hms-ffid's socket %s did not appear within %v", b.sock, startDeadline)
		}
	}
}

// connect connects a client to the broker and closes it in the test's cleanup.
func (b *broker) connect(t testing.TB, name string, transport ffi.Transport) *ffi.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), startDeadline)
	defer cancel()
	var c *ffi.Client
	var err error
	for {
		c, err = ffi.Connect(ctx, ffi.Options{SocketPath: b.sock, Name: name, Transport: transport})
		// The socket's file appears at bind(), a moment before the broker listens: a client
		// that comes in between is refused (UNAVAILABLE). Try again then.
		if err == nil || !errors.Is(err, ffi.ErrUnavailable) || ctx.Err() != nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	if transport == ffi.TransportSocket && c.UsesSharedMemory() {
		t.Fatalf("a client set to TransportSocket maps shared memory")
	}
	return c
}

// startTestService starts hms-ffi-test-service (C++) on the broker and waits until it has
// registered.
func (b *broker) startTestService(t testing.TB, transportEnv string, args ...string) *process {
	t.Helper()
	bin := envOr("HMS_FFI_TEST_SERVICE_BINARY", "/work/main/build/release/tests/hms-ffi-test-service")
	var env []string
	if transportEnv != "" {
		env = append(env, "HMS_FFI_TRANSPORT="+transportEnv)
	}
	p := startProcess(t, "hms-ffi-test-service", env, bin, append([]string{"--socket", b.sock}, args...)...)
	p.waitLine(t, "ready")
	return p
}

// bind binds a stub and closes it in the test's cleanup.
func bind(t testing.TB, c *ffi.Client, id, versionRange string) *ffi.Stub {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), callDeadline)
	defer cancel()
	s, err := c.Bind(ctx, id, versionRange)
	if err != nil {
		t.Fatalf("Bind(%s, %s): %v", id, versionRange, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// callCtx is a context with the tests' call deadline.
func callCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), callDeadline)
	t.Cleanup(cancel)
	return ctx
}

// eventually waits until cond holds (at most callDeadline), checking every 10 ms.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(callDeadline)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s did not happen within %v", what, callDeadline)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// wantCode fails the test unless err is an *ffi.Error with code want that errors.Is matches
// against sentinel.
func wantCode(t testing.TB, err error, sentinel error, want ffi.Code) *ffi.Error {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %v", want)
	}
	var e *ffi.Error
	if !errors.As(err, &e) {
		t.Fatalf("got %T %v, want an *ffi.Error", err, err)
	}
	if e.Code != want || !errors.Is(err, sentinel) || ffi.CodeOf(err) != want {
		t.Fatalf("got %v (code %d), want %v", err, e.Code, want)
	}
	return e
}

// waitErr waits for a call made on another goroutine.
func waitErr(t testing.TB, ch <-chan error, what string) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(callDeadline):
		buf := make([]byte, 1<<16)
		buf = buf[:runtime.Stack(buf, true)]
		t.Fatalf("%s did not return within %v; goroutines:\n%s", what, callDeadline, buf)
		return nil
	}
}

// tickPayload is the payload test.capnp's Tick carries for seq (as tests/support/tick.hpp
// derives it: only the tests here read it back, so any derivation will do).
func tickPayload(seq uint64) []byte {
	return []byte(fmt.Sprintf("tick-%d", seq))
}

func cliBinary() string {
	return envOr("HMS_FFI_CLI_BINARY", "/work/main/build/release/tools/hms-ffi")
}

// cli runs the C++ command-line tool hms-ffi on the broker and returns its output (stdout and
// stderr) and exit status.
func (b *broker) cli(t testing.TB, transportEnv string, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), callDeadline)
	defer cancel()
	cmd := exec.CommandContext(ctx, cliBinary(), append([]string{"--socket", b.sock}, args...)...)
	cmd.Env = os.Environ()
	if transportEnv != "" {
		cmd.Env = append(cmd.Env, "HMS_FFI_TRANSPORT="+transportEnv)
	}
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return string(out), 0
	case errors.As(err, &exit):
		return string(out), exit.ExitCode()
	}
	t.Fatalf("hms-ffi %v: %v", args, err)
	return "", -1
}
