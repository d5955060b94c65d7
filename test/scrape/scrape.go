// Package scrape reads a program's Prometheus endpoint the way a test needs it: series by their
// exposition text, so a test can compare a series before and after an operation.
package scrape

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
)

// Series maps a series as the endpoint prints it — `name{label="v",...}`, labels sorted by
// name, the way client_golang writes them — to its value.
type Series map[string]float64

// Get scrapes url (http://host:port/metrics).
func Get(tb testing.TB, url string) Series {
	tb.Helper()
	resp, err := http.Get(url)
	if err != nil {
		tb.Fatalf("scraping %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		tb.Fatalf("scraping %s: HTTP %d, %v", url, resp.StatusCode, err)
	}
	s, err := Parse(string(body))
	if err != nil {
		tb.Fatalf("scraping %s: %v", url, err)
	}
	return s
}

// Parse reads the Prometheus text format (comments skipped, no timestamps expected).
func Parse(text string) (Series, error) {
	s := Series{}
	for line := range strings.SplitSeq(text, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			return nil, fmt.Errorf("malformed line %q", line)
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			return nil, fmt.Errorf("malformed value in %q: %w", line, err)
		}
		s[line[:i]] = v
	}
	return s, nil
}

// Sum adds the values of every series of metric name whose labels include all of labels
// (`key="value"` strings), e.g. every outcome of one operation.
func (s Series) Sum(name string, labels ...string) float64 {
	var sum float64
	for k, v := range s {
		n, rest, _ := strings.Cut(k, "{")
		if n != name {
			continue
		}
		ok := true
		for _, l := range labels {
			if !strings.Contains(rest, l) {
				ok = false
				break
			}
		}
		if ok {
			sum += v
		}
	}
	return sum
}
