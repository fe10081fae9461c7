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

// TestReadme builds the README's first example as its own module, as the README says, and runs
// it against a Go stand-in for HMS-EMR.
func TestReadme(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	text := string(readme)
	start := strings.Index(text, "```go\n")
	if start < 0 {
		t.Fatal("README.md has no Go example")
	}
	text = text[start+len("```go\n"):]
	end := strings.Index(text, "```")
	if end < 0 {
		t.Fatal("README.md's first Go example does not end")
	}
	dir := t.TempDir()
	here, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	gomod := "module hello\n\ngo 1.19\n\nrequire hmsffi.dev/ffi v0.0.0\n\nreplace hmsffi.dev/ffi => " +
		here + "\n"
	for name, content := range map[string]string{"main.go": text[:end], "go.mod": gomod} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(dir, "hello")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Dir = dir
	build.Env = append(os.Environ(), "GOFLAGS=-mod=mod")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build of the README's example: %v\n%s", err, out)
	}

	b := startBroker(t)
	c := b.connect(t, "hms-emr-standin", ffi.TransportAuto)
	schema := filepath.Join(repoRoot(t), "schemas", "hms", "emr", "patient.capnp")
	svc, err := c.Serve("hms.emr.patient", "1.2.0", schema, "PatientService",
		map[string]ffi.HandlerFunc{"getPatient": func(ctx context.Context, req *ffi.Request) (any, error) {
			var p struct {
				PatientID string `json:"patientId"`
			}
			if err := req.Params(&p); err != nil {
				return nil, err
			}
			return map[string]any{"patient": map[string]any{"patientId": p.PatientID,
				"givenName": "Ada", "familyName": "Lovelace"}}, nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()

	run := exec.Command(bin)
	run.Env = append(os.Environ(), "HMS_FFI_SOCKET="+b.sock)
	var stderr syncBuffer
	run.Stderr = &stderr // the library's log lines, if any
	out, err := run.Output()
	if err != nil || strings.TrimSpace(string(out)) != "p-1001: Ada Lovelace (from hms.emr.patient 1.2.0)" {
		t.Fatalf("the README's example: %v\n%s\nstderr:\n%s", err, out, stderr.String())
	}
}
