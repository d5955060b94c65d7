package node

import (
	"context"
	"errors"
	"io/fs"
	"os"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// NodeGetVolumeStats reports bytes and inodes of a filesystem volume, and the size of a block
// volume. It keeps answering for a volume whose disk has vanished (statfs is served from the
// in-memory superblock); NodeGetVolumeHealth is where that is reported.
func (s *Server) NodeGetVolumeStats(ctx context.Context, req *csi.NodeGetVolumeStatsRequest) (*csi.NodeGetVolumeStatsResponse, error) {
	volumeID := req.GetVolumeId()
	if err := validateVolumeID(volumeID); err != nil {
		return nil, err
	}
	path, err := s.resolveVolumePath(volumeID, "volume_path", req.GetVolumePath())
	if err != nil {
		return nil, err
	}
	if _, err := os.Lstat(path); errors.Is(err, fs.ErrNotExist) {
		return nil, status.Errorf(codes.NotFound, "volume %q: %s does not exist", volumeID, path)
	}
	t, err := readMounts()
	if err != nil {
		return nil, err
	}
	m, ok := t.at(path)
	if !ok || !diskBacked(m) {
		return nil, status.Errorf(codes.NotFound, "volume %q is not mounted at %s", volumeID, path)
	}
	// Without its disk the volume cannot be told apart from another one; with it, the mount
	// must be that disk.
	d, err := s.volumeDisk(volumeID, path)
	switch {
	case err == nil && !refersTo(m, d.dev):
		return nil, status.Errorf(codes.NotFound, "%s holds %s, not the disk of volume %q, %s", path, describeMount(m), volumeID, d)
	case err != nil && !errors.Is(err, errDiskAbsent):
		return nil, status.Errorf(codes.Internal, "finding the disk of volume %q: %v", volumeID, err)
	}

	if rdev, isNode := blockNode(path); isNode {
		size, err := deviceSize(rdev)
		if err != nil {
			return nil, status.Errorf(codes.NotFound, "volume %q at %s: %v", volumeID, path, err)
		}
		return &csi.NodeGetVolumeStatsResponse{Usage: []*csi.VolumeUsage{{Unit: csi.VolumeUsage_BYTES, Total: size}}}, nil
	}
	usage, err := filesystemUsage(path)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "volume %q: %v", volumeID, err)
	}
	return &csi.NodeGetVolumeStatsResponse{Usage: usage}, nil
}

// filesystemUsage converts statfs into CSI usage: bytes counted in fragment-size units (what
// f_blocks is measured in), "available" being what an unprivileged writer can still use.
func filesystemUsage(path string) ([]*csi.VolumeUsage, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return nil, &fs.PathError{Op: "statfs", Path: path, Err: err}
	}
	unit := st.Frsize
	if unit == 0 {
		unit = st.Bsize
	}
	return []*csi.VolumeUsage{
		{
			Unit:      csi.VolumeUsage_BYTES,
			Total:     int64(st.Blocks) * unit,
			Available: int64(st.Bavail) * unit,
			Used:      int64(st.Blocks-st.Bfree) * unit,
		},
		{
			Unit:      csi.VolumeUsage_INODES,
			Total:     int64(st.Files),
			Available: int64(st.Ffree),
			Used:      int64(st.Files - st.Ffree),
		},
	}, nil
}
