package crash

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"k8s.io/client-go/rest"
)

// TestSwitchKillsAfterTheNthWrite: the limit-th write reaches the server, its caller gets
// ErrKilled instead of the answer, and nothing leaves the process afterwards; reads and Events
// are not crash points.
func TestSwitchKillsAfterTheNthWrite(t *testing.T) {
	var mu sync.Mutex // the handler runs on the server's goroutines
	var seen []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Method+" "+r.URL.Path)
		mu.Unlock()
		w.WriteHeader(http.StatusCreated)
	}))
	defer srv.Close()

	var kills atomic.Int32
	sw := NewSwitch(2, func() { kills.Add(1) })
	hc, err := rest.HTTPClientFor(sw.Config(&rest.Config{Host: srv.URL}))
	if err != nil {
		t.Fatal(err)
	}
	do := func(method, path string) error {
		req, err := http.NewRequest(method, srv.URL+path, strings.NewReader("{}"))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := hc.Do(req)
		if err == nil {
			_ = resp.Body.Close()
		}
		return err
	}
	steps := []struct {
		method, path string
		killed       bool
	}{
		{http.MethodGet, "/api/v1/namespaces/a/pods", false},
		{http.MethodPost, "/api/v1/namespaces/a/events", false},
		{http.MethodPost, "/api/v1/namespaces/a/services", false},
		{http.MethodPut, "/apis/subresources.kubevirt.io/v1/namespaces/a/virtualmachines/vm/addvolume", true},
		{http.MethodGet, "/api/v1/namespaces/a/pods", true},
		{http.MethodDelete, "/api/v1/namespaces/a/services/x", true},
	}
	for i, s := range steps {
		err := do(s.method, s.path)
		if got := errors.Is(err, ErrKilled); got != s.killed {
			t.Fatalf("step %d %s %s: err %v, want killed=%v", i, s.method, s.path, err, s.killed)
		}
	}
	if !sw.Dead() || kills.Load() != 1 {
		t.Fatalf("dead %v, kill called %d times", sw.Dead(), kills.Load())
	}
	select {
	case <-sw.Killed():
	default:
		t.Fatal("Killed not closed")
	}
	want := []string{"GET /api/v1/namespaces/a/pods", "POST /api/v1/namespaces/a/events", "POST /api/v1/namespaces/a/services",
		"PUT /apis/subresources.kubevirt.io/v1/namespaces/a/virtualmachines/vm/addvolume"}
	mu.Lock()
	defer mu.Unlock()
	if strings.Join(seen, "\n") != strings.Join(want, "\n") {
		t.Fatalf("server saw %q, want %q", seen, want)
	}
	if w := sw.Writes(); len(w) != 2 || !strings.HasPrefix(w[1], "PUT ") {
		t.Fatalf("counted writes %q", w)
	}
}

// TestSwitchExit: after Exit nothing leaves, and no kill happens.
func TestSwitchExit(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if got := r.Header.Get("User-Agent"); !strings.HasPrefix(got, UserAgentPrefix+"/") {
			t.Errorf("User-Agent %q", got)
		}
	}))
	defer srv.Close()
	sw := NewSwitch(1, func() { t.Error("kill called") })
	hc, err := rest.HTTPClientFor(sw.Config(&rest.Config{Host: srv.URL, UserAgent: "component"}))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Get(srv.URL + "/api")
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	sw.Exit()
	if _, err := hc.Post(srv.URL+"/api/v1/namespaces", "application/json", strings.NewReader("{}")); !errors.Is(err, ErrKilled) {
		t.Fatalf("write after Exit: %v", err)
	}
	if len(sw.Writes()) != 0 {
		t.Fatalf("writes %v", sw.Writes())
	}
}
