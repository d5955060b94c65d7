package infra

import (
	"context"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kubevirtv1 "kubevirt.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
)

var testScope = Scope{Namespace: "tenant-a", ClusterName: "alpha"}

func vm(ns, name string, lbls map[string]string) *kubevirtv1.VirtualMachine {
	return &kubevirtv1.VirtualMachine{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: lbls}}
}

func vmi(ns, name string, lbls map[string]string) *kubevirtv1.VirtualMachineInstance {
	return &kubevirtv1.VirtualMachineInstance{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: lbls}}
}

func newFakeClient(t *testing.T, objs ...client.Object) *Client {
	t.Helper()
	scheme, err := NewScheme()
	if err != nil {
		t.Fatal(err)
	}
	fc := fake.NewClientBuilder().WithScheme(scheme).WithObjects(objs...).Build()
	c, err := NewWithReader(testScope, fc, fc)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestVMLookupRefusals(t *testing.T) {
	ours := map[string]string{LabelClusterName: "alpha"}
	c := newFakeClient(t,
		vm("tenant-a", "worker-1", ours),
		vm("tenant-a", "beta-worker", map[string]string{LabelClusterName: "beta"}),
		vm("tenant-a", "unlabelled", nil),
		vm("tenant-b", "foreign-ns", ours),
		vmi("tenant-a", "worker-1", ours),
		vmi("tenant-a", "beta-worker", map[string]string{LabelClusterName: "beta"}),
	)
	ctx := context.Background()

	tests := []struct {
		name       string
		lookup     func() (client.Object, error)
		wantName   string
		wantReason string // substring of the NotFound message; empty when found
	}{
		{"own VM", func() (client.Object, error) { return c.VM(ctx, "worker-1") }, "worker-1", ""},
		{"own VMI", func() (client.Object, error) { return c.VMI(ctx, "worker-1") }, "worker-1", ""},
		{"own VM by providerID", func() (client.Object, error) { return c.VMForNode(ctx, "kubevirt://worker-1") }, "worker-1", ""},
		{"missing VM", func() (client.Object, error) { return c.VM(ctx, "nope") }, "", `"nope" not found`},
		{"VM of another cluster", func() (client.Object, error) { return c.VM(ctx, "beta-worker") }, "", `"beta-worker" not found`},
		{"VMI of another cluster", func() (client.Object, error) { return c.VMI(ctx, "beta-worker") }, "", `"beta-worker" not found`},
		{"VM without cluster label", func() (client.Object, error) { return c.VM(ctx, "unlabelled") }, "", `"unlabelled" not found`},
		{"VM in another namespace", func() (client.Object, error) { return c.VM(ctx, "foreign-ns") }, "", `"foreign-ns" not found`},
		{"providerID of another cluster", func() (client.Object, error) { return c.VMForNode(ctx, "kubevirt://beta-worker") }, "", `"beta-worker" not found`},
		{"providerID wrong scheme", func() (client.Object, error) { return c.VMForNode(ctx, "aws://worker-1") }, "", `want prefix "kubevirt://"`},
		{"providerID empty", func() (client.Object, error) { return c.VMForNode(ctx, "") }, "", "want prefix"},
		{"providerID without name", func() (client.Object, error) { return c.VMForNode(ctx, "kubevirt://") }, "", "invalid name"},
		{"providerID path traversal", func() (client.Object, error) { return c.VMForNode(ctx, "kubevirt://../tenant-b/foreign-ns") }, "", "invalid name"},
		{"providerID with slash", func() (client.Object, error) { return c.VMForNode(ctx, "kubevirt://tenant-b/foreign-ns") }, "", "invalid name"},
		{"providerID unicode", func() (client.Object, error) { return c.VMForNode(ctx, "kubevirt://wörker-1") }, "", "invalid name"},
		{"providerID uppercase", func() (client.Object, error) { return c.VMForNode(ctx, "kubevirt://Worker-1") }, "", "invalid name"},
		{"providerID too long", func() (client.Object, error) { return c.VMForNode(ctx, "kubevirt://"+strings.Repeat("a", 254)) }, "", "invalid name"},
		{"VM name with slash", func() (client.Object, error) { return c.VM(ctx, "a/b") }, "", "invalid name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			obj, err := tt.lookup()
			if tt.wantReason == "" {
				if err != nil {
					t.Fatalf("lookup failed: %v", err)
				}
				if obj.GetName() != tt.wantName {
					t.Fatalf("got %q, want %q", obj.GetName(), tt.wantName)
				}
				return
			}
			if !apierrors.IsNotFound(err) {
				t.Fatalf("want NotFound, got %v", err)
			}
			if !strings.Contains(err.Error(), tt.wantReason) {
				t.Fatalf("error %q does not say %q", err, tt.wantReason)
			}
		})
	}
}
