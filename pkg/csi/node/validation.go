package node

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"unicode"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	mount "k8s.io/mount-utils"
)

// maxVolumeIDLen is the CSI size limit for identifiers; COs may reject longer ones anyway.
const maxVolumeIDLen = 128

// Filesystems the node formats and grows. Both have online growers in mount-utils.
const (
	fsExt4        = "ext4"
	fsXFS         = "xfs"
	defaultFSType = fsExt4
)

func validateVolumeID(id string) error {
	switch {
	case id == "":
		return status.Error(codes.InvalidArgument, "volume_id is required")
	case len(id) > maxVolumeIDLen:
		return status.Errorf(codes.InvalidArgument, "volume_id %.32q… is longer than %d bytes", id, maxVolumeIDLen)
	case strings.ContainsFunc(id, unicode.IsControl):
		return status.Errorf(codes.InvalidArgument, "volume_id %q contains control characters", id)
	}
	return nil
}

// pathUnder checks p lexically: absolute, no ".." element, and strictly inside root (a clean
// absolute path). It returns p cleaned. Rejecting ".." outright, rather than cleaning it away,
// keeps a request like "<kubelet>/pods/../../etc" from ever looking legitimate.
func pathUnder(root, p string) (string, error) {
	if p == "" {
		return "", errors.New("is empty")
	}
	if !filepath.IsAbs(p) {
		return "", fmt.Errorf("%q is not an absolute path", p)
	}
	if slices.Contains(strings.Split(p, "/"), "..") {
		return "", fmt.Errorf("%q contains a '..' element", p)
	}
	if strings.ContainsRune(p, 0) {
		return "", fmt.Errorf("%q contains a NUL byte", p)
	}
	c := filepath.Clean(p)
	if !strings.HasPrefix(c, root+string(filepath.Separator)) && !(root == "/" && c != "/") {
		return "", fmt.Errorf("%q is not inside the kubelet directory %s", p, root)
	}
	return c, nil
}

// evalExisting resolves symlinks in the longest existing prefix of p and appends the rest, so
// that a path the CO has not created yet (a publish target) resolves like its parent would.
func evalExisting(p string) (string, error) {
	cur, rest := p, ""
	for {
		r, err := filepath.EvalSymlinks(cur)
		if err == nil {
			return filepath.Join(r, rest), nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return "", err
		}
		parent := filepath.Dir(cur)
		if parent == cur {
			return p, nil
		}
		rest = filepath.Join(filepath.Base(cur), rest)
		cur = parent
	}
}

// resolvePath validates a path field of a request and returns it cleaned and with symlinks
// resolved, which is how the kernel reports it in mountinfo. The resolved path must still be
// inside the (resolved) kubelet directory, so a symlink cannot redirect a mount elsewhere.
// Errors are InvalidArgument and name the field.
func (s *Server) resolvePath(field, p string) (string, error) {
	if p == "" {
		return "", status.Errorf(codes.InvalidArgument, "%s is required", field)
	}
	c, err := pathUnder(s.kubeletDir, p)
	if err != nil {
		return "", status.Errorf(codes.InvalidArgument, "%s %v", field, err)
	}
	r, err := evalExisting(c)
	if mount.IsCorruptedMnt(err) {
		// A dead mount (e.g. a vanished disk) cannot be stat'ed; keep the lexical path so that
		// unpublish/unstage can still unmount it.
		return c, nil
	}
	if errors.Is(err, syscall.ENOTDIR) {
		return "", status.Errorf(codes.InvalidArgument, "%s %q: a parent is not a directory", field, p)
	}
	if err != nil {
		return "", status.Errorf(codes.Internal, "resolving %s %q: %v", field, p, err)
	}
	if _, err := pathUnder(s.kubeletDirReal, r); err != nil {
		return "", status.Errorf(codes.InvalidArgument, "%s %q resolves to %q, outside the kubelet directory %s",
			field, p, r, s.kubeletDirReal)
	}
	return r, nil
}

// volumeSpec is a validated volume capability.
type volumeSpec struct {
	block      bool
	fsType     string // filesystem volumes only; defaulted
	mountFlags []string
	mode       csi.VolumeCapability_AccessMode_Mode
}

// readOnly reports whether the access mode allows no writer at all.
func (v volumeSpec) readOnly() bool {
	return v.mode == csi.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY ||
		v.mode == csi.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY
}

// multiNodeWriter reports modes that let more than one node write.
func multiNodeWriter(m csi.VolumeCapability_AccessMode_Mode) bool {
	return m == csi.VolumeCapability_AccessMode_MULTI_NODE_SINGLE_WRITER ||
		m == csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER
}

// parseCapability validates a volume capability; errors are InvalidArgument.
func parseCapability(c *csi.VolumeCapability) (volumeSpec, error) {
	if c == nil {
		return volumeSpec{}, status.Error(codes.InvalidArgument, "volume_capability is required")
	}
	mode := c.GetAccessMode().GetMode()
	if mode == csi.VolumeCapability_AccessMode_UNKNOWN {
		return volumeSpec{}, status.Error(codes.InvalidArgument, "volume_capability.access_mode is required")
	}
	switch {
	case c.GetBlock() != nil:
		// Several nodes writing one raw device is the RWX Block case that live migration needs;
		// coordinating the writers is the workload's business.
		return volumeSpec{block: true, mode: mode}, nil
	case c.GetMount() != nil:
		m := c.GetMount()
		if multiNodeWriter(mode) {
			return volumeSpec{}, status.Errorf(codes.InvalidArgument,
				"access mode %s is not supported for filesystem volumes: ext4 and xfs are not cluster filesystems", mode)
		}
		fsType := m.GetFsType()
		if fsType == "" {
			fsType = defaultFSType
		}
		if fsType != fsExt4 && fsType != fsXFS {
			return volumeSpec{}, status.Errorf(codes.InvalidArgument, "fs_type %q is not supported (want %s or %s)", fsType, fsExt4, fsXFS)
		}
		for _, f := range m.GetMountFlags() {
			if strings.TrimSpace(f) == "" {
				return volumeSpec{}, status.Errorf(codes.InvalidArgument, "mount_flags %q contains an empty flag", m.GetMountFlags())
			}
		}
		return volumeSpec{fsType: fsType, mountFlags: slices.Clone(m.GetMountFlags()), mode: mode}, nil
	default:
		return volumeSpec{}, status.Error(codes.InvalidArgument, "volume_capability needs access_type block or mount")
	}
}
