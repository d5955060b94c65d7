package controller

import (
	"context"
	"fmt"
	"slices"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/klog/v2"
	kubevirtv1 "kubevirt.io/api/core/v1"
	cdiv1 "kubevirt.io/containerized-data-importer-api/pkg/apis/core/v1beta1"

	tccsi "github.com/tenantcloud/tenantcloud/pkg/csi"
	"github.com/tenantcloud/tenantcloud/pkg/grpcerr"
)

// ControllerPublishVolume hot-plugs the volume into the VM the node ID names and returns once
// the VMI reports the volume Ready, with the serial and bus the node plugin finds the disk by.
func (s *Server) ControllerPublishVolume(ctx context.Context, req *csi.ControllerPublishVolumeRequest) (*csi.ControllerPublishVolumeResponse, error) {
	id, nodeID := req.GetVolumeId(), req.GetNodeId()
	if err := validateID("volume_id", id); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if err := validateID("node_id", nodeID); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if req.GetVolumeCapability() == nil {
		return nil, status.Errorf(codes.InvalidArgument, "volume %q: volume_capability is required", id)
	}
	if err := validateCapability(req.GetVolumeCapability()); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "volume %q: volume_capability: %v", id, err)
	}
	release, err := s.publishGuard(id, nodeID, "ControllerPublishVolume", multiNode(req.GetVolumeCapability().GetAccessMode().GetMode()))
	if err != nil {
		return nil, err
	}
	defer release()
	logger := klog.FromContext(ctx).WithValues("volumeID", id, "vm", nodeID)
	ctx = klog.NewContext(ctx, logger)

	v, err := s.getVolume(ctx, id)
	if err != nil {
		return nil, err
	}
	vm, err := s.infra.VM(ctx, nodeID)
	if apierrors.IsNotFound(err) {
		return nil, status.Errorf(codes.NotFound, "node %q not found: no VM of this cluster has that name", nodeID)
	}
	if err != nil {
		return nil, apiError(err, "looking up VM %q", nodeID)
	}
	if ok, reason := capabilitySupported(req.GetVolumeCapability(), v.accessModes); !ok {
		return nil, status.Errorf(codes.InvalidArgument, "volume %q: %s", id, reason)
	}
	if v.terminating() || !v.succeeded() {
		return nil, status.Errorf(codes.FailedPrecondition, "volume %q is not ready to be published (%s)", id, describeDataVolume(v.dv))
	}
	if err := s.checkReachable(ctx, v, vm.Name); err != nil {
		return nil, err
	}
	// Repairing the owner reference (a live GET of the Cluster, and a patch when it is
	// missing) does not depend on the hot-plug: it runs beside it instead of before it, and is
	// done before the call answers.
	owned := make(chan struct{})
	go func() {
		defer close(owned)
		s.ensureClusterOwner(ctx, v.dv)
	}()
	defer func() { <-owned }()
	if singleAttach(v.accessModes) {
		att, err := s.attachments(ctx)
		if err != nil {
			return nil, err
		}
		if others := slices.DeleteFunc(slices.Clone(att[id]), func(n string) bool { return n == vm.Name }); len(others) > 0 {
			return nil, status.Errorf(codes.FailedPrecondition,
				"volume %q is single-node (infra ReadWriteOnce) and already published to VM %v; unpublish it there first", id, others)
		}
	}

	serial := v.serial
	plug := s.hotplug
	if s.declarative() {
		plug = s.hotplugDeclarative
	}
	if err := plug(ctx, v, vm, serial); err != nil {
		return nil, err
	}
	if err := s.waitHotplugged(ctx, vm.Name, id); err != nil {
		s.events.Eventf(v.dv, vm, corev1.EventTypeWarning, "PublishTimeout", "Publish", "volume not ready in VM %s: %v", vm.Name, err)
		return nil, err
	}
	s.events.Eventf(v.dv, vm, corev1.EventTypeNormal, "Published", "Publish", "hot-plugged into VM %s (%s, serial %s)", vm.Name, v.bus, serial)
	return &csi.ControllerPublishVolumeResponse{PublishContext: map[string]string{
		tccsi.PublishContextSerial: serial,
		tccsi.PublishContextBus:    v.bus,
	}}, nil
}

// publishGuard claims the volume for a publish or unpublish: for vm alone (shared with other
// VMs' calls) when perVM, otherwise the whole volume. A publish of a multi-node volume only
// touches vm's VM, so concurrent publishes of an RWX volume to several nodes (a live
// migration, a ReadWriteMany Deployment) are not Aborted; a single-node publish keeps the
// whole volume, so its check that no other VM has the volume cannot race another publish.
func (s *Server) publishGuard(id, vm, op string, perVM bool) (release func(), err error) {
	if perVM {
		return s.inflight.AcquireShared(id, vm, op)
	}
	return s.inflight.Acquire(id, op)
}

// maxHotplugAttempts bounds the immediate retries of a hot-plug request that failed in the
// infra apiserver or virt-api (5xx, e.g. virt-api losing a write conflict on a busy VMI).
const maxHotplugAttempts = 5

// hotplug makes sure the VM spec and its running instance both carry the volume, issuing only
// the requests still needed:
//   - the VM-level addvolume (202, or 409 when the VM already has it);
//   - if the VM has it but the running VMI does not (a previous attempt died between the two
//     writes, or virt-api failed half-way), the VMI-level addvolume as well.
func (s *Server) hotplug(ctx context.Context, v *volume, vm *kubevirtv1.VirtualMachine, serial string) error {
	logger := klog.FromContext(ctx)
	opts := func() *kubevirtv1.AddVolumeOptions {
		return &kubevirtv1.AddVolumeOptions{
			Name: v.id,
			Disk: &kubevirtv1.Disk{
				Name:       v.id,
				Serial:     serial,
				DiskDevice: kubevirtv1.DiskDevice{Disk: &kubevirtv1.DiskTarget{Bus: kubevirtv1.DiskBus(v.bus)}},
			},
			VolumeSource: &kubevirtv1.HotplugVolumeSource{
				DataVolume: &kubevirtv1.DataVolumeSource{Name: v.id, Hotpluggable: true},
			},
		}
	}
	vmi, err := s.infra.VMI(ctx, vm.Name)
	if err != nil && !apierrors.IsNotFound(err) {
		return apiError(err, "looking up VMI %q", vm.Name)
	}
	if err != nil {
		vmi = nil
	}
	running := vmi != nil && vmi.Status.Phase == kubevirtv1.Running && vmi.DeletionTimestamp == nil
	if vmHasVolume(vm, v.id) && (!running || hasVolume(&vmi.Spec, v.id)) {
		return nil // a repeated call: nothing to request
	}
	for attempt := 1; ; attempt++ {
		err := s.vmRequest(ctx, vm.Name, func() error { return s.sub.AddVolume(ctx, vm, opts()) })
		switch {
		case err == nil:
			logger.V(2).Info("Requested hot-plug", "serial", serial, "bus", v.bus)
			return nil
		case apierrors.IsConflict(err):
			// The VM has it already. Make sure the running instance has it too.
			if !running || hasVolume(&vmi.Spec, v.id) {
				return nil
			}
			err = s.vmRequest(ctx, vm.Name, func() error { return s.sub.AddVMIVolume(ctx, vmi, opts()) })
			switch {
			case err == nil:
				logger.V(2).Info("Hot-plugged into the running instance, which lacked the VM's volume")
				return nil
			case apierrors.IsConflict(err):
				return nil // the instance has it (our cache lagged)
			case grpcerr.Retryable(err) && attempt < maxHotplugAttempts:
				logger.V(2).Info("Retrying VMI-level hot-plug", "attempt", attempt, "error", err.Error())
				continue
			}
			return apiError(err, "volume %q: addvolume on VMI %s", v.id, vmi.Name)
		case grpcerr.Retryable(err) && attempt < maxHotplugAttempts:
			logger.V(2).Info("Retrying hot-plug", "attempt", attempt, "error", err.Error())
		default:
			return apiError(err, "volume %q: addvolume on VM %s", v.id, vm.Name)
		}
	}
}

// vmRequest runs one hot-plug request for VM vm once no other runs for it (vmWrites).
func (s *Server) vmRequest(ctx context.Context, vm string, request func() error) error {
	unlock, err := s.vmWrites.lock(ctx, vm)
	if err != nil {
		return waitError(err, fmt.Sprintf("waiting for the other hot-plug requests of VM %s", vm), "")
	}
	defer unlock()
	return request()
}

// waitHotplugged waits, on VMI events, until the VMI of vmName reports volume id Ready.
func (s *Server) waitHotplugged(ctx context.Context, vmName, id string) error {
	last := ""
	err := s.notify.wait(ctx, kindVMI, vmName, func() (bool, error) {
		vmi, err := s.infra.VMI(ctx, vmName)
		if apierrors.IsNotFound(err) {
			last = "the VM has no instance (not running)"
			return false, nil
		}
		if err != nil {
			return false, apiError(err, "reading VMI %s", vmName)
		}
		st := volumeStatus(vmi, id)
		switch {
		case vmi.Status.Phase != kubevirtv1.Running:
			last = fmt.Sprintf("the VM's instance is %s, not Running", vmi.Status.Phase)
		case st == nil && s.declarative() && !hasVolume(&vmi.Spec, id):
			// KubeVirt ignores VM spec changes unless its gates are set so.
			last = "in the VM spec, not yet in the running instance's (KubeVirt hot-plugs VM spec changes only with the DeclarativeHotplugVolumes feature gate on and HotplugVolumes off)"
		case st == nil:
			last = "not in the instance's volume status yet"
		default:
			last = fmt.Sprintf("volume phase %s", st.Phase)
			if st.Reason != "" || st.Message != "" {
				last += fmt.Sprintf(" (%s: %s)", st.Reason, st.Message)
			}
		}
		return st != nil && st.Phase == kubevirtv1.VolumeReady, nil
	})
	if err != nil {
		return waitError(err, fmt.Sprintf("volume %q: waiting for the hot-plug into VM %s", id, vmName), last)
	}
	return nil
}

// ControllerUnpublishVolume removes the volume from the VM (and from its instance, should the
// instance still carry it) and returns once the instance no longer has it. The volume must be
// ours: a handle naming someone else's DataVolume is NotFound and nothing is changed (the
// upstream KubeVirt CSI driver skips this check). A volume or VM that no longer exists is
// already unpublished.
func (s *Server) ControllerUnpublishVolume(ctx context.Context, req *csi.ControllerUnpublishVolumeRequest) (*csi.ControllerUnpublishVolumeResponse, error) {
	id, nodeID := req.GetVolumeId(), req.GetNodeId()
	if err := validateID("volume_id", id); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if nodeID != "" {
		if err := validateID("node_id", nodeID); err != nil {
			return nil, status.Error(codes.InvalidArgument, err.Error())
		}
	}
	if !isVolumeHandle(id) {
		return nil, notFoundVolume(id)
	}
	// Unpublishing from one VM touches only that VM: it may run beside publishes of a
	// multi-node volume to other VMs. Without a node ID it unplugs from all of them.
	release, err := s.publishGuard(id, nodeID, "ControllerUnpublishVolume", nodeID != "")
	if err != nil {
		return nil, err
	}
	defer release()
	logger := klog.FromContext(ctx).WithValues("volumeID", id, "vm", nodeID)
	ctx = klog.NewContext(ctx, logger)

	v, err := s.getVolume(ctx, id)
	if status.Code(err) == codes.NotFound {
		if exists, lerr := s.dataVolumeExists(ctx, id); lerr != nil {
			return nil, lerr
		} else if exists {
			return nil, err // someone else's DataVolume: refuse, touch nothing
		}
		logger.V(2).Info("ControllerUnpublishVolume: volume does not exist; nothing to unpublish")
		return &csi.ControllerUnpublishVolumeResponse{}, nil
	}
	if err != nil {
		return nil, err
	}

	var vmNames []string
	if nodeID != "" {
		vmNames = []string{nodeID}
	} else {
		att, err := s.attachments(ctx)
		if err != nil {
			return nil, err
		}
		vmNames = att[id]
	}
	for _, name := range vmNames {
		if err := s.unplug(ctx, v, name); err != nil {
			return nil, err
		}
	}
	return &csi.ControllerUnpublishVolumeResponse{}, nil
}

// dataVolumeExists reports whether the cache holds any DataVolume of this cluster named id
// (ours or not).
func (s *Server) dataVolumeExists(ctx context.Context, id string) (bool, error) {
	err := s.infra.GetInCluster(ctx, id, &cdiv1.DataVolume{})
	switch {
	case err == nil:
		return true, nil
	case apierrors.IsNotFound(err):
		return false, nil
	}
	return false, apiError(err, "looking up DataVolume %s/%s", s.scope.Namespace, id)
}

// unplug removes volume v from VM vmName and waits until its instance let go of it.
func (s *Server) unplug(ctx context.Context, v *volume, vmName string) error {
	logger := klog.FromContext(ctx)
	vm, err := s.infra.VM(ctx, vmName)
	if apierrors.IsNotFound(err) {
		logger.V(2).Info("VM does not exist (or is not this cluster's); nothing to unpublish", "vm", vmName)
		return nil
	}
	if err != nil {
		return apiError(err, "looking up VM %q", vmName)
	}
	vmi, err := s.infra.VMI(ctx, vmName)
	if err != nil && !apierrors.IsNotFound(err) {
		return apiError(err, "looking up VMI %q", vmName)
	}
	if apierrors.IsNotFound(err) {
		vmi = nil
	}
	inVMI := vmi != nil && (hasVolume(&vmi.Spec, v.id) || volumeStatus(vmi, v.id) != nil)
	if !vmHasVolume(vm, v.id) && !inVMI {
		return nil // not published there
	}
	unplug := func() error { return s.unhotplug(ctx, v, vm, vmi) }
	if s.declarative() {
		unplug = func() error { return s.unhotplugDeclarative(ctx, v, vm) }
	}
	if err := unplug(); err != nil {
		return err
	}
	if err := s.waitUnplugged(ctx, vm.Name, v.id); err != nil {
		return err
	}
	s.events.Eventf(v.dv, vm, corev1.EventTypeNormal, "Unpublished", "Unpublish", "removed from VM %s", vm.Name)
	logger.V(2).Info("Volume unpublished")
	return nil
}

// unhotplug removes the volume from the VM spec and, when the VM no longer had it but its
// instance still does (a VMI-level hot-plug, or a removal that failed half-way), from the
// instance. Transient infra failures are retried at once a few times.
func (s *Server) unhotplug(ctx context.Context, v *volume, vm *kubevirtv1.VirtualMachine, vmi *kubevirtv1.VirtualMachineInstance) error {
	logger := klog.FromContext(ctx)
	for attempt := 1; ; attempt++ {
		// VM level first: the VM spec is what a restarted guest gets.
		err := s.vmRequest(ctx, vm.Name, func() error { return s.sub.RemoveVolume(ctx, vm, v.id) })
		switch {
		case err == nil:
			logger.V(2).Info("Requested unplug")
			return nil // virt-api takes it out of the running instance too
		case apierrors.IsConflict(err):
			// The VM does not have it (any more); the instance might.
			if vmi == nil || !hasVolume(&vmi.Spec, v.id) {
				return nil
			}
			err = s.vmRequest(ctx, vm.Name, func() error { return s.sub.RemoveVMIVolume(ctx, vmi, v.id) })
			switch {
			case err == nil, apierrors.IsConflict(err):
				return nil
			case grpcerr.Retryable(err) && attempt < maxHotplugAttempts:
				logger.V(2).Info("Retrying VMI-level unplug", "attempt", attempt, "error", err.Error())
				continue
			}
			return apiError(err, "volume %q: removevolume on VMI %s", v.id, vmi.Name)
		case grpcerr.Retryable(err) && attempt < maxHotplugAttempts:
			logger.V(2).Info("Retrying unplug", "attempt", attempt, "error", err.Error())
		default:
			return apiError(err, "volume %q: removevolume on VM %s", v.id, vm.Name)
		}
	}
}

// waitUnplugged waits, on VMI events, until the instance of vmName neither has volume id in
// its spec nor in its volume status (or there is no instance).
func (s *Server) waitUnplugged(ctx context.Context, vmName, id string) error {
	last := ""
	err := s.notify.wait(ctx, kindVMI, vmName, func() (bool, error) {
		vmi, err := s.infra.VMI(ctx, vmName)
		if apierrors.IsNotFound(err) {
			return true, nil
		}
		if err != nil {
			return false, apiError(err, "reading VMI %s", vmName)
		}
		if st := volumeStatus(vmi, id); st != nil {
			last = fmt.Sprintf("volume phase %s", st.Phase)
			return false, nil
		}
		if hasVolume(&vmi.Spec, id) {
			last = "still in the instance's spec"
			return false, nil
		}
		return true, nil
	})
	if err != nil {
		return waitError(err, fmt.Sprintf("volume %q: waiting for the unplug from VM %s", id, vmName), last)
	}
	return nil
}
