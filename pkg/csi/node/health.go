package node

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	tccsi "github.com/tenantcloud/tenantcloud/pkg/csi"
)

// Reasons reported in VolumeHealth entries (CamelCase, as the spec asks).
const (
	ReasonDiskDetached     = "DiskDetached"
	ReasonNotMounted       = "NotMounted"
	ReasonWrongDevice      = "WrongDevice"
	ReasonFilesystemErrors = "FilesystemErrors"
)

// NodeGetVolumeHealth reports, from inside the VM, whether the volume's disk is still attached
// and mounted where the CO says it should be. It replaces the volume condition of
// NodeGetVolumeStats, which CSI v1.13 removed.
func (s *Server) NodeGetVolumeHealth(ctx context.Context, req *csi.NodeGetVolumeHealthRequest) (*csi.NodeGetVolumeHealthResponse, error) {
	volumeID := req.GetVolumeId()
	if err := validateVolumeID(volumeID); err != nil {
		return nil, err
	}
	var paths []string
	for _, f := range []struct{ field, path string }{
		{"volume_publish_path", req.GetVolumePublishPath()},
		{"staging_target_path", req.GetStagingTargetPath()},
	} {
		if f.path == "" {
			continue
		}
		p, err := s.resolvePath(f.field, f.path)
		if err != nil {
			return nil, err
		}
		paths = append(paths, p)
	}
	t, err := readMounts()
	if err != nil {
		return nil, err
	}

	var entries []*csi.VolumeHealth_VolumeHealthEntry
	d, err := s.volumeDisk(volumeID, paths...)
	switch {
	case err == nil:
		entries = pathHealth(t, d, paths)
		if n := ext4Errors(d); n > 0 {
			entries = append(entries, healthEntry(csi.VolumeHealthErrorType_DEGRADED, ReasonFilesystemErrors,
				"the ext4 filesystem on disk %s has recorded %d errors; run fsck after unpublishing", d, n))
		}
	case errors.Is(err, errDiskAbsent):
		var mounted []string
		for _, p := range paths {
			if m, ok := t.at(p); ok && diskBacked(m) {
				mounted = append(mounted, p)
			}
		}
		if len(mounted) == 0 {
			return nil, status.Errorf(codes.NotFound, "volume %q is not on this VM: %v", volumeID, err)
		}
		entries = append(entries, healthEntry(csi.VolumeHealthErrorType_INACCESSIBLE, ReasonDiskDetached,
			"the disk with serial %q is no longer attached to this VM (nothing in %s names it) but the volume is still mounted at %q",
			tccsi.Serial(volumeID), s.opts.DeviceDir, mounted))
	default:
		return nil, status.Errorf(codes.Internal, "finding the disk of volume %q: %v", volumeID, err)
	}
	return &csi.NodeGetVolumeHealthResponse{VolumeHealth: &csi.VolumeHealth{
		VolumeId:       volumeID,
		HealthStatuses: entries,
	}}, nil
}

// pathHealth reports each path that should expose disk d but does not.
func pathHealth(t mountTable, d disk, paths []string) []*csi.VolumeHealth_VolumeHealthEntry {
	var entries []*csi.VolumeHealth_VolumeHealthEntry
	var notMounted, wrong []string
	for _, p := range paths {
		m, ok := t.at(p)
		switch {
		case !ok:
			notMounted = append(notMounted, p)
		case !refersTo(m, d.dev):
			wrong = append(wrong, fmt.Sprintf("%s holds %s", p, describeMount(m)))
		}
	}
	// One entry per reason: the spec forbids repeating a (status, reason) pair.
	if len(notMounted) > 0 {
		entries = append(entries, healthEntry(csi.VolumeHealthErrorType_INACCESSIBLE, ReasonNotMounted,
			"disk %s is not mounted at %q", d, notMounted))
	}
	if len(wrong) > 0 {
		entries = append(entries, healthEntry(csi.VolumeHealthErrorType_INACCESSIBLE, ReasonWrongDevice,
			"expected disk %s: %s", d, strings.Join(wrong, "; ")))
	}
	return entries
}

// ext4Errors returns the error count ext4 keeps for a mounted filesystem on d, 0 if unknown.
func ext4Errors(d disk) int {
	raw, err := os.ReadFile(filepath.Join("/sys/fs/ext4", filepath.Base(d.path), "errors_count"))
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(strings.TrimSpace(string(raw)))
	return n
}

func healthEntry(t csi.VolumeHealthErrorType, reason, format string, args ...any) *csi.VolumeHealth_VolumeHealthEntry {
	return &csi.VolumeHealth_VolumeHealthEntry{Status: t, Reason: reason, Message: fmt.Sprintf(format, args...)}
}
