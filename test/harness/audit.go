package harness

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Both apiservers write an audit log (JSON lines, Metadata level, one event per finished
// request) so tests and benchmarks count API calls the way an operator would, from the server's
// side, instead of trusting client-side counters.
const auditPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived", "ResponseStarted"]
rules:
- level: Metadata
`

func writeAuditPolicy(dir string) (string, error) {
	path := filepath.Join(dir, "audit-policy.yaml")
	if err := os.WriteFile(path, []byte(auditPolicy), 0o600); err != nil {
		return "", fmt.Errorf("writing audit policy: %w", err)
	}
	return path, nil
}

// AuditEvent is the part of an audit.k8s.io/v1 Event the harness reads.
type AuditEvent struct {
	Verb      string `json:"verb"`
	UserAgent string `json:"userAgent"`
	User      struct {
		Username string   `json:"username"`
		Groups   []string `json:"groups"`
	} `json:"user"`
	ObjectRef *struct {
		Resource    string `json:"resource"`
		Subresource string `json:"subresource"`
		Namespace   string `json:"namespace"`
		Name        string `json:"name"`
		APIGroup    string `json:"apiGroup"`
	} `json:"objectRef"`
	ResponseStatus *struct {
		Code int `json:"code"`
	} `json:"responseStatus"`
	RequestURI     string    `json:"requestURI"`
	StageTimestamp time.Time `json:"stageTimestamp"`
}

// Key names the call as "verb resource[/subresource]", e.g. "list pods", "update services/status".
func (e AuditEvent) Key() string {
	if e.ObjectRef == nil || e.ObjectRef.Resource == "" {
		return e.Verb + " " + e.RequestURI
	}
	r := e.ObjectRef.Resource
	if e.ObjectRef.Subresource != "" {
		r += "/" + e.ObjectRef.Subresource
	}
	return e.Verb + " " + r
}

// AuditLog is where the cluster's apiserver writes its audit events.
func (c *Cluster) AuditLog() string { return filepath.Join(c.dir, c.Name+"-audit.log") }

// AuditEvents reads the events that finished at or after since and pass keep (nil keeps all).
// The apiserver writes whole lines, so a partially written last line is skipped.
func (c *Cluster) AuditEvents(since time.Time, keep func(AuditEvent) bool) ([]AuditEvent, error) {
	f, err := os.Open(c.AuditLog())
	if err != nil {
		return nil, fmt.Errorf("%s: opening audit log: %w", c.Name, err)
	}
	defer f.Close()
	var out []AuditEvent
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var e AuditEvent
		if json.Unmarshal(sc.Bytes(), &e) != nil || e.StageTimestamp.Before(since) {
			continue
		}
		if keep == nil || keep(e) {
			out = append(out, e)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: reading audit log: %w", c.Name, err)
	}
	return out, nil
}

// ByUser keeps the events of one authenticated user.
func ByUser(name string) func(AuditEvent) bool {
	return func(e AuditEvent) bool { return e.User.Username == name }
}

// ByUserAgentPrefix keeps the events whose user agent starts with prefix (clients set it with
// rest.Config.UserAgent).
func ByUserAgentPrefix(prefix string) func(AuditEvent) bool {
	return func(e AuditEvent) bool { return strings.HasPrefix(e.UserAgent, prefix) }
}

// CountByKey tallies events by Key.
func CountByKey(events []AuditEvent) map[string]int {
	counts := map[string]int{}
	for _, e := range events {
		counts[e.Key()]++
	}
	return counts
}

// FormatCounts renders counts as "list pods=2, watch pods=1" in a stable order.
func FormatCounts(counts map[string]int) string {
	keys := make([]string, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%d", k, counts[k])
	}
	return strings.Join(parts, ", ")
}
