package hotplug

import (
	"context"
	"fmt"
	"sort"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/util/retry"
	kubevirtv1 "kubevirt.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// update is one status entry to write: status nil deletes it. from/existed are what the entry
// looked like when the step was decided; the write skips the entry if the object no longer
// matches, so a step decided on a stale cache never moves a volume backwards.
type update struct {
	from    kubevirtv1.VolumePhase
	existed bool
	status  *kubevirtv1.VolumeStatus
}

// write applies updates to a fresh copy of the VMI, leaving every other status field and
// every other volume's entry as they are. The VMI CRD has no status subresource, so this is a
// plain Update of the whole object, retried on conflict like virt-handler's.
func (r *reconciler) write(ctx context.Context, vmi *kubevirtv1.VirtualMachineInstance, updates map[string]update) error {
	key := client.ObjectKeyFromObject(vmi)
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		fresh := &kubevirtv1.VirtualMachineInstance{}
		if err := r.reader.Get(ctx, key, fresh); err != nil {
			return err
		}
		if fresh.UID != vmi.UID {
			return nil // replaced meanwhile; the next reconcile starts from the new one
		}
		merged := mergeVolumeStatus(fresh.Status.VolumeStatus, updates)
		if equality.Semantic.DeepEqual(merged, fresh.Status.VolumeStatus) {
			return nil
		}
		fresh.Status.VolumeStatus = merged
		return r.client.Update(ctx, fresh)
	})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("writing volume status of VMI %s: %w", key, err)
	}
	return nil
}

// mergeVolumeStatus returns entries with updates applied, sorted by name as virt-controller
// keeps them.
func mergeVolumeStatus(entries []kubevirtv1.VolumeStatus, updates map[string]update) []kubevirtv1.VolumeStatus {
	out := make([]kubevirtv1.VolumeStatus, 0, len(entries)+len(updates))
	seen := map[string]bool{}
	for _, e := range entries {
		seen[e.Name] = true
		u, ok := updates[e.Name]
		switch {
		case !ok || !u.existed || e.Phase != u.from:
			out = append(out, e) // not ours to change, or changed since we looked
		case u.status != nil:
			out = append(out, *u.status.DeepCopy())
		}
	}
	for name, u := range updates {
		if !seen[name] && !u.existed && u.status != nil {
			out = append(out, *u.status.DeepCopy())
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	if len(out) == 0 {
		return nil
	}
	return out
}
