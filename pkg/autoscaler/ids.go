package autoscaler

import (
	"fmt"
	"strings"

	"github.com/tenantcloud/tenantcloud/pkg/infra"
)

// GroupID is the node-group id of MachineDeployment namespace/name. Keeping the namespace in it
// makes ids unique across tenants in cluster-autoscaler's logs and metrics, and lets a request
// for another namespace be refused before any lookup.
func GroupID(namespace, name string) string { return namespace + "/" + name }

// ParseGroupID returns the MachineDeployment name in id, which must name namespace. The id
// comes from the client, so anything else is refused rather than interpreted.
func ParseGroupID(id, namespace string) (string, error) {
	ns, name, ok := strings.Cut(id, "/")
	if !ok || ns != namespace {
		return "", fmt.Errorf("node group id %q: want %q", id, GroupID(namespace, "<machinedeployment>"))
	}
	if err := infra.ValidateName(name); err != nil {
		return "", fmt.Errorf("node group id %q: %w", id, err)
	}
	return name, nil
}

// PendingInstancePrefix starts the instance id of a Machine that has no providerID yet. It is
// deliberately not kubevirt://, so it can never equal a Node's providerID: cluster-autoscaler
// counts such an instance as not registered, and if it gives up on it, the fake node it sends
// to DeleteNodes carries this id back.
const PendingInstancePrefix = "clusterapi-machine://"

// PendingInstanceID is the instance id of Machine namespace/name while it has no providerID.
func PendingInstanceID(namespace, name string) string {
	return PendingInstancePrefix + namespace + "/" + name
}

// ParsePendingInstanceID returns the Machine name in a pending instance id for namespace;
// ok is false for any other id.
func ParsePendingInstanceID(id, namespace string) (name string, ok bool) {
	rest, found := strings.CutPrefix(id, PendingInstancePrefix)
	if !found {
		return "", false
	}
	ns, name, found := strings.Cut(rest, "/")
	if !found || ns != namespace || infra.ValidateName(name) != nil {
		return "", false
	}
	return name, true
}
