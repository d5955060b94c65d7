package node

import (
	"context"
	"errors"
	"strings"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// NodeExpandVolume grows the filesystem on the volume's disk to the disk's size, online
// (resize2fs for ext4, xfs_growfs for xfs, both through mount-utils). Block volumes need
// nothing: the guest sees the grown disk as soon as the hypervisor reports the new capacity.
func (s *Server) NodeExpandVolume(ctx context.Context, req *csi.NodeExpandVolumeRequest) (*csi.NodeExpandVolumeResponse, error) {
	volumeID := req.GetVolumeId()
	if err := validateVolumeID(volumeID); err != nil {
		return nil, err
	}
	volumePath, err := s.resolveVolumePath(volumeID, "volume_path", req.GetVolumePath())
	if err != nil {
		return nil, err
	}
	var spec volumeSpec
	if c := req.GetVolumeCapability(); c != nil {
		if spec, err = parseCapability(c); err != nil {
			return nil, err
		}
	}
	var staging string
	if p := req.GetStagingTargetPath(); p != "" {
		if staging, err = s.resolvePath("staging_target_path", p); err != nil {
			return nil, err
		}
	}
	release, err := s.inflight.Acquire(volumeID, "NodeExpandVolume")
	if err != nil {
		return nil, err
	}
	defer release()

	d, err := s.mountedDisk(volumeID, volumePath)
	if err != nil {
		return nil, err
	}
	size, err := s.waitForSize(ctx, d, req.GetCapacityRange().GetRequiredBytes())
	if err != nil {
		return nil, err
	}
	log := logger(ctx, volumeID)
	if _, isNode := blockNode(volumePath); spec.block || isNode {
		log.V(2).Info("Block volume: nothing to grow on the node", "disk", d.path, "bytes", size)
		return &csi.NodeExpandVolumeResponse{CapacityBytes: size}, nil
	}
	// xfs_growfs works on a mount point; prefer the staging mount, which exists for as long as
	// the volume is on this node.
	fsPath := volumePath
	if staging != "" {
		if t, err := readMounts(); err == nil {
			if m, ok := t.at(staging); ok && refersTo(m, d.dev) {
				fsPath = staging
			}
		}
	}
	if _, err := s.resizer.Resize(d.path, fsPath); err != nil {
		return nil, status.Errorf(codes.Internal, "growing the filesystem of disk %s mounted at %s: %s", d, fsPath, oneLine(err.Error()))
	}
	log.Info("Expanded volume", "disk", d.path, "path", fsPath, "bytes", size)
	return &csi.NodeExpandVolumeResponse{CapacityBytes: size}, nil
}

// resolveVolumePath validates the path of a query about a volume (stats, expansion). An empty
// path is INVALID_ARGUMENT, but one that cannot hold a volume at all (relative, outside the
// kubelet directory) is NOT_FOUND: the spec's answer for "no such volume at volume_path", and
// what csi-sanity expects for e.g. "some/path".
func (s *Server) resolveVolumePath(volumeID, field, p string) (string, error) {
	if p == "" {
		return "", status.Errorf(codes.InvalidArgument, "%s is required", field)
	}
	r, err := s.resolvePath(field, p)
	if status.Code(err) == codes.InvalidArgument {
		return "", status.Errorf(codes.NotFound, "volume %q cannot be at %s: %s", volumeID, field, status.Convert(err).Message())
	}
	return r, err
}

// mountedDisk returns the volume's disk after checking that path is a mount of it. Both a
// missing disk and a path holding something else are NOT_FOUND: the volume is not there.
func (s *Server) mountedDisk(volumeID, path string) (disk, error) {
	d, err := s.volumeDisk(volumeID, path)
	if errors.Is(err, errDiskAbsent) {
		return disk{}, status.Errorf(codes.NotFound, "volume %q is not attached to this VM: %v", volumeID, err)
	}
	if err != nil {
		return disk{}, status.Errorf(codes.Internal, "finding the disk of volume %q: %v", volumeID, err)
	}
	t, err := readMounts()
	if err != nil {
		return disk{}, err
	}
	m, ok := t.at(path)
	if !ok {
		return disk{}, status.Errorf(codes.NotFound, "volume %q is not mounted at %s", volumeID, path)
	}
	if !refersTo(m, d.dev) {
		return disk{}, status.Errorf(codes.NotFound, "%s holds %s, not the disk of volume %q, %s", path, describeMount(m), volumeID, d)
	}
	return d, nil
}

// oneLine folds a tool's multi-line output into one line. mount-utils puts resize2fs's whole
// output into its error, and its first line is only the version banner: the kubelet's
// VolumeResizeFailed Event showed that banner and cut the reason ("Permission denied to resize
// filesystem") that followed it on the next line.
func oneLine(s string) string {
	var parts []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			parts = append(parts, l)
		}
	}
	return strings.Join(parts, "; ")
}
