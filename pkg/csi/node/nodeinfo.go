package node

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/tenantcloud/tenantcloud/pkg/csi"
	"k8s.io/klog/v2"
)

// ProviderIDPrefix starts the providerID of every tenant Node backed by a KubeVirt VM
// ("kubevirt://<vm-name>", set by CAPK's kubelet configuration).
const ProviderIDPrefix = "kubevirt://"

// TopologyZoneKey is the topology segment NodeGetInfo reports when the tenant Node carries the
// well-known zone label.
const TopologyZoneKey = csi.TopologyZoneKey

// Identity is what the node reports about itself in NodeGetInfo.
type Identity struct {
	// NodeID is the VM name.
	NodeID string
	// Topology is nil when the Node has no zone.
	Topology map[string]string
}

// VMNameFromProviderID extracts the VM name from a tenant Node's providerID.
func VMNameFromProviderID(providerID string) (string, error) {
	name, ok := strings.CutPrefix(providerID, ProviderIDPrefix)
	if !ok {
		return "", fmt.Errorf("providerID %q is not %s<vm-name>", providerID, ProviderIDPrefix)
	}
	if msgs := validation.IsDNS1123Subdomain(name); len(msgs) > 0 {
		return "", fmt.Errorf("providerID %q does not end in a VM name: %s", providerID, strings.Join(msgs, "; "))
	}
	return name, nil
}

// IdentityFromNode derives the node identity from a tenant Node object.
func IdentityFromNode(n *corev1.Node) (Identity, error) {
	vm, err := VMNameFromProviderID(n.Spec.ProviderID)
	if err != nil {
		return Identity{}, fmt.Errorf("tenant Node %q: %w", n.Name, err)
	}
	id := Identity{NodeID: vm}
	if zone := n.Labels[TopologyZoneKey]; zone != "" {
		id.Topology = map[string]string{TopologyZoneKey: zone}
	}
	return id, nil
}

// errNoProviderID marks a Node whose providerID is not set yet; it is worth waiting for.
var errNoProviderID = errors.New("spec.providerID is not set yet")

// errNoZone marks a Node without the zone label when topology needs it; the ccm sets the label
// when it initialises the Node, so it is worth waiting for too.
var errNoZone = errors.New("no " + TopologyZoneKey + " label yet: the ccm sets it from the infra Node running the VM when it initialises the Node (management chart ccm.nodeZones=true)")

// taintUninitialized is the taint the kubelet (--cloud-provider=external) puts on a new Node and
// the ccm removes once it has initialised it.
const taintUninitialized = "node.cloudprovider.kubernetes.io/uninitialized"

// resolvePollInterval is how often ResolveIdentity re-reads the Node; a variable for tests.
var resolvePollInterval = 2 * time.Second

// NodeGetter reads one tenant Node; client-go's typed NodeInterface is one. csi-node passes a
// client that knows only core/v1 (linking the generated clientset costs every tenant node
// megabytes of memory for API groups it never reads).
type NodeGetter interface {
	Get(ctx context.Context, name string, opts metav1.GetOptions) (*corev1.Node, error)
}

// ResolveIdentity reads the tenant Node nodeName and derives the identity from its providerID
// and zone label. A Node that is missing or has no providerID yet is polled until timeout:
// the DaemonSet pod may start before the kubelet or the cloud controller manager has set it.
// With requireZone (volume topology is on) a Node without the zone label is polled the same
// way, since the ccm labels it when it initialises it, typically after the DaemonSet pod
// started (the pod tolerates the uninitialized taint). Registering without a zone would leave
// the Node's CSINode without topology keys until the plugin restarts, and the provisioner
// refuses to provision for such a node; failing instead restarts the pod until the label is
// there, as drivers that take their zone from the Node's labels do. A providerID of the wrong
// form fails at once, since waiting cannot fix it.
func ResolveIdentity(ctx context.Context, nodes NodeGetter, nodeName string, timeout time.Duration, requireZone bool) (Identity, error) {
	if nodeName == "" {
		return Identity{}, errors.New("tenant Node name is empty")
	}
	var id Identity
	var lastErr error
	err := wait.PollUntilContextTimeout(ctx, resolvePollInterval, timeout, true, func(ctx context.Context) (bool, error) {
		n, err := nodes.Get(ctx, nodeName, metav1.GetOptions{})
		if err != nil {
			lastErr = fmt.Errorf("reading tenant Node %q: %w", nodeName, err)
			if apierrors.IsForbidden(err) || apierrors.IsUnauthorized(err) {
				return false, lastErr // RBAC does not fix itself
			}
			klog.FromContext(ctx).V(2).Info("Waiting for the tenant Node", "node", nodeName, "err", err)
			return false, nil
		}
		if n.Spec.ProviderID == "" {
			lastErr = fmt.Errorf("tenant Node %q: %w", nodeName, errNoProviderID)
			klog.FromContext(ctx).V(2).Info("Waiting for the tenant Node's providerID", "node", nodeName)
			return false, nil
		}
		id, err = IdentityFromNode(n)
		if err == nil && requireZone && id.Topology == nil {
			lastErr = fmt.Errorf("tenant Node %q: %w", nodeName, errNoZone)
			if uninitialized(n) {
				lastErr = fmt.Errorf("%w (the Node still carries %s: the ccm has not initialised it)", lastErr, taintUninitialized)
			}
			klog.FromContext(ctx).V(2).Info("Waiting for the tenant Node's zone label", "node", nodeName, "uninitialized", uninitialized(n))
			return false, nil
		}
		return err == nil, err
	})
	if err == nil {
		return id, nil
	}
	if lastErr != nil && wait.Interrupted(err) {
		return Identity{}, fmt.Errorf("gave up after %s: %w", timeout, lastErr)
	}
	return Identity{}, err
}

func uninitialized(n *corev1.Node) bool {
	for _, t := range n.Spec.Taints {
		if t.Key == taintUninitialized {
			return true
		}
	}
	return false
}
