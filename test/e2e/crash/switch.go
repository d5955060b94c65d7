package crash

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"

	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/client-go/rest"
)

// ErrKilled is what every request of a killed component gets: the process is gone, so it
// neither sends nor learns anything any more.
var ErrKilled = errors.New("component killed by the crash switch")

// Switch stands for one run of a component process: every rest.Config the component gets is
// wrapped by the same Switch, which counts the component's writes to either apiserver and, once
// the limit-th write has been answered by the apiserver, kills the component — the write has
// landed, the component never sees the answer — by refusing every further request and calling
// kill (which cancels the component's context). A write sent after the limit-th is refused
// before it leaves, so exactly the writes up to the limit (plus any that were already in
// flight) reach the apiservers.
//
// Event writes are neither counted nor crash points: the component records them
// asynchronously and nothing depends on them. After the kill they are refused like the rest.
type Switch struct {
	id    string // the User-Agent of every request, so audit logs tell this run apart
	limit int    // 0: never kill, only count
	kill  func() // cancels the component; called once, outside the lock

	mu     sync.Mutex
	sent   int      // counted writes handed to the transport
	writes []string // counted writes the apiserver answered, in order: "PUT /apis/...  → 202"
	armed  bool     // the limit-th write was sent: no further write may leave
	dead   bool
	killed chan struct{}
}

// NewSwitch returns a Switch that kills after the limit-th answered write (limit 0: never)
// by calling kill.
func NewSwitch(limit int, kill func()) *Switch {
	return &Switch{id: UserAgentPrefix + "/" + rand.String(10), limit: limit, kill: kill, killed: make(chan struct{})}
}

// UserAgentPrefix starts the User-Agent the Switch gives every request it passes (replacing the
// component's own), followed by a random suffix unique to the Switch: the apiservers' audit logs
// then show which run made which call.
const UserAgentPrefix = "tenantcloud-crash-switch"

// UserAgent is the User-Agent of this Switch's requests.
func (s *Switch) UserAgent() string { return s.id }

// Config returns a copy of cfg whose requests pass through the Switch (after any wrapper cfg
// already has).
func (s *Switch) Config(cfg *rest.Config) *rest.Config {
	cfg = rest.CopyConfig(cfg)
	inner := cfg.WrapTransport
	cfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper {
		if inner != nil {
			rt = inner(rt)
		}
		return &switchRT{s: s, next: rt}
	}
	return cfg
}

// Exit ends the run without a crash point: whatever the component still sends afterwards (a
// goroutine that outlived its stop) is refused, as nothing outlives a process's exit.
func (s *Switch) Exit() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dead = true
}

// Killed is closed when the component has been killed.
func (s *Switch) Killed() <-chan struct{} { return s.killed }

// Dead reports whether the component has been killed.
func (s *Switch) Dead() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dead
}

// Sent is how many counted writes the Switch let through to the apiservers (answered or not).
func (s *Switch) Sent() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sent
}

// Writes are the counted writes the apiservers answered, in order.
func (s *Switch) Writes() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.writes...)
}

type switchRT struct {
	s    *Switch
	next http.RoundTripper
}

func (rt *switchRT) RoundTrip(req *http.Request) (*http.Response, error) {
	s := rt.s
	counted := IsWrite(req)
	last := false
	s.mu.Lock()
	if s.dead || (counted && s.armed) {
		s.mu.Unlock()
		return nil, ErrKilled
	}
	if counted {
		s.sent++
		if s.limit > 0 && s.sent == s.limit {
			s.armed, last = true, true
		}
	}
	s.mu.Unlock()

	req = req.Clone(req.Context())
	req.Header.Set("User-Agent", s.id)
	resp, err := rt.next.RoundTrip(req)
	if !counted || err != nil {
		// A write the transport failed to deliver was not answered; a dying process cannot
		// tell either, so it is not a crash point of its own.
		if last && err != nil {
			s.mu.Lock()
			s.armed = false
			s.sent--
			s.mu.Unlock()
		}
		return resp, err
	}
	s.mu.Lock()
	s.writes = append(s.writes, fmt.Sprintf("%s %s → %d", req.Method, req.URL.Path, resp.StatusCode))
	last = last && !s.dead // after Exit, the run is over: no crash point any more
	if last {
		s.dead = true
	}
	s.mu.Unlock()
	if !last {
		return resp, nil
	}
	// The write landed; the process dies before reading the answer.
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	if s.kill != nil {
		s.kill()
	}
	close(s.killed)
	return nil, ErrKilled
}

// IsWrite reports whether req changes state in an apiserver (including subresource writes such
// as virt-api's addvolume PUT), leaving out Events.
func IsWrite(req *http.Request) bool {
	switch req.Method {
	case http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete:
	default:
		return false
	}
	p := req.URL.Path
	// Reviews are questions, not writes (a component asking for an access review).
	if strings.HasSuffix(p, "/events") || strings.Contains(p, "/events/") || strings.Contains(p, "/apis/events.k8s.io/") ||
		strings.Contains(p, "/apis/authorization.k8s.io/") || strings.Contains(p, "/apis/authentication.k8s.io/") {
		return false
	}
	return true
}
