package hotplug

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	kubevirtv1 "kubevirt.io/api/core/v1"
	cdiv1 "kubevirt.io/containerized-data-importer-api/pkg/apis/core/v1beta1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// forward takes a volume that is in the VMI spec one step towards Ready. It reports whether st
// changed.
func (w *walker) forward(ctx context.Context, vol kubevirtv1.Volume, st *kubevirtv1.VolumeStatus) bool {
	claim := claimName(vol)
	pvc, err := w.claim(ctx, claim)
	if err != nil {
		return w.fail(st, "reading claim", err)
	}
	changed := refreshClaimInfo(st, pvc)
	next, ok := nextPhase(st.Phase, true)
	if !ok {
		return changed
	}
	// What the world must look like before each step; waiting on it needs no requeue, the PVC
	// and DataVolume watches bring us back.
	switch next {
	case kubevirtv1.VolumePending:
		if ok, failed := w.gate(ctx, st, next, false); !ok {
			return changed || failed
		}
		w.moved(st, next)
		st.Target = ""
		st.Reason, st.Message = claimWaitText(claim, pvc)
		return true
	case kubevirtv1.VolumeBound:
		if pvc == nil || pvc.Status.Phase != corev1.ClaimBound {
			reason, msg := claimWaitText(claim, pvc)
			changed = changed || st.Reason != reason || st.Message != msg
			st.Reason, st.Message = reason, msg
			return changed
		}
	case kubevirtv1.HotplugVolumeAttachedToNode:
		// A DataVolume's claim is attached only once CDI populated it (upstream's
		// VolumeReadyToAttachToNode).
		populated, err := cdiv1.IsSucceededOrPendingPopulation(pvc, w.dataVolume(ctx))
		if err != nil || !populated {
			return changed
		}
	}
	if ok, failed := w.gate(ctx, st, next, true); !ok {
		return changed || failed
	}
	switch next {
	case kubevirtv1.HotplugVolumeAttachedToNode:
		st.HotplugVolume.AttachPodName, st.HotplugVolume.AttachPodUID = attachmentPod(w.vmi)
	case kubevirtv1.VolumeReady:
		target, err := w.plug(ctx, vol, claim, pvc)
		if err != nil {
			return w.fail(st, FaultPoint(next), err) || changed
		}
		st.Target = target
	}
	w.moved(st, next)
	return true
}

// backward takes a volume that left the VMI spec one step towards removal; gone reports that
// its entry must be deleted.
func (w *walker) backward(ctx context.Context, st *kubevirtv1.VolumeStatus) (changed, gone bool) {
	next, ok := nextPhase(st.Phase, false)
	if !ok {
		return false, false
	}
	if ok, failed := w.gate(ctx, st, next, true); !ok {
		return failed, false
	}
	if next == kubevirtv1.HotplugVolumeUnMounted || next == phaseGone {
		// The guest loses the device when the domain detaches it, before the unmount.
		if err := w.unplug(st); err != nil {
			return w.fail(st, FaultPoint(next), err), false
		}
		st.Target = ""
	}
	w.moved(st, next)
	return true, next == phaseGone
}

// claim reads the PVC from the cache; nil means it does not exist.
func (w *walker) claim(ctx context.Context, name string) (*corev1.PersistentVolumeClaim, error) {
	if name == "" {
		return nil, nil
	}
	pvc := &corev1.PersistentVolumeClaim{}
	err := w.r.client.Get(ctx, client.ObjectKey{Namespace: w.vmi.Namespace, Name: name}, pvc)
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("getting PVC %s/%s: %w", w.vmi.Namespace, name, err)
	}
	return pvc, nil
}

func (w *walker) dataVolume(ctx context.Context) func(name, namespace string) (*cdiv1.DataVolume, error) {
	return func(name, namespace string) (*cdiv1.DataVolume, error) {
		dv := &cdiv1.DataVolume{}
		if err := w.r.client.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, dv); err != nil {
			return nil, fmt.Errorf("getting DataVolume %s/%s: %w", namespace, name, err)
		}
		return dv, nil
	}
}

// claimWaitText is what a volume waiting for its claim says (upstream's
// getVolumePhaseMessageReason).
func claimWaitText(claim string, pvc *corev1.PersistentVolumeClaim) (reason, message string) {
	switch {
	case pvc == nil:
		return reasonPVCNotFound, fmt.Sprintf("PVC %s not found", claim)
	case pvc.Status.Phase == corev1.ClaimBound:
		return reasonPVCNotReady, "PVC is in phase Bound"
	case pvc.Status.Phase == corev1.ClaimLost:
		return reasonPVCNotReady, "PVC is in phase Lost"
	}
	return reasonPVCNotReady, "PVC is in phase ClaimPending"
}

// refreshClaimInfo keeps persistentVolumeClaimInfo current (capacity changes on resize), as
// virt-controller does on every sync.
func refreshClaimInfo(st *kubevirtv1.VolumeStatus, pvc *corev1.PersistentVolumeClaim) bool {
	if pvc == nil {
		return false
	}
	info := &kubevirtv1.PersistentVolumeClaimInfo{
		ClaimName:   pvc.Name,
		AccessModes: pvc.Spec.AccessModes,
		VolumeMode:  pvc.Spec.VolumeMode,
		Capacity:    pvc.Status.Capacity,
		Requests:    pvc.Spec.Resources.Requests,
	}
	if equality.Semantic.DeepEqual(info, st.PersistentVolumeClaimInfo) {
		return false
	}
	st.PersistentVolumeClaimInfo = info
	return true
}

// claimSize is the size the guest sees: the provisioned capacity, else the request.
func claimSize(pvc *corev1.PersistentVolumeClaim) int64 {
	if q, ok := pvc.Status.Capacity[corev1.ResourceStorage]; ok && !q.IsZero() {
		return q.Value()
	}
	q := pvc.Spec.Resources.Requests[corev1.ResourceStorage]
	return q.Value()
}

// plug attaches the guest disk and returns its target (vdX/sdX).
func (w *walker) plug(ctx context.Context, vol kubevirtv1.Volume, claim string, pvc *corev1.PersistentVolumeClaim) (string, error) {
	disk := diskFor(w.vmi, vol.Name)
	if disk == nil {
		return "", fmt.Errorf("volume %s has no disk in the VMI spec", vol.Name)
	}
	bus := diskBus(disk)
	target := targetName(bus, w.used)
	w.used[target] = true
	if w.r.opts.Disks == nil {
		return target, nil
	}
	if pvc == nil {
		return "", fmt.Errorf("PVC %s not found", claim)
	}
	if _, err := w.r.opts.Disks.Plug(ctx, w.vmi.Namespace, w.vmi.Name, claim, claimSize(pvc), disk.Serial, string(bus)); err != nil {
		return "", err
	}
	return target, nil
}

func (w *walker) unplug(st *kubevirtv1.VolumeStatus) error {
	if w.r.opts.Disks == nil || st.PersistentVolumeClaimInfo == nil {
		return nil
	}
	return w.r.opts.Disks.Unplug(w.vmi.Namespace, w.vmi.Name, st.PersistentVolumeClaimInfo.ClaimName)
}

func diskFor(vmi *kubevirtv1.VirtualMachineInstance, name string) *kubevirtv1.Disk {
	for i := range vmi.Spec.Domain.Devices.Disks {
		if vmi.Spec.Domain.Devices.Disks[i].Name == name {
			return &vmi.Spec.Domain.Devices.Disks[i]
		}
	}
	return nil
}

func diskBus(d *kubevirtv1.Disk) kubevirtv1.DiskBus {
	switch {
	case d.Disk != nil:
		return d.Disk.Bus
	case d.LUN != nil:
		return d.LUN.Bus
	}
	return ""
}

// usedTargets are the guest device names already taken: those in status, and the boot-time
// disks in spec order (vda, vdb, ... per bus) for volumes that are not hot-plugged.
func usedTargets(vmi *kubevirtv1.VirtualMachineInstance) map[string]bool {
	used := map[string]bool{}
	named := map[string]bool{} // volumes whose target status already reports
	for _, s := range vmi.Status.VolumeStatus {
		if s.Target != "" {
			used[s.Target] = true
			named[s.Name] = true
		}
	}
	hot := map[string]bool{}
	for _, v := range vmi.Spec.Volumes {
		hot[v.Name] = isHotplug(v)
	}
	for i := range vmi.Spec.Domain.Devices.Disks {
		d := &vmi.Spec.Domain.Devices.Disks[i]
		if hot[d.Name] || named[d.Name] || (d.Disk == nil && d.LUN == nil) {
			continue
		}
		used[targetName(diskBus(d), used)] = true
	}
	return used
}

// attachmentPod names the pod virt-controller would create to attach the VMI's hot-plugged
// volumes to the node ("hp-volume-xxxxx"); the sim creates no pod, the name and UID are
// derived from the VMI so they stay stable across reconciles.
func attachmentPod(vmi *kubevirtv1.VirtualMachineInstance) (string, types.UID) {
	sum := sha256.Sum256([]byte(vmi.UID))
	h := hex.EncodeToString(sum[:])
	return "hp-volume-" + h[:5], types.UID(h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32])
}
