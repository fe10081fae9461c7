package ffi_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"hmsffi.dev/ffi"
)

// buildCommand builds a main package of this module (e.g. "./cmd/hms-sys") into a temporary
// directory, unless env names a binary already built.
func buildCommand(t *testing.T, env, pkg string) string {
	t.Helper()
	if bin := os.Getenv(env); bin != "" {
		return bin
	}
	out := filepath.Join(t.TempDir(), filepath.Base(pkg))
	cmd := exec.Command("go", "build", "-o", out, pkg)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
	return out
}

// serveDebate serves hms.cdf.debate 2.1.0 from Go with the errors cmd/hms-sys expects of the
// Rust HMS-CDF: NOT_FOUND for an unknown policy, INVALID_ARGUMENT for none, INTERNAL for
// "crash".
func serveDebate(t *testing.T, c *ffi.Client) {
	t.Helper()
	schema := filepath.Join(repoRoot(t), "schemas", "hms", "cdf", "debate.capnp")
	type fact struct {
		Key   string `json:"key"`
		Value string `json:"value"`
	}
	evaluate := func(ctx context.Context, req *ffi.Request) (any, error) {
		var p struct {
			PolicyID  string `json:"policyId"`
			Facts     []fact `json:"facts"`
			MaxRounds uint32 `json:"maxRounds"`
		}
		if err := req.Params(&p); err != nil {
			return nil, err
		}
		switch p.PolicyID {
		case "":
			return nil, &ffi.Error{Code: ffi.CodeInvalidArgument, Message: "policyId is required",
				Details: map[string]string{"field": "policyId", "reason": "empty"}}
		case "crash":
			panic("the debate engine crashed")
		case "records.release":
		default:
			return nil, &ffi.Error{Code: ffi.CodeNotFound, Message: "no policy '" + p.PolicyID + "'",
				Details: map[string]string{"resource_type": "policy", "resource_id": p.PolicyID}}
		}
		decision := "deny"
		for _, f := range p.Facts {
			if f.Key == "consent" && f.Value == "yes" || f.Key == "encounter" && f.Value == "emergency" {
				decision = "approve"
			}
		}
		return map[string]any{"decision": decision, "confidence": 0.75, "rounds": p.MaxRounds,
			"arguments": []map[string]any{{"agent": "privacy", "position": decision, "weight": 1.0}}}, nil
	}
	svc, err := c.Serve("hms.cdf.debate", "2.1.0", schema, "DebateService",
		map[string]ffi.HandlerFunc{"evaluatePolicy": evaluate})
	if err != nil {
		t.Fatalf("serving hms.cdf.debate: %v", err)
	}
	t.Cleanup(func() { svc.Close() })
}

// TestHmsSys runs cmd/hms-sys, the seed's §4.1 caller, against a Go stand-in for HMS-CDF.
func TestHmsSys(t *testing.T) {
	bin := buildCommand(t, "HMS_FFI_GO_HMS_SYS", "./cmd/hms-sys")
	b := startBroker(t)
	serveDebate(t, b.connect(t, "hms-cdf-standin", ffi.TransportAuto))

	cmd := exec.Command(bin, "--socket", b.sock)
	var stderr syncBuffer
	cmd.Stderr = &stderr // the library's log lines, if any
	out, err := cmd.Output()
	text := string(out)
	if err != nil {
		t.Fatalf("hms-sys: %v\n%s\nstderr:\n%s", err, text, stderr.String())
	}
	for _, want := range []string{
		"hms-sys [go]: ER access, no consent",
		"-> APPROVE (confidence 0.75",
		"answered by hms.cdf.debate 2.1.0",
		`evaluatePolicy("no-such-policy") -> NOT_FOUND from hms.cdf.debate`,
		"resource_id=no-such-policy",
		`evaluatePolicy("") -> INVALID_ARGUMENT from hms.cdf.debate`,
		"field=policyId",
		`evaluatePolicy("crash") -> INTERNAL from hms.cdf.debate`,
		"all calls went as expected",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("hms-sys's output lacks %q:\n%s", want, text)
		}
	}
	for _, line := range strings.Split(strings.TrimSpace(text), "\n") {
		if !strings.HasPrefix(line, "hms-sys [go]: ") {
			t.Errorf("a line without the prefix: %q", line)
		}
	}
}

// TestHmsSys_FailsWhenAnErrorIsNotTheExpectedOne serves a HMS-CDF that answers every policy:
// hms-sys must say so and exit non-zero.
func TestHmsSys_FailsWhenAnErrorIsNotTheExpectedOne(t *testing.T) {
	bin := buildCommand(t, "HMS_FFI_GO_HMS_SYS", "./cmd/hms-sys")
	b := startBroker(t)
	c := b.connect(t, "hms-cdf-lenient", ffi.TransportAuto)
	schema := filepath.Join(repoRoot(t), "schemas", "hms", "cdf", "debate.capnp")
	svc, err := c.Serve("hms.cdf.debate", "2.1.0", schema, "DebateService",
		map[string]ffi.HandlerFunc{"evaluatePolicy": func(context.Context, *ffi.Request) (any, error) {
			return map[string]any{"decision": "escalate"}, nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	out, err := exec.Command(bin, "--socket", b.sock).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "UNEXPECTED") {
		t.Fatalf("hms-sys: %v\n%s", err, out)
	}
}
