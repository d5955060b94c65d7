package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"

	"k8s.io/apimachinery/pkg/types"
	kubevirtv1 "kubevirt.io/api/core/v1"

	"github.com/tenantcloud/tenantcloud/pkg/cloud/vmaddr"
	"github.com/tenantcloud/tenantcloud/pkg/infra"
	"github.com/tenantcloud/tenantcloud/test/harness/node"
)

// workers gives the worker VMs Cluster API creates real kubelet nodes (test/harness/node:
// kubelet, containerd, kube-proxy in their own namespaces), up to max at a time; VMs beyond it
// get the simulator's kubelet, a Node object no pod runs on. It is the simulator's
// capi.Kubelets.
type workers struct {
	s   *sandbox
	max int

	mu    sync.Mutex
	nodes map[types.NamespacedName]*node.Node
	// simulated are the Nodes that got the simulator's kubelet because the cap was reached.
	simulated []string
	next      int // pod CIDR index of the next node
}

func newWorkers(s *sandbox, max int) *workers {
	return &workers{s: s, max: max, nodes: map[types.NamespacedName]*node.Node{}}
}

// Join starts a real node for the VMI's guest unless max real nodes run already.
func (w *workers) Join(ctx context.Context, vmi *kubevirtv1.VirtualMachineInstance, nodeName string) (bool, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	key := types.NamespacedName{Namespace: vmi.Namespace, Name: vmi.Name}
	if _, running := w.nodes[key]; running {
		return true, nil
	}
	if len(w.nodes) >= w.max {
		if !slices.Contains(w.simulated, nodeName) {
			w.simulated = append(w.simulated, nodeName)
			note("Node %s: %d real nodes run already (the cap on this machine), so VM %s gets the simulator's kubelet: a Node object, no pod runs there", nodeName, w.max, vmi.Name)
		}
		return false, nil
	}
	addrs := vmaddr.Addresses(vmi)
	i := slices.IndexFunc(addrs, netip.Addr.Is4)
	if i < 0 {
		return false, fmt.Errorf("VMI %s has no IPv4 address yet", key)
	}
	if w.s.nodeImages == "" || w.s.images == nil {
		return false, errors.New("the harness images are not built yet")
	}
	step("VM %s booted: starting a real node for it (kubelet, containerd, kube-proxy; address %s)", vmi.Name, addrs[i])
	n, err := node.Start(ctx, w.s.env, node.Options{
		Name: nodeName, ProviderID: infra.ProviderIDPrefix + vmi.Name, NodeIP: addrs[i],
		PodCIDR:   netip.MustParsePrefix(fmt.Sprintf("10.89.%d.0/24", w.next%250)),
		DeviceDir: w.s.sim.DeviceDir(vmi.Namespace, vmi.Name),
		Images:    []string{w.s.nodeImages}, Registries: []string{w.s.images.Registry.Addr},
	})
	if err != nil {
		return false, err
	}
	w.next++
	w.nodes[key] = n
	return true, nil
}

// Leave stops the real node of a VMI that is gone (Cluster API deleted its Machine) or down.
func (w *workers) Leave(_ context.Context, vmi types.NamespacedName) error {
	w.mu.Lock()
	n, found := w.nodes[vmi]
	w.mu.Unlock()
	if !found {
		return nil
	}
	// Listed until stopped, so a story waiting for the node to go sees it gone for good.
	err := n.Stop()
	w.mu.Lock()
	delete(w.nodes, vmi)
	w.mu.Unlock()
	if err != nil {
		return err
	}
	ok("VM %s gone: its real node %s stopped (kubelet, containers, namespaces, mounts)", vmi.Name, n.Name)
	return nil
}

// node is the running real node named name, or nil.
func (w *workers) node(name string) *node.Node {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, n := range w.nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// real reports how many real nodes run.
func (w *workers) real() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.nodes)
}

// stop stops every real node (at the end, before the simulator releases the disks).
func (w *workers) stop() error {
	w.mu.Lock()
	nodes := w.nodes
	w.nodes = map[types.NamespacedName]*node.Node{}
	w.mu.Unlock()
	var errs []error
	for _, n := range nodes {
		errs = append(errs, n.Stop())
	}
	return errors.Join(errs...)
}
