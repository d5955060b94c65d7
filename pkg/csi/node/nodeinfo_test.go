package node

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

func TestVMNameFromProviderID(t *testing.T) {
	tests := []struct {
		providerID, want, wantErr string
	}{
		{"kubevirt://worker-abc12", "worker-abc12", ""},
		{"kubevirt://a.b-c", "a.b-c", ""},
		{"", "", "is not kubevirt://"},
		{"aws:///us-east-1a/i-0123", "", "is not kubevirt://"},
		{"kubevirt://", "", "does not end in a VM name"},
		{"kubevirt://ns/vm", "", "does not end in a VM name"},
		{"kubevirt://VM", "", "does not end in a VM name"},
		{"KUBEVIRT://vm", "", "is not kubevirt://"},
	}
	for _, tt := range tests {
		got, err := VMNameFromProviderID(tt.providerID)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("VMNameFromProviderID(%q) = %q, %v; want error containing %q", tt.providerID, got, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("VMNameFromProviderID(%q) = %q, %v; want %q", tt.providerID, got, err, tt.want)
		}
	}
}

func tenantNode(name, providerID string, labels map[string]string) *corev1.Node {
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
		Spec:       corev1.NodeSpec{ProviderID: providerID},
	}
}

func TestResolveIdentity(t *testing.T) {
	old := resolvePollInterval
	resolvePollInterval = 5 * time.Millisecond
	t.Cleanup(func() { resolvePollInterval = old })
	ctx := context.Background()

	t.Run("providerID and zone", func(t *testing.T) {
		// Node name and VM name differ on purpose: the identity comes from the providerID.
		c := fake.NewClientset(tenantNode("node-1", "kubevirt://vm-7", map[string]string{TopologyZoneKey: "zone-a"}))
		id, err := ResolveIdentity(ctx, c.CoreV1().Nodes(), "node-1", time.Second, false)
		if err != nil {
			t.Fatal(err)
		}
		if id.NodeID != "vm-7" || id.Topology[TopologyZoneKey] != "zone-a" || len(id.Topology) != 1 {
			t.Errorf("identity = %+v, want vm-7 in zone-a", id)
		}
	})

	t.Run("no zone, no topology", func(t *testing.T) {
		c := fake.NewClientset(tenantNode("node-1", "kubevirt://vm-7", nil))
		id, err := ResolveIdentity(ctx, c.CoreV1().Nodes(), "node-1", time.Second, false)
		if err != nil || id.Topology != nil {
			t.Errorf("identity = %+v, %v; want no topology", id, err)
		}
	})

	t.Run("waits for the providerID", func(t *testing.T) {
		c, gets := changingNode(tenantNode("node-1", "", nil), tenantNode("node-1", "kubevirt://vm-late", nil))
		id, err := ResolveIdentity(ctx, c.CoreV1().Nodes(), "node-1", 10*time.Second, false)
		if err != nil || id.NodeID != "vm-late" {
			t.Errorf("identity = %+v, %v; want vm-late after %d gets", id, err, *gets)
		}
	})

	t.Run("topology waits for the zone the ccm sets", func(t *testing.T) {
		c, gets := changingNode(tenantNode("node-1", "kubevirt://vm-7", nil),
			tenantNode("node-1", "kubevirt://vm-7", map[string]string{TopologyZoneKey: "zone-b"}))
		id, err := ResolveIdentity(ctx, c.CoreV1().Nodes(), "node-1", 10*time.Second, true)
		if err != nil || id.Topology[TopologyZoneKey] != "zone-b" || *gets < 3 {
			t.Errorf("identity = %+v, %v after %d gets; want zone-b once labelled", id, err, *gets)
		}
	})

	t.Run("topology gives up on a Node the ccm never labels", func(t *testing.T) {
		n := tenantNode("node-1", "kubevirt://vm-7", nil)
		n.Spec.Taints = []corev1.Taint{{Key: taintUninitialized, Value: "true", Effect: corev1.TaintEffectNoSchedule}}
		c := fake.NewClientset(n)
		_, err := ResolveIdentity(ctx, c.CoreV1().Nodes(), "node-1", 50*time.Millisecond, true)
		for _, want := range []string{`tenant Node "node-1": no topology.kubernetes.io/zone label yet`, "ccm.nodeZones=true", "the ccm has not initialised it"} {
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("err = %v, want it to say %q", err, want)
			}
		}
	})

	t.Run("gives up with a clear error", func(t *testing.T) {
		c := fake.NewClientset(tenantNode("node-1", "", nil))
		start := time.Now()
		_, err := ResolveIdentity(ctx, c.CoreV1().Nodes(), "node-1", 50*time.Millisecond, false)
		if err == nil || !strings.Contains(err.Error(), `tenant Node "node-1": spec.providerID is not set yet`) {
			t.Errorf("err = %v, want the missing providerID named", err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("gave up after %s, want about the 50ms timeout", d)
		}
	})

	t.Run("missing node", func(t *testing.T) {
		c := fake.NewClientset()
		_, err := ResolveIdentity(ctx, c.CoreV1().Nodes(), "node-x", 30*time.Millisecond, false)
		if err == nil || !strings.Contains(err.Error(), `reading tenant Node "node-x"`) {
			t.Errorf("err = %v, want the missing Node named", err)
		}
	})

	t.Run("wrong provider fails at once", func(t *testing.T) {
		c := fake.NewClientset(tenantNode("node-1", "aws:///zone/i-1", nil))
		_, err := ResolveIdentity(ctx, c.CoreV1().Nodes(), "node-1", time.Hour, false)
		if err == nil || !strings.Contains(err.Error(), `tenant Node "node-1": providerID "aws:///zone/i-1" is not kubevirt://<vm-name>`) {
			t.Errorf("err = %v", err)
		}
	})

	t.Run("forbidden fails at once", func(t *testing.T) {
		c := fake.NewClientset()
		c.PrependReactor("get", "nodes", func(k8stesting.Action) (bool, runtime.Object, error) {
			return true, nil, apierrors.NewForbidden(corev1.Resource("nodes"), "node-1", nil)
		})
		_, err := ResolveIdentity(ctx, c.CoreV1().Nodes(), "node-1", time.Hour, false)
		if !apierrors.IsForbidden(err) {
			t.Errorf("err = %v, want Forbidden", err)
		}
	})
}

// changingNode is a fake clientset whose Node is before for the first two gets and after from
// the third on; gets counts them.
func changingNode(before, after *corev1.Node) (*fake.Clientset, *int) {
	c := fake.NewClientset(before)
	gets := 0
	c.PrependReactor("get", "nodes", func(k8stesting.Action) (bool, runtime.Object, error) {
		gets++
		if gets < 3 {
			return true, before, nil
		}
		return true, after, nil
	})
	return c, &gets
}
