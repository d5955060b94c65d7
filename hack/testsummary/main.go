// Command testsummary reads `go test -json` on stdin and prints what plain `go test` prints
// (a line per package; the output of failed tests and packages, build errors), then every test
// that skipped, with its reason. `make test` pipes through it, so a suite that skipped is
// listed at the end of the run instead of hiding inside an "ok" line:
//
//	go test -json ./... | go run ./hack/testsummary
//
// It exits 1 if any test, package or build failed.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
)

// event is one line of `go test -json` (cmd/test2json).
type event struct {
	Action     string
	Package    string
	ImportPath string // build-output, build-fail
	Test       string
	Output     string
}

// skip is a test that skipped and why.
type skip struct{ pkg, test, reason string }

// pkgState is the buffered output of one package's tests until the package ends.
type pkgState struct {
	output map[string][]string // test ("" for the package) → its output lines
	order  []string            // tests in the order they first wrote
	result map[string]string   // test → pass, fail or skip
}

type summary struct {
	out    io.Writer
	pkgs   map[string]*pkgState
	skips  []skip
	failed bool
}

func main() {
	s := &summary{out: os.Stdout, pkgs: map[string]*pkgState{}}
	if err := s.read(os.Stdin); err != nil {
		fmt.Fprintf(os.Stderr, "testsummary: %v\n", err)
		os.Exit(2)
	}
	s.finish()
	if s.failed {
		os.Exit(1)
	}
}

func (s *summary) read(r io.Reader) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		line := sc.Bytes()
		var e event
		if len(line) == 0 || line[0] != '{' || json.Unmarshal(line, &e) != nil {
			// Not an event (go test's own messages, say): pass it through.
			fmt.Fprintf(s.out, "%s\n", line)
			continue
		}
		s.event(e)
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("reading go test -json: %w", err)
	}
	return nil
}

func (s *summary) event(e event) {
	switch e.Action {
	case "build-output":
		fmt.Fprint(s.out, e.Output)
		return
	case "build-fail":
		s.failed = true
		return
	}
	p := s.pkgs[e.Package]
	if p == nil {
		p = &pkgState{output: map[string][]string{}, result: map[string]string{}}
		s.pkgs[e.Package] = p
	}
	switch e.Action {
	case "output":
		if _, seen := p.output[e.Test]; !seen {
			p.order = append(p.order, e.Test)
		}
		p.output[e.Test] = append(p.output[e.Test], e.Output)
	case "pass", "fail", "skip":
		if e.Test != "" {
			p.result[e.Test] = e.Action
			if e.Action == "skip" {
				s.skips = append(s.skips, skip{pkg: e.Package, test: e.Test, reason: reason(p.output[e.Test])})
			}
			if e.Action != "fail" {
				delete(p.output, e.Test) // passed and skipped tests print nothing, as in go test
			}
			return
		}
		s.endPackage(e.Package, p, e.Action)
	}
}

// endPackage prints a finished package: its summary line, and everything of it that did not
// pass when it failed.
func (s *summary) endPackage(name string, p *pkgState, action string) {
	delete(s.pkgs, name)
	if action != "fail" {
		for _, l := range p.output[""] {
			if strings.HasPrefix(l, "ok ") || strings.HasPrefix(l, "ok\t") || strings.HasPrefix(l, "?") {
				fmt.Fprint(s.out, l)
			}
		}
		return
	}
	s.failed = true
	for _, test := range p.order {
		if r := p.result[test]; test != "" && (r == "pass" || r == "skip") {
			continue
		}
		for _, l := range p.output[test] {
			if !framing(l) {
				fmt.Fprint(s.out, l)
			}
		}
	}
}

// finish reports packages that never ended (go test was killed) and lists the skips.
func (s *summary) finish() {
	for name, p := range s.pkgs {
		if len(p.order) > 0 {
			s.endPackage(name, p, "fail")
			fmt.Fprintf(s.out, "FAIL\t%s [no result: go test ended early]\n", name)
		}
	}
	if len(s.skips) == 0 {
		fmt.Fprintln(s.out, "\nno test skipped")
		return
	}
	fmt.Fprintf(s.out, "\nskipped tests: %d (TENANTCLOUD_REQUIRE=all makes a missing need a failure)\n", len(s.skips))
	for _, k := range s.skips {
		fmt.Fprintf(s.out, "  %s %s: %s\n", k.pkg, k.test, k.reason)
	}
}

// framing is a line go test -v adds around a test's own output.
func framing(l string) bool {
	t := strings.TrimSpace(l)
	for _, p := range []string{"=== RUN", "=== PAUSE", "=== CONT", "=== NAME"} {
		if strings.HasPrefix(t, p) {
			return true
		}
	}
	return false
}

// reason is the message of a skipped test: the last line it wrote (t.Skip's message comes
// after whatever the test logged before deciding to skip).
func reason(lines []string) string {
	for i := len(lines) - 1; i >= 0; i-- {
		if t := strings.TrimSpace(lines[i]); t != "" && !framing(lines[i]) && !strings.HasPrefix(t, "--- SKIP") {
			return t
		}
	}
	return "(no reason given)"
}
