package infra

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// NodeTopology reads the zone and region labels of infra (management-cluster) Nodes. Nodes are
// cluster-scoped, so the tenant's namespaced cache cannot hold them; each lookup is one GET,
// which needs only `get nodes` (no list/watch of every infra node). The node name it is given
// must come from infra-controlled data (a VMI's status.nodeName), never from the tenant.
type NodeTopology struct {
	reader client.Reader
}

// NewNodeTopology builds an uncached reader for infra Nodes at cfg.
func NewNodeTopology(cfg *rest.Config) (*NodeTopology, error) {
	scheme, err := NewScheme()
	if err != nil {
		return nil, err
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, fmt.Errorf("building infra node client: %w", err)
	}
	return &NodeTopology{reader: c}, nil
}

// NodeTopology is a NodeTopology reading through c's uncached client, so it shares c's HTTP
// client, scheme and REST mapper instead of building its own.
func (c *Client) NodeTopology() *NodeTopology { return &NodeTopology{reader: c.live} }

// NewNodeTopologyWithReader is NewNodeTopology over an existing reader (tests).
func NewNodeTopologyWithReader(r client.Reader) *NodeTopology { return &NodeTopology{reader: r} }

// ZoneRegion returns the well-known topology labels of infra Node name (empty when unset).
func (t *NodeTopology) ZoneRegion(ctx context.Context, name string) (zone, region string, err error) {
	if err := ValidateName(name); err != nil {
		return "", "", err
	}
	n := &corev1.Node{}
	if err := t.reader.Get(ctx, client.ObjectKey{Name: name}, n); err != nil {
		return "", "", fmt.Errorf("getting infra node %s: %w", name, err)
	}
	return n.Labels[corev1.LabelTopologyZone], n.Labels[corev1.LabelTopologyRegion], nil
}
