package metrics

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestResource(t *testing.T) {
	for path, want := range map[string]string{
		"/api/v1/namespaces/ns/services":                                               "services",
		"/api/v1/namespaces/ns/services/x":                                             "services",
		"/api/v1/namespaces/ns/services/x/status":                                      "services/status",
		"/api/v1/nodes/n1":                                                             "nodes",
		"/api/v1/namespaces/ns":                                                        "namespaces",
		"/apis/cdi.kubevirt.io/v1beta1/namespaces/ns/datavolumes":                      "datavolumes",
		"/apis/subresources.kubevirt.io/v1/namespaces/ns/virtualmachines/vm/addvolume": "virtualmachines/addvolume",
		"/apis/events.k8s.io/v1/namespaces/ns/events":                                  "events",
		"/version": "", "/apis": "", "/api/v1": "", "/apis/cdi.kubevirt.io/v1beta1": "",
	} {
		if got := Resource(path); got != want {
			t.Errorf("Resource(%q) = %q, want %q", path, got, want)
		}
	}
}

func TestInfraTransport(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/missing") {
			w.WriteHeader(http.StatusNotFound)
		}
	}))
	defer srv.Close()
	m := New("test")
	c := &http.Client{Transport: m.WrapInfraTransport(http.DefaultTransport)}
	for _, p := range []string{"/api/v1/namespaces/ns/services/ok", "/api/v1/namespaces/ns/services/missing"} {
		resp, err := c.Get(srv.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
	}
	if got := testutil.ToFloat64(m.infraRequests.WithLabelValues("GET", "services", "200")); got != 1 {
		t.Errorf("200 requests = %v, want 1", got)
	}
	if got := testutil.ToFloat64(m.infraErrors.WithLabelValues("GET", "services", "404")); got != 1 {
		t.Errorf("404 errors = %v, want 1", got)
	}
	if got := testutil.CollectAndCount(m.infraErrors); got != 1 {
		t.Errorf("%d error series, want only the 404", got)
	}
}

func TestNilMetrics(t *testing.T) {
	var m *Metrics
	m.Begin("x")(OutcomeOK)
	if rt := m.WrapInfraTransport(http.DefaultTransport); rt != http.DefaultTransport {
		t.Error("nil metrics wrapped the transport")
	}
}
