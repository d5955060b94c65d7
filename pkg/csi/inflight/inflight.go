// Package inflight admits one CSI operation per volume (or snapshot) at a time, for the
// controller and the node plugin alike. COs retry a call whose deadline passed while the first
// attempt still runs (waiting for CDI, a hot-plug or mkfs of a large disk can outlast it);
// running both would race on the same infra objects, devices or mount points. The loser gets
// ABORTED, which the CSI spec reserves for "operation pending for volume" and COs retry.
//
// Publishing a multi-node volume to several nodes at once is not such a race: each call
// touches only its own node's VM. Those calls take the volume shared, keyed by volume and node
// (as aws-ebs-csi-driver keys its publish guard), so they run side by side while every other
// operation on the volume still excludes them.
package inflight

import (
	"fmt"
	"slices"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Guard tracks the operations running per ID. The zero value is not usable; use New.
type Guard struct {
	mu   sync.Mutex
	held map[string]*holders
}

// holders of one ID: one exclusive operation, or shared ones keyed by node.
type holders struct {
	exclusive string            // the operation holding the ID alone; "" when shared
	shared    map[string]string // node → the operation holding the ID for that node
}

// New returns an empty Guard.
func New() *Guard { return &Guard{held: map[string]*holders{}} }

// Acquire claims id for op alone. It returns the release func (idempotent), or an Aborted
// status naming the operation already running on id.
func (g *Guard) Acquire(id, op string) (release func(), err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if h, busy := g.held[id]; busy {
		return nil, aborted(id, h.running(), op)
	}
	g.held[id] = &holders{exclusive: op}
	return g.releaser(func() { delete(g.held, id) }), nil
}

// AcquireShared claims id for op on node: it waits for no other node's shared holder, but
// excludes an exclusive holder of id and another operation on the same id and node.
func (g *Guard) AcquireShared(id, node, op string) (release func(), err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	h := g.held[id]
	switch {
	case h == nil:
		h = &holders{shared: map[string]string{}}
		g.held[id] = h
	case h.exclusive != "":
		return nil, aborted(id, h.exclusive, op)
	case h.shared[node] != "":
		return nil, aborted(id, sharedOp(h.shared[node], node), op)
	}
	h.shared[node] = op
	return g.releaser(func() {
		delete(h.shared, node)
		if len(h.shared) == 0 {
			delete(g.held, id)
		}
	}), nil
}

// releaser runs free under the lock, once: a second call must not free a later holder.
func (g *Guard) releaser(free func()) func() {
	var once sync.Once
	return func() {
		once.Do(func() {
			g.mu.Lock()
			defer g.mu.Unlock()
			free()
		})
	}
}

// running names an operation holding the ID (the first node's, for shared holders).
func (h *holders) running() string {
	if h.exclusive != "" {
		return h.exclusive
	}
	nodes := make([]string, 0, len(h.shared))
	for n := range h.shared {
		nodes = append(nodes, n)
	}
	slices.Sort(nodes)
	return sharedOp(h.shared[nodes[0]], nodes[0])
}

func sharedOp(op, node string) string { return fmt.Sprintf("%s (node %q)", op, node) }

func aborted(id, running, op string) error {
	return status.Errorf(codes.Aborted, "%s on %q is already in progress; retry %s later", running, id, op)
}
