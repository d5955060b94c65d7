package controller

import (
	"fmt"
	"sort"
	"strings"

	"github.com/tenantcloud/tenantcloud/pkg/config"
	tccsi "github.com/tenantcloud/tenantcloud/pkg/csi"
)

// StorageClass parameters (tenant StorageClass → CreateVolumeRequest.parameters) and
// VolumeSnapshotClass parameters (→ CreateSnapshotRequest.parameters) csi-controller reads.
// The tenant writes them, so each is checked against what the operator granted in the config.
const (
	// ParamInfraStorageClass names the infra StorageClass of the DataVolume; it must be allowed
	// by storage.allowedStorageClasses (or be the default). Empty = storage.defaultStorageClass.
	ParamInfraStorageClass = "infraStorageClassName"
	// ParamBus is the disk bus the volume is hot-plugged with: scsi or virtio. Empty =
	// storage.diskBus.
	ParamBus = "bus"
	// ParamInfraSnapshotClass names the infra VolumeSnapshotClass; it must be allowed by
	// storage.allowedSnapshotClasses (or be the default). Empty = storage.defaultSnapshotClass.
	ParamInfraSnapshotClass = "infraSnapshotClassName"

	// csiParamPrefix starts the keys the CSI sidecars add themselves (external-provisioner
	// --extra-create-metadata: csi.storage.k8s.io/pvc/name, .../pvc/namespace, .../pv/name;
	// the snapshotter's .../volumesnapshot/name, ...). They are informational.
	csiParamPrefix = "csi.storage.k8s.io/"
	paramPVCName   = csiParamPrefix + "pvc/name"
	paramPVCNS     = csiParamPrefix + "pvc/namespace"
)

// volumeParams are validated CreateVolume parameters.
type volumeParams struct {
	storageClass string
	bus          string
	// tenantClaim is "namespace/name" of the tenant PVC, when the provisioner passes it.
	tenantClaim string
}

// parseVolumeParams validates CreateVolume parameters against the operator's grant. Unknown
// keys are refused so a misspelt parameter does not silently fall back to a default.
func parseVolumeParams(params map[string]string, storage config.Storage) (volumeParams, error) {
	p := volumeParams{storageClass: storage.DefaultStorageClass, bus: string(storage.DiskBus)}
	if p.bus == "" {
		p.bus = tccsi.BusSCSI
	}
	var unknown []string
	for k, v := range params {
		switch {
		case k == ParamInfraStorageClass:
			if v == "" {
				continue
			}
			if !storage.StorageClassAllowed(v) {
				return volumeParams{}, fmt.Errorf("parameter %s: infra StorageClass %q is not allowed for this tenant (allowed: %s)",
					k, v, allowedList(storage.DefaultStorageClass, storage.AllowedStorageClasses))
			}
			p.storageClass = v
		case k == ParamBus:
			switch v {
			case "":
			case tccsi.BusSCSI, tccsi.BusVirtio:
				p.bus = v
			default:
				return volumeParams{}, fmt.Errorf("parameter %s: disk bus %q is not supported for hot-plug (want %s or %s)",
					k, v, tccsi.BusSCSI, tccsi.BusVirtio)
			}
		case strings.HasPrefix(k, csiParamPrefix):
			// Sidecar metadata; the claim's name is kept as an annotation for operators.
		default:
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return volumeParams{}, fmt.Errorf("unknown parameters %q (supported: %s, %s)", unknown, ParamInfraStorageClass, ParamBus)
	}
	if ns, name := params[paramPVCNS], params[paramPVCName]; ns != "" && name != "" && len(ns)+len(name) < 512 {
		p.tenantClaim = ns + "/" + name
	}
	if p.storageClass == "" {
		return volumeParams{}, fmt.Errorf("no infra StorageClass: storage.defaultStorageClass is not configured")
	}
	return p, nil
}

// parseSnapshotParams validates CreateSnapshot parameters and returns the infra
// VolumeSnapshotClass to use.
func parseSnapshotParams(params map[string]string, storage config.Storage) (string, error) {
	class := storage.DefaultSnapshotClass
	var unknown []string
	for k, v := range params {
		switch {
		case k == ParamInfraSnapshotClass:
			if v == "" {
				continue
			}
			if !storage.SnapshotClassAllowed(v) {
				return "", fmt.Errorf("parameter %s: infra VolumeSnapshotClass %q is not allowed for this tenant (allowed: %s)",
					k, v, allowedList(storage.DefaultSnapshotClass, storage.AllowedSnapshotClasses))
			}
			class = v
		case strings.HasPrefix(k, csiParamPrefix):
		default:
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return "", fmt.Errorf("unknown parameters %q (supported: %s)", unknown, ParamInfraSnapshotClass)
	}
	if class == "" {
		return "", fmt.Errorf("no infra VolumeSnapshotClass: set parameter %s or storage.defaultSnapshotClass", ParamInfraSnapshotClass)
	}
	return class, nil
}

// snapshotsConfigured reports whether the operator granted any VolumeSnapshotClass; without
// one the snapshot capabilities are not advertised.
func snapshotsConfigured(storage config.Storage) bool {
	return storage.DefaultSnapshotClass != "" || len(storage.AllowedSnapshotClasses) > 0
}

func allowedList(def string, allowed []string) string {
	seen := map[string]bool{}
	var out []string
	for _, n := range append([]string{def}, allowed...) {
		if n != "" && !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	if len(out) == 0 {
		return "none"
	}
	return strings.Join(out, ", ")
}
