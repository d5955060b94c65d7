package autoscaler

import (
	"strings"
	"testing"

	"github.com/tenantcloud/tenantcloud/pkg/infra"
)

// FuzzIDs: node-group and pending-instance ids come from cluster-autoscaler, which a tenant
// does not control but whose inputs (Node names, providerIDs) it does. An id that parses
// names a valid MachineDeployment/Machine of our namespace only, and formats back to itself.
func FuzzIDs(f *testing.F) {
	const ns = "tenant-a"
	for _, s := range []string{
		"tenant-a/workers", "tenant-b/workers", "tenant-a/", "tenant-a/../tenant-b/workers", "tenant-a/a/b",
		"/workers", "tenant-a/Workers", "tenant-a/" + strings.Repeat("w", 254), "tenant-a/ü",
		"clusterapi-machine://tenant-a/m-1", "clusterapi-machine://tenant-b/m-1", "clusterapi-machine://tenant-a/",
		"clusterapi-machine://tenant-a/m/../x", "kubevirt://beta-w1", "clusterapi-machine://tenant-a",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		if name, err := ParseGroupID(id, ns); err == nil {
			if infra.ValidateName(name) != nil || GroupID(ns, name) != id {
				t.Fatalf("group id %q → %q", id, name)
			}
		} else if name != "" {
			t.Fatalf("refused group id %q yielded %q", id, name)
		}
		if name, ok := ParsePendingInstanceID(id, ns); ok {
			if infra.ValidateName(name) != nil || PendingInstanceID(ns, name) != id {
				t.Fatalf("pending id %q → %q", id, name)
			}
			if strings.HasPrefix(id, infra.ProviderIDPrefix) {
				t.Fatalf("pending id %q looks like a providerID", id)
			}
		} else if name != "" {
			t.Fatalf("refused pending id %q yielded %q", id, name)
		}
	})
}
