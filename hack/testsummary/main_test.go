package main

import (
	"os"
	"strings"
	"testing"
)

// testdata/run.json is `go test -json` of a throwaway module: a package with a passing, a
// skipping, a failing test and a skipping subtest; a passing package; one without tests; one
// that does not build.
func TestSummary(t *testing.T) {
	f, err := os.Open("testdata/run.json")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out strings.Builder
	s := &summary{out: &out, pkgs: map[string]*pkgState{}}
	if err := s.read(f); err != nil {
		t.Fatal(err)
	}
	s.finish()
	got := out.String()
	for _, want := range []string{
		"a_test.go:6: boom\n",           // a failed test's output
		"--- FAIL: TestFail",            //
		"FAIL\tdemo\t",                  // its package
		"ok  \tdemo/b\t",                // a passing package: one line
		"?   \tdemo/c\t[no test files]", //
		"d/d.go:2:12: undefined: x",     // the build error
		"FAIL\tdemo/d [build failed]",   //
		"skipped tests: 2",              // the list at the end …
		"demo TestSkip: a_test.go:4: needs disks: no loop devices\n",
		"demo TestSub/inner: a_test.go:5: needs bin: helm\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("summary lacks %q:\n%s", want, got)
		}
	}
	for _, unwanted := range []string{"noise", "=== RUN", "before\n"} { // passed and skipped tests print nothing
		if strings.Contains(got, unwanted) {
			t.Errorf("summary has %q:\n%s", unwanted, got)
		}
	}
	if !s.failed {
		t.Error("a failed test and a failed build: want failed")
	}
}
