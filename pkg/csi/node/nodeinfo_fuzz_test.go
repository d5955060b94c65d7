package node

import (
	"strings"
	"testing"

	"github.com/tenantcloud/tenantcloud/pkg/infra"
)

// FuzzVMNameFromProviderID: csi-node keeps its own copy of the providerID parser (it must not
// depend on the infra client), so the copy must agree with pkg/infra's on every input: a Node
// the ccm and autoscaler refuse must not give csi-node an identity, and vice versa.
func FuzzVMNameFromProviderID(f *testing.F) {
	for _, s := range []string{
		"kubevirt://alpha-w1", "kubevirt://", "kubevirt://../beta-w1", "kubevirt://tenant-b/beta-w1",
		"kubevirt://A", "kubevirt://a.b", "kubevirt://" + strings.Repeat("a", 254), "kubevirt://ü", "aws:///i-1",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, providerID string) {
		got, errNode := VMNameFromProviderID(providerID)
		want, errInfra := infra.VMNameFromProviderID(providerID)
		if (errNode == nil) != (errInfra == nil) || got != want {
			t.Fatalf("%q: csi-node says %q, %v; infra says %q, %v", providerID, got, errNode, want, errInfra)
		}
		if errNode != nil {
			return
		}
		o := Options{NodeID: got, DeviceDir: "/dev/disk/by-id", KubeletDir: "/var/lib/kubelet"}
		o.defaults()
		if err := o.validate(); err != nil {
			t.Fatalf("%q yields node ID %q that csi-node itself refuses: %v", providerID, got, err)
		}
	})
}
