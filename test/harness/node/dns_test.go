package node

import "testing"

func TestServiceName(t *testing.T) {
	for _, tc := range []struct {
		name, svc, ns string
		ok            bool
	}{
		{"tc-autoscaler-provider.tenant-a.svc.cluster.local.", "tc-autoscaler-provider", "tenant-a", true},
		{"Kubernetes.Default.SVC.cluster.local", "kubernetes", "default", true},
		// What a resolver tries first from a pod's search path: not a Service name.
		{"tc-autoscaler-provider.tenant-a.svc.tenant-a.svc.cluster.local.", "", "", false},
		{"tc-autoscaler-provider.tenant-a.svc.svc.cluster.local.", "", "", false},
		{"tenant-a.svc.cluster.local.", "", "", false},
		{".tenant-a.svc.cluster.local.", "", "", false},
		{"example.com.", "", "", false},
		{"svc.cluster.local.", "", "", false},
	} {
		svc, ns, ok := ServiceName(tc.name)
		if svc != tc.svc || ns != tc.ns || ok != tc.ok {
			t.Errorf("ServiceName(%q) = %q, %q, %v; want %q, %q, %v", tc.name, svc, ns, ok, tc.svc, tc.ns, tc.ok)
		}
	}
}
