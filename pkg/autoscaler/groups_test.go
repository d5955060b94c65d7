package autoscaler_test

import (
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/autoscaler/cluster-autoscaler/cloudprovider/externalgrpc/protos"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcloud/tenantcloud/pkg/autoscaler"
)

func groupIDs(t *testing.T, resp *protos.NodeGroupsResponse) []string {
	t.Helper()
	var ids []string
	for _, g := range resp.GetNodeGroups() {
		ids = append(ids, g.GetId())
	}
	return ids
}

// TestNodeGroups: only this cluster's MachineDeployments with valid bounds are groups; the
// invalid ones get an Event; another cluster's, in the same namespace, are never listed.
func TestNodeGroups(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.selector = map[string]string{"pool": "autoscaled"}
	sel := map[string]string{"pool": "autoscaled"}
	f.md("good", mdOpts{replicas: 2, annotations: bounds("1", "5"), labels: sel})
	f.md("max-only", mdOpts{annotations: map[string]string{autoscaler.AnnotationMaxSize: "3"}, labels: sel})
	f.md("no-annotations", mdOpts{labels: sel})
	f.md("not-selected", mdOpts{annotations: bounds("1", "5")})
	invalid := map[string]map[string]string{
		"max-below-min": bounds("4", "2"),
		"not-a-number":  bounds("one", "2"),
		"max-zero":      bounds("0", "0"),
		"min-only":      {autoscaler.AnnotationMinSize: "1"},
	}
	for name, ann := range invalid {
		f.md(name, mdOpts{annotations: ann, labels: sel})
	}
	// Another cluster in the same namespace, and one whose label claims ours but whose spec
	// says otherwise.
	f.md("beta-workers", mdOpts{cluster: "beta", annotations: bounds("1", "5"), labels: sel})
	f.md("spoofed-label", mdOpts{specCluster: "beta", annotations: bounds("1", "5"), labels: sel})

	cl := f.start()
	resp, err := cl.NodeGroups(f.ctx, &protos.NodeGroupsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{f.group("good"), f.group("max-only")}
	if got := groupIDs(t, resp); !slices.Equal(got, want) {
		t.Fatalf("groups %v, want %v", got, want)
	}
	g := resp.GetNodeGroups()[0]
	if g.GetMinSize() != 1 || g.GetMaxSize() != 5 || !strings.Contains(g.GetDebug(), "replicas 2") {
		t.Errorf("group %s", show(g))
	}
	if mo := resp.GetNodeGroups()[1]; mo.GetMinSize() != 0 || mo.GetMaxSize() != 3 {
		t.Errorf("max-only group %s", show(mo))
	}

	// Each invalid MachineDeployment gets one Warning Event naming the problem.
	f.eventually("Events on the invalid MachineDeployments", func() bool {
		var evs corev1.EventList
		if err := f.mgmt.List(f.ctx, &evs, client.InNamespace(f.ns)); err != nil {
			t.Fatal(err)
		}
		seen := map[string]string{}
		for _, e := range evs.Items {
			if e.Reason == autoscaler.EventReasonInvalidAnnotations && e.Type == corev1.EventTypeWarning &&
				e.InvolvedObject.Kind == "MachineDeployment" {
				seen[e.InvolvedObject.Name] = e.Message
			}
		}
		for name := range invalid {
			if _, ok := seen[name]; !ok {
				return false
			}
		}
		for _, name := range []string{"good", "max-only", "no-annotations", "not-selected", "beta-workers", "spoofed-label"} {
			if msg, ok := seen[name]; ok {
				t.Fatalf("unexpected Event on %s: %s", name, msg)
			}
		}
		if !strings.Contains(seen["max-below-min"], "below min") || !strings.Contains(seen["not-a-number"], `"one"`) {
			t.Fatalf("Event messages do not say why: %v", seen)
		}
		return true
	})

	// Groups that are not ours are unknown to every per-group RPC.
	for _, name := range []string{"beta-workers", "spoofed-label", "max-below-min", "no-annotations", "missing"} {
		_, err := cl.NodeGroupTargetSize(f.ctx, &protos.NodeGroupTargetSizeRequest{Id: f.group(name)})
		wantCode(t, err, codes.NotFound, "node group not found")
	}
	_, err = cl.NodeGroupTargetSize(f.ctx, &protos.NodeGroupTargetSizeRequest{Id: "other-ns/good"})
	wantCode(t, err, codes.NotFound, "node group not found")
}

// TestNodeGroupForNode maps Nodes by providerID through Machine → MachineSet →
// MachineDeployment; everything that is not a Machine of an autoscaled group of this cluster
// gets an empty id, never an error.
func TestNodeGroupForNode(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	md := f.md("workers", mdOpts{replicas: 2, annotations: bounds("0", "5")})
	ms := f.ms(md, "workers-abc")
	f.machine(ms, "workers-abc-1", machineOpts{providerID: f.pid("vm-1"), registered: true, nodeRef: true})
	pending := f.machine(ms, "workers-abc-2", machineOpts{})

	plain := f.md("plain", mdOpts{replicas: 1}) // not autoscaled
	plainMS := f.ms(plain, "plain-abc")
	f.machine(plainMS, "plain-abc-1", machineOpts{providerID: f.pid("vm-plain")})

	beta := f.md("beta", mdOpts{cluster: "beta", annotations: bounds("0", "5")})
	betaMS := f.ms(beta, "beta-abc")
	f.machine(betaMS, "beta-abc-1", machineOpts{providerID: f.pid("vm-beta")})

	// A Machine of ours owned by a MachineSet of another cluster, and one whose spec names
	// another cluster although its label is ours.
	f.machine(betaMS, "smuggled", machineOpts{providerID: f.pid("vm-smuggled"), mutate: func(m *clusterv1.Machine) {
		m.Labels = labelsFor(clusterName, nil)
		m.Spec.ClusterName = clusterName
	}})
	f.machine(ms, "spoofed", machineOpts{providerID: f.pid("vm-spoofed"), mutate: func(m *clusterv1.Machine) {
		m.Spec.ClusterName = "beta"
	}})
	// A Machine claiming our MachineSet's name with a wrong UID.
	f.machine(ms, "stale-owner", machineOpts{providerID: f.pid("vm-stale"), mutate: func(m *clusterv1.Machine) {
		m.OwnerReferences[0].UID = "00000000-0000-0000-0000-000000000000"
	}})

	// Another tenant namespace with the same cluster name: a different tenant.
	other := newFixture(t)
	omd := other.md("workers", mdOpts{annotations: bounds("0", "5")})
	other.machine(other.ms(omd, "workers-abc"), "workers-abc-1", machineOpts{providerID: other.pid("vm-1")})

	cl := f.start()
	tests := []struct {
		name string
		node *protos.ExternalGrpcNode
		want string
	}{
		{"registered node", realNode(f.pid("vm-1")), f.group("workers")},
		{"fake node of a pending Machine", fakeNode(autoscaler.PendingInstanceID(f.ns, pending.Name)), f.group("workers")},
		{"node of a Machine not autoscaled", realNode(f.pid("vm-plain")), ""},
		{"node of another cluster", realNode(f.pid("vm-beta")), ""},
		{"Machine under another cluster's MachineSet", realNode(f.pid("vm-smuggled")), ""},
		{"Machine with spoofed label", realNode(f.pid("vm-spoofed")), ""},
		{"Machine with a stale owner", realNode(f.pid("vm-stale")), ""},
		{"node of another tenant", realNode(other.pid("vm-1")), ""},
		{"pending id of another tenant", fakeNode(autoscaler.PendingInstanceID(other.ns, "workers-abc-1")), ""},
		{"unknown providerID", realNode(f.pid("nope")), ""},
		{"other scheme", realNode("aws:///us-east-1a/i-123"), ""},
		{"garbage", &protos.ExternalGrpcNode{Name: "../../x", ProviderID: "kubevirt://../x"}, ""},
		{"empty", &protos.ExternalGrpcNode{}, ""},
		{"nil node", nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := cl.NodeGroupForNode(f.ctx, &protos.NodeGroupForNodeRequest{Node: tt.node})
			if err != nil {
				t.Fatal(err)
			}
			if got := resp.GetNodeGroup().GetId(); got != tt.want {
				t.Fatalf("group %q, want %q", got, tt.want)
			}
			if tt.want != "" && (resp.GetNodeGroup().GetMaxSize() != 5) {
				t.Fatalf("group %s lacks its bounds", show(resp.GetNodeGroup()))
			}
		})
	}
}
