// Command hms-sys is HMS-SYS written in Go (the seed's §4.1): it asks HMS-CDF, whichever language
// serves hms.cdf.debate, to evaluate access policies before releasing records, then shows how
// each error the seed's §8.1 maps (not found, invalid argument, internal) is handled, with its
// code, source and details.
//
//	hms-sys [--socket PATH] [--range ^2.0] [--timeout 5s] [--wait 10s]
//
// It exits 0 when every call went as expected, 1 otherwise (2 for a bad command line).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	"hmsffi.dev/ffi"
)

const prefix = "hms-sys [go]: "

// Fact is one fact of debate_types.capnp.
type Fact struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// EvaluatePolicyParams are DebateService.evaluatePolicy's params.
type EvaluatePolicyParams struct {
	PolicyID  string `json:"policyId"`
	Facts     []Fact `json:"facts"`
	MaxRounds uint32 `json:"maxRounds"`
}

// Argument is one argument of the debate, as debate_types.capnp has it.
type Argument struct {
	Agent     string  `json:"agent"`
	Position  string  `json:"position"`
	Rationale string  `json:"rationale"`
	Weight    float64 `json:"weight"`
}

// PolicyEvaluation are DebateService.evaluatePolicy's results.
type PolicyEvaluation struct {
	Decision   string     `json:"decision"`
	Confidence float64    `json:"confidence"`
	Arguments  []Argument `json:"arguments"`
	Rounds     uint32     `json:"rounds"`
}

func main() {
	socket := flag.String("socket", "", "the broker's socket (default: $HMS_FFI_SOCKET, else the per-user default)")
	versionRange := flag.String("range", "^2.0", "the versions of hms.cdf.debate to bind")
	timeout := flag.Duration("timeout", 5*time.Second, "the deadline of each call")
	wait := flag.Duration("wait", 10*time.Second, "how long to wait for hms.cdf.debate to be served")
	flag.Parse()
	if flag.NArg() != 0 {
		flag.Usage()
		os.Exit(2)
	}
	if err := run(*socket, *versionRange, *timeout, *wait); err != nil {
		fmt.Fprintf(os.Stderr, "%s%v\n", prefix, err)
		os.Exit(1)
	}
}

func run(socket, versionRange string, timeout, wait time.Duration) error {
	ctx := context.Background()
	client, err := ffi.Connect(ctx, ffi.Options{SocketPath: socket, Name: "hms-sys"})
	if err != nil {
		return fmt.Errorf("connecting to the broker: %w", err)
	}
	defer client.Close()

	cdf, err := bind(ctx, client, "hms.cdf.debate", versionRange, wait)
	if err != nil {
		return fmt.Errorf("binding hms.cdf.debate@%s: %w", versionRange, err)
	}
	defer cdf.Close()
	who := cdf.ServiceID() + " " + cdf.Version()

	cases := []struct {
		label string
		facts []Fact
	}{
		{"ER access, no consent", []Fact{{"encounter", "emergency"}, {"consent", "no"}, {"dataClass", "sensitive"}}},
		{"research export, no consent", []Fact{{"encounter", "none"}, {"consent", "no"}, {"dataClass", "sensitive"}}},
		{"routine visit, consent", []Fact{{"encounter", "routine"}, {"consent", "yes"}, {"dataClass", "general"}}},
	}
	for _, c := range cases {
		var eval PolicyEvaluation
		if err := evaluate(ctx, cdf, timeout, "records.release", c.facts, &eval); err != nil {
			return fmt.Errorf("%s: %w", c.label, err)
		}
		fmt.Printf("%s%-28s -> %s (confidence %.2f, %d arguments, %d rounds), answered by %s\n",
			prefix, c.label, strings.ToUpper(eval.Decision), eval.Confidence, len(eval.Arguments),
			eval.Rounds, who)
	}

	// The seed's §8.1: each error code reaches Go as an *ffi.Error that errors.Is matches
	// against its sentinel, with the source and details the provider set.
	failed := 0
	for _, c := range []struct {
		policyID string
		want     error
	}{
		{"no-such-policy", ffi.ErrNotFound},
		{"", ffi.ErrInvalidArgument},
		{"crash", ffi.ErrInternal},
	} {
		err := evaluate(ctx, cdf, timeout, c.policyID, []Fact{{"encounter", "routine"}}, nil)
		if !handle(c.policyID, err, c.want) {
			failed++
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d of 3 errors were not the expected ones", failed)
	}
	fmt.Printf("%sall calls went as expected\n", prefix)
	return nil
}

// bind binds serviceID, waiting up to wait for a provider to appear.
func bind(ctx context.Context, client *ffi.Client, serviceID, versionRange string,
	wait time.Duration) (*ffi.Stub, error) {
	deadline := time.Now().Add(wait)
	for {
		stub, err := client.Bind(ctx, serviceID, versionRange)
		if err == nil || !errors.Is(err, ffi.ErrNotFound) || time.Now().After(deadline) {
			return stub, err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func evaluate(ctx context.Context, cdf *ffi.Stub, timeout time.Duration, policyID string,
	facts []Fact, out *PolicyEvaluation) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	params := EvaluatePolicyParams{PolicyID: policyID, Facts: facts, MaxRounds: 3}
	if out == nil {
		return cdf.Call(ctx, "evaluatePolicy", params, nil)
	}
	return cdf.Call(ctx, "evaluatePolicy", params, out)
}

// handle handles the error of an evaluation the way HMS-SYS does for each code of the seed's
// §8.1, prints it, and reports whether it was the one expected.
func handle(policyID string, err error, want error) bool {
	label := fmt.Sprintf("evaluatePolicy(%q)", policyID)
	var e *ffi.Error
	if err == nil {
		fmt.Printf("%s%s succeeded; expected %v: UNEXPECTED\n", prefix, label, want)
		return false
	}
	if !errors.As(err, &e) {
		fmt.Printf("%s%s failed with a non-FFI error %v: UNEXPECTED\n", prefix, label, err)
		return false
	}
	var action string
	switch {
	case errors.Is(err, ffi.ErrNotFound):
		action = "no such policy: record the refusal, release nothing"
	case errors.Is(err, ffi.ErrInvalidArgument):
		action = "the request was malformed: fix the caller (" + detailOr(e, "field", "no field named") + ")"
	case errors.Is(err, ffi.ErrInternal):
		action = "HMS-CDF failed: escalate to a human reviewer"
	case errors.Is(err, ffi.ErrUnavailable), errors.Is(err, ffi.ErrDeadlineExceeded):
		action = "HMS-CDF is unreachable: retry later"
	default:
		action = "unexpected code: escalate"
	}
	source := e.Source
	if source == "" {
		source = "the library"
	}
	outcome := "as expected"
	ok := errors.Is(err, want)
	if !ok {
		outcome = fmt.Sprintf("UNEXPECTED (wanted %v)", want)
	}
	fmt.Printf("%s%s -> %s from %s: %q, details {%s}; handled: %s; %s\n", prefix, label, e.Code,
		source, e.Message, formatDetails(e.Details), action, outcome)
	return ok
}

func detailOr(e *ffi.Error, key, fallback string) string {
	if v, ok := e.Details[key]; ok {
		return key + " " + v
	}
	return fallback
}

func formatDetails(d map[string]string) string {
	keys := make([]string, 0, len(d))
	for k := range d {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + d[k]
	}
	return strings.Join(parts, ", ")
}
