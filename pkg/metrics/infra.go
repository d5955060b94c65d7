package metrics

import (
	"net/http"
	"strconv"
	"strings"
)

// WrapInfraTransport counts every request to the management apiserver that goes through rt.
// Install it with rest.Config.Wrap on the infra rest config before building clients from it:
// client-go's own metrics do not say which cluster a request went to, and a component talks to
// two.
func (m *Metrics) WrapInfraTransport(rt http.RoundTripper) http.RoundTripper {
	if m == nil {
		return rt
	}
	return roundTripperFunc(func(req *http.Request) (*http.Response, error) {
		resp, err := rt.RoundTrip(req)
		code := "none" // no answer: connection refused, timeout, TLS failure
		if err == nil {
			code = strconv.Itoa(resp.StatusCode)
		}
		resource := Resource(req.URL.Path)
		m.infraRequests.WithLabelValues(req.Method, resource, code).Inc()
		if err != nil || resp.StatusCode >= 400 {
			m.infraErrors.WithLabelValues(req.Method, resource, code).Inc()
		}
		return resp, err
	})
}

type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// Resource names the API resource of a Kubernetes API path, with its subresource:
// "/api/v1/namespaces/ns/services/x/status" → "services/status",
// "/apis/subresources.kubevirt.io/v1/namespaces/ns/virtualmachines/vm/addvolume" →
// "virtualmachines/addvolume". Object names and namespaces are left out to bound the label's
// cardinality; paths that are not resource paths (discovery, /version) give "".
func Resource(path string) string {
	parts := strings.Split(strings.Trim(path, "/"), "/")
	switch {
	case len(parts) >= 3 && parts[0] == "api":
		parts = parts[2:] // api, version
	case len(parts) >= 4 && parts[0] == "apis":
		parts = parts[3:] // apis, group, version
	default:
		return ""
	}
	if len(parts) >= 2 && parts[0] == "namespaces" {
		if len(parts) == 2 {
			return "namespaces"
		}
		parts = parts[2:]
	}
	switch len(parts) {
	case 0:
		return ""
	case 1, 2:
		return parts[0]
	default:
		return parts[0] + "/" + parts[2]
	}
}
