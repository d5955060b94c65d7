package reconnect

import (
	"context"
	"errors"
	"net"
	"net/http"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
)

// server is an HTTP server that can go away and come back on the same address, as an
// apiserver restarting does.
type server struct {
	addr string
	srv  *http.Server
}

func startServer(t *testing.T, addr string) *server {
	t.Helper()
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	s := &server{addr: lis.Addr().String(), srv: &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
	})}}
	go func() { _ = s.srv.Serve(lis) }()
	t.Cleanup(func() { _ = s.srv.Close() })
	return s
}

func (s *server) stop() { _ = s.srv.Close() }

func getOK(ctx context.Context, c *http.Client, url string) error {
	_, err := get(ctx, c, url)
	return err
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	err := wait.PollUntilContextTimeout(context.Background(), 10*time.Millisecond, 30*time.Second, true,
		func(context.Context) (bool, error) { return cond(), nil })
	if err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

// TestGateHoldsRequestsUntilTheServerIsBack: the request that finds the server gone fails, the
// gate closes, requests made meanwhile wait instead of failing (while the prober keeps asking
// on its backoff), and they go through once the server is back on the same address.
func TestGateHoldsRequestsUntilTheServerIsBack(t *testing.T) {
	s := startServer(t, "127.0.0.1:0")
	cfg, g, err := Config(&rest.Config{Host: "http://" + s.addr}, "test")
	if err != nil {
		t.Fatal(err)
	}
	c, err := rest.HTTPClientFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + s.addr + "/api"
	ctx := context.Background()
	if err := getOK(ctx, c, url); err != nil {
		t.Fatalf("server up: %v", err)
	}
	if g.Down() {
		t.Fatal("gate closed while the server answers")
	}

	s.stop()
	if err := getOK(ctx, c, url); err == nil {
		t.Fatal("request to a stopped server succeeded")
	}
	if !g.Down() {
		t.Fatal("gate open after a request got no answer")
	}
	held := make(chan error, 1)
	go func() { held <- getOK(ctx, c, url) }()
	waitFor(t, "three probes", func() bool { return g.Probes() >= 3 })
	select {
	case err := <-held:
		t.Fatalf("request returned while the server was away (err %v); it should wait", err)
	default:
	}

	// A caller that gives up is let go with its context's error.
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if err := getOK(short, c, url); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("request with an expiring context: %v, want DeadlineExceeded", err)
	}

	startServer(t, s.addr)
	select {
	case err := <-held:
		if err != nil {
			t.Fatalf("held request after the server came back: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("held request not released 30 s after the server came back")
	}
	if g.Down() {
		t.Error("gate still closed after the server came back")
	}
	if n := g.Outages(); n != 1 {
		t.Errorf("%d outages recorded, want 1", n)
	}
}

// TestProbeSchedule: the probes back off exponentially to the cap, and the delay after the
// apiserver's return is bounded by the cap plus jitter.
func TestProbeSchedule(t *testing.T) {
	b := Backoff
	var total time.Duration
	var last time.Duration
	for range 50 {
		last = b.Step()
		total += last
	}
	if max := time.Duration(float64(Backoff.Cap) * (1 + Backoff.Jitter)); last > max || last < Backoff.Cap {
		t.Errorf("delay after 50 probes %s, want within [%s, %s]", last, Backoff.Cap, max)
	}
	// A minute-long outage costs at most this many probes per gate.
	if n := probesIn(time.Minute); n > 40 {
		t.Errorf("%d probes in a minute, want ≤ 40", n)
	}
}

func probesIn(d time.Duration) int {
	b := Backoff
	b.Jitter = 0 // the shortest delays: the most probes
	n := 0
	for elapsed := time.Duration(0); elapsed < d; n++ {
		elapsed += b.Step()
	}
	return n
}

func TestUnanswered(t *testing.T) {
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	for _, c := range []struct {
		name string
		ctx  context.Context
		err  error
		want bool
	}{
		{"answer", context.Background(), nil, false},
		{"refused", context.Background(), &net.OpError{Op: "dial", Err: errors.New("connect: connection refused")}, true},
		{"caller gave up", cancelled, context.Canceled, false},
		{"cancelled error on a live context", context.Background(), context.Canceled, false},
	} {
		if got := Unanswered(c.ctx, c.err); got != c.want {
			t.Errorf("%s: Unanswered = %v, want %v", c.name, got, c.want)
		}
	}
}
