package controller

import (
	"context"
	"errors"
	"fmt"
	"math"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/tenantcloud/tenantcloud/pkg/config"
)

// Sizes, as the storage stack allocates them (facts from the upstream sources, mirrored by the
// simulator):
//   - CDI refuses a DataVolume spec.storage request below 1 MiB (KubeVirt's smallest disk);
//   - for Filesystem claims CDI aligns the request up to 1 MiB and then adds its filesystem
//     overhead to the claim, so the disk image inside keeps the aligned size;
//   - LINSTOR CSI allocates whole KiB (at least 4 KiB) and reports exactly that.
//
// So the guest's disk has the request rounded up to KiB (Block) or MiB (Filesystem), which is
// what CreateVolume reports: a tenant asking for N bytes gets the smallest allocatable size
// ≥ N, and a limit below it is OUT_OF_RANGE rather than silently exceeded.
const (
	kib = int64(1) << 10
	mib = int64(1) << 20
	gib = int64(1) << 30

	// MinVolumeBytes is the smallest volume: CDI's minimum DataVolume size.
	MinVolumeBytes = mib
	// DefaultVolumeBytes is the size of a volume requested without a capacity range.
	DefaultVolumeBytes = gib
)

// errOutOfRange marks a capacity range that cannot be allocated.
var errOutOfRange = errors.New("capacity out of range")

// allocationUnit is the granularity the guest disk is sized in for an infra volume mode.
func allocationUnit(mode corev1.PersistentVolumeMode) int64 {
	if mode == corev1.PersistentVolumeFilesystem {
		return mib
	}
	return kib
}

// allocatedBytes is the capacity a volume requested with r gets, at least minimum (a clone or
// restore source's size; 0 for none). Errors wrap errOutOfRange when the range cannot be
// satisfied; a malformed range is reported without it (InvalidArgument).
func allocatedBytes(r *csi.CapacityRange, mode corev1.PersistentVolumeMode, minimum int64) (int64, error) {
	required, limit := r.GetRequiredBytes(), r.GetLimitBytes()
	if required < 0 || limit < 0 {
		return 0, fmt.Errorf("capacity_range must not be negative (required_bytes %d, limit_bytes %d)", required, limit)
	}
	if limit > 0 && required > limit {
		return 0, fmt.Errorf("capacity_range.required_bytes %d exceeds limit_bytes %d", required, limit)
	}
	unit := allocationUnit(mode)
	size := required
	if size == 0 {
		size = DefaultVolumeBytes
		if limit > 0 && size > limit {
			size = limit / unit * unit // the largest allocatable size within the limit
		}
	}
	size = max(size, MinVolumeBytes, minimum)
	if size > math.MaxInt64-unit {
		return 0, fmt.Errorf("%w: %d bytes cannot be allocated", errOutOfRange, size)
	}
	size = (size + unit - 1) / unit * unit
	if limit > 0 && size > limit {
		what := "the smallest allocatable size"
		if minimum > MinVolumeBytes && minimum >= required {
			what = "the source's size"
		}
		return 0, fmt.Errorf("%w: %s is %d bytes, above limit_bytes %d", errOutOfRange, what, size, limit)
	}
	return size, nil
}

// fitsRange reports whether an existing volume of size bytes satisfies r (idempotent
// CreateVolume with the same name).
func fitsRange(size int64, r *csi.CapacityRange) bool {
	if size < r.GetRequiredBytes() {
		return false
	}
	return r.GetLimitBytes() == 0 || size <= r.GetLimitBytes()
}

// usage is what the tenant's volumes take now.
type usage struct {
	volumes int
	bytes   int64
}

// checkQuota reports whether adding addVolumes volumes of addBytes bytes in total stays within
// the configured quotas (0 = unlimited). The error says which quota and by how much.
func checkQuota(u usage, addVolumes int, addBytes int64, storage config.Storage) error {
	if limit := storage.MaxVolumes; limit > 0 && addVolumes > 0 && u.volumes+addVolumes > limit {
		return fmt.Errorf("volume quota exceeded: the tenant has %d of %d volumes (storage.maxVolumes)", u.volumes, limit)
	}
	if limit := storage.MaxTotalBytes(); limit > 0 && addBytes > 0 && u.bytes > limit-addBytes {
		return fmt.Errorf("capacity quota exceeded: %s requested, %s of %s in use (storage.maxTotalCapacity)",
			formatBytes(addBytes), formatBytes(u.bytes), formatBytes(limit))
	}
	return nil
}

// availableBytes is what GetCapacity reports: the capacity quota left, 0 when the volume quota
// is exhausted. ok is false when no capacity quota is configured (nothing meaningful to report).
func availableBytes(u usage, storage config.Storage) (avail int64, ok bool) {
	limit := storage.MaxTotalBytes()
	if limit <= 0 {
		return 0, false
	}
	if storage.MaxVolumes > 0 && u.volumes >= storage.MaxVolumes {
		return 0, true
	}
	return max(0, limit-u.bytes), true
}

// inflate scales a new disk size to the claim request that holds it, keeping the ratio the
// claim has now (CDI's filesystem overhead for Filesystem claims; 1 for Block). It never
// returns less than newSize.
func inflate(newSize, oldSize, oldRequest int64) int64 {
	if oldSize <= 0 || oldRequest <= oldSize {
		return newSize
	}
	scaled := math.Ceil(float64(newSize) * float64(oldRequest) / float64(oldSize))
	if scaled >= math.MaxInt64 {
		return newSize
	}
	return max(int64(scaled), newSize)
}

func formatBytes(n int64) string {
	return resource.NewQuantity(n, resource.BinarySI).String()
}

// GetCapacity reports how much the tenant may still allocate under its capacity quota (0 for
// an infra StorageClass it may not use, or when the volume quota is exhausted).
func (s *Server) GetCapacity(ctx context.Context, req *csi.GetCapacityRequest) (*csi.GetCapacityResponse, error) {
	for i, c := range req.GetVolumeCapabilities() {
		if err := validateCapability(c); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "volume_capabilities[%d]: %v", i, err)
		}
	}
	if _, err := parseVolumeParams(req.GetParameters(), s.opts.Storage); err != nil {
		return &csi.GetCapacityResponse{AvailableCapacity: 0, MaximumVolumeSize: wrapperspb.Int64(0)}, nil
	}
	u, err := s.currentUsage(ctx)
	if err != nil {
		return nil, err
	}
	avail, ok := availableBytes(u, s.opts.Storage)
	if !ok {
		return nil, status.Error(codes.Unimplemented, "GetCapacity: no capacity quota is configured (storage.maxTotalCapacity)")
	}
	return &csi.GetCapacityResponse{AvailableCapacity: avail, MaximumVolumeSize: wrapperspb.Int64(avail)}, nil
}
