package autoscaler

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/klog/v2"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// recentMarks remembers Machines this process marked until the cache shows the mark. Without
// it, a retry that arrives while the informer still holds the unmarked Machine would take a
// second replica off for it.
type recentMarks struct {
	mu sync.Mutex
	m  map[types.UID]types.NamespacedName
}

func (r *recentMarks) add(m *clusterv1.Machine) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m == nil {
		r.m = map[types.UID]types.NamespacedName{}
	}
	r.m[m.UID] = client.ObjectKeyFromObject(m)
}

func (r *recentMarks) has(m *clusterv1.Machine) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.m[m.UID]
	return ok
}

// prune forgets Machines whose mark the cache now shows, or that are gone.
func (r *recentMarks) prune(ctx context.Context, reader client.Reader) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for uid, key := range r.m {
		m := &clusterv1.Machine{}
		err := reader.Get(ctx, key, m, noCopy)
		if apierrors.IsNotFound(err) || (err == nil && (m.UID != uid || MarkedByUs(m))) {
			delete(r.m, uid)
		}
	}
}

// marked reports whether a replica was already taken off for m, by this process or (per the
// annotation) by an earlier one.
func (p *Provider) marked(m *clusterv1.Machine) bool {
	return MarkedByUs(m) || p.marks.has(m)
}

// markAll marks machines for deletion. If one fails, the ones marked so far are unmarked again
// so that nothing is left half done, and the error is returned.
func (p *Provider) markAll(ctx context.Context, machines []*clusterv1.Machine) error {
	now := p.clock().UTC().Format(time.RFC3339)
	for i, m := range machines {
		if err := p.patchMarks(ctx, m, markPatch(m, now)); err != nil {
			p.unmarkAll(machines[:i])
			return fmt.Errorf("marking Machine %s for deletion: %w", m.Name, err)
		}
	}
	return nil
}

// unmarkAll is the best-effort rollback of markAll. It runs on a context of its own, as the
// request's may be what failed.
func (p *Provider) unmarkAll(machines []*clusterv1.Machine) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, m := range machines {
		if err := p.patchMarks(ctx, m, unmarkPatch(m)); err != nil {
			// The Machine stays marked with no replica taken off; a later DeleteNodes for it
			// will skip it. Loud, because only an operator can sort that out.
			klog.ErrorS(err, "Rolling back a deletion mark failed; remove the annotations by hand",
				"machine", klog.KObj(m), "annotations", []string{AnnotationDeleteMachine, AnnotationScaleDownRequested})
		}
	}
}

// markPatch sets the delete-machine annotation (keeping a value someone else set) and ours.
func markPatch(m *clusterv1.Machine, now string) map[string]any {
	ann := map[string]any{AnnotationScaleDownRequested: now}
	if _, ok := m.Annotations[AnnotationDeleteMachine]; !ok {
		ann[AnnotationDeleteMachine] = now
	}
	return ann
}

// unmarkPatch removes ours, and delete-machine only if it was not there before we marked.
func unmarkPatch(m *clusterv1.Machine) map[string]any {
	ann := map[string]any{AnnotationScaleDownRequested: nil}
	if _, ok := m.Annotations[AnnotationDeleteMachine]; !ok {
		ann[AnnotationDeleteMachine] = nil
	}
	return ann
}

// patchMarks applies an annotation merge patch. The UID precondition makes sure the patch
// lands on the Machine that was checked, not on a namesake created since.
func (p *Provider) patchMarks(ctx context.Context, m *clusterv1.Machine, annotations map[string]any) error {
	body, err := json.Marshal(map[string]any{"metadata": map[string]any{
		"uid": m.UID, "annotations": annotations,
	}})
	if err != nil {
		return err
	}
	// A copy: the patch's answer is written into it, and m may be the cache's own object.
	return p.infra.PatchInCluster(ctx, m.DeepCopy(), client.RawPatch(types.MergePatchType, body))
}

// waitMarked waits, bounded by cacheWait, until the cache shows the marks on machines, so that
// the next call (which reads the cache) sees them. A timeout is not an error: recentMarks
// still guards against double counting.
func (p *Provider) waitMarked(ctx context.Context, machines []*clusterv1.Machine) {
	err := wait.PollUntilContextTimeout(ctx, 5*time.Millisecond, p.cacheWait, true, func(ctx context.Context) (bool, error) {
		for _, m := range machines {
			cur := &clusterv1.Machine{}
			err := p.view.infra.Get(ctx, client.ObjectKeyFromObject(m), cur, noCopy)
			if apierrors.IsNotFound(err) {
				continue
			}
			if err != nil || (cur.UID == m.UID && !MarkedByUs(cur)) {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		klog.V(2).InfoS("Cache did not show deletion marks in time", "count", len(machines), "err", err)
	}
}
