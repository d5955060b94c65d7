package scrape

import (
	"bytes"
	"fmt"
	"regexp"
	"sync"
)

// Output is a program's stdout/stderr, safe for the process's writes and the test's reads.
type Output struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (o *Output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.Write(p)
}

// Bytes returns a copy of what was written so far.
func (o *Output) Bytes() []byte {
	o.mu.Lock()
	defer o.mu.Unlock()
	return bytes.Clone(o.b.Bytes())
}

func (o *Output) String() string { return string(o.Bytes()) }

// servingRE matches the line pkg/metrics logs once the endpoint listens.
var servingRE = regexp.MustCompile(`"Serving metrics" address="([^"]+)"`)

// MetricsURL is the /metrics URL a tenantcloud program logged (programs bind port 0 in tests).
func MetricsURL(log string) (string, error) {
	m := servingRE.FindStringSubmatch(log)
	if m == nil {
		return "", fmt.Errorf("no \"Serving metrics\" line in the log")
	}
	return "http://" + m[1] + "/metrics", nil
}
