package controller

import (
	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	corev1 "k8s.io/api/core/v1"
	cdiv1 "kubevirt.io/containerized-data-importer-api/pkg/apis/core/v1beta1"

	tccsi "github.com/tenantcloud/tenantcloud/pkg/csi"
	"github.com/tenantcloud/tenantcloud/pkg/csi/identity"
	"github.com/tenantcloud/tenantcloud/pkg/infra"
)

// Volumes adopted from the upstream KubeVirt CSI driver (pkg/adopt) keep their handles: the
// tenant's PVs name them and cannot change. A legacy handle ("pvc-<uid>", tccsi.IsLegacyVolumeID)
// resolves only to a DataVolume of the same name that adoption marked as this tenant's
// csi-controller's (Scope.OwnedBy) and as adopted from csi.kubevirt.io with its own UID
// (Scope.Adopted): the same ownership check as a native ID, through the same lookup, so a PV
// naming any other DataVolume is NotFound for every RPC. The disk serial stays the one upstream
// hot-plugged it with, the DataVolume's UID, so a disk already in a VM is found where it is.

// isVolumeHandle reports whether id has the form of a volume this csi-controller may serve:
// a native volume ID or an adopted upstream handle. Anything else is never looked up.
func isVolumeHandle(id string) bool { return IsVolumeID(id) || tccsi.IsLegacyVolumeID(id) }

// asAdoptedVolume reads dv as an adopted volume of this tenant, or reports false.
func (s *Server) asAdoptedVolume(dv *cdiv1.DataVolume) (*volume, bool) {
	if !tccsi.IsLegacyVolumeID(dv.Name) || !s.scope.OwnedBy(dv, Component) || !s.scope.Adopted(dv, infra.AdoptedFromCSI) {
		return nil, false
	}
	v := &volume{dv: dv, id: dv.Name, name: dv.Name, serial: string(dv.UID), bus: tccsi.BusSCSI}
	if dv.Annotations[AnnBus] == tccsi.BusVirtio {
		v.bus = tccsi.BusVirtio
	}
	v.readStorage()
	return v, true
}

// readStorage fills access modes, volume mode and capacity from the DataVolume's spec and the
// capacity annotation (which ControllerExpandVolume raises).
func (v *volume) readStorage() {
	if pvc := v.dv.Spec.PVC; pvc != nil && pvc.StorageClassName != nil {
		v.storageClass = *pvc.StorageClassName // upstream's older DataVolumes
	}
	if st := v.dv.Spec.Storage; st != nil {
		if st.StorageClassName != nil {
			v.storageClass = *st.StorageClassName
		}
		v.accessModes = st.AccessModes
		if st.VolumeMode != nil {
			v.volumeMode = *st.VolumeMode
		}
		if q, ok := st.Resources.Requests[corev1.ResourceStorage]; ok {
			v.capacity = q.Value()
		}
	}
	if n, ok := parseBytes(v.dv.Annotations[AnnCapacity]); ok {
		v.capacity = n
	}
}

// RegisterLegacy adds the Identity and Controller services to r under the upstream driver's
// name, for a second set of CSI sidecars that serves the adopted PVs (driver csi.kubevirt.io).
// Both names reach the same Server: in-flight guards and quotas are shared.
func (s *Server) RegisterLegacy(r grpc.ServiceRegistrar) {
	s.register(r, tccsi.LegacyDriverName)
}

func (s *Server) register(r grpc.ServiceRegistrar, name string) {
	csi.RegisterIdentityServer(r, identity.New(identity.Options{
		Name:         name,
		Capabilities: PluginCapabilities(s.opts.Storage.TopologyEnabled()),
		Ready:        s.Ready,
	}))
	csi.RegisterControllerServer(r, s)
}
