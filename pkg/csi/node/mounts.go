package node

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	mount "k8s.io/mount-utils"
)

// mountInfoPath is read on every call rather than cached: the kernel's table is the only
// truth, and kubelet or an admin may change it behind our back.
const mountInfoPath = "/proc/self/mountinfo"

// mountTable is a snapshot of mountinfo; later entries are mounted on top of earlier ones.
type mountTable []mount.MountInfo

func readMounts() (mountTable, error) {
	infos, err := mount.ParseMountInfo(mountInfoPath)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "reading %s: %v", mountInfoPath, err)
	}
	for i := range infos {
		infos[i].MountPoint = unescapeMountPath(infos[i].MountPoint)
	}
	return infos, nil
}

// unescapeMountPath undoes the octal escapes (\040 for a blank, \011, \012, \134) the kernel
// uses for mount points in mountinfo.
func unescapeMountPath(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// at returns the topmost mount at path (already resolved), if any.
func (t mountTable) at(path string) (mount.MountInfo, bool) {
	for i := len(t) - 1; i >= 0; i-- {
		if t[i].MountPoint == path {
			return t[i], true
		}
	}
	return mount.MountInfo{}, false
}

// refersTo reports whether mount m exposes block device dev: either a filesystem on it
// (mountinfo carries the filesystem's device number) or the device node bind-mounted onto a
// file, as NodePublishVolume does for block volumes.
func refersTo(m mount.MountInfo, dev uint64) bool {
	if unix.Mkdev(uint32(m.Major), uint32(m.Minor)) == dev {
		return true
	}
	rdev, ok := blockNode(m.MountPoint)
	return ok && rdev == dev
}

// blockNode returns the device number if path is a block device node.
func blockNode(path string) (uint64, bool) {
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil || st.Mode&syscall.S_IFMT != syscall.S_IFBLK {
		return 0, false
	}
	return st.Rdev, true
}

// diskBacked reports whether m is the kind of mount csi-node makes: a filesystem on a block
// device (anonymous devices such as tmpfs or overlay have major 0) or a bound device node.
func diskBacked(m mount.MountInfo) bool {
	if m.Major != 0 && strings.HasPrefix(m.Source, "/dev/") {
		return true
	}
	_, ok := blockNode(m.MountPoint)
	return ok
}

// usersOf returns the mount points inside dir (resolved) that expose dev, minus skip. It is
// how the node finds where a volume is staged or published without keeping its own records.
func (t mountTable) usersOf(dev uint64, dir string, skip ...string) []string {
	var out []string
	for _, m := range t {
		if !strings.HasPrefix(m.MountPoint, dir+"/") || slices.Contains(skip, m.MountPoint) || slices.Contains(out, m.MountPoint) {
			continue
		}
		if refersTo(m, dev) {
			out = append(out, m.MountPoint)
		}
	}
	return out
}

func isReadOnly(m mount.MountInfo) bool {
	return slices.Contains(m.MountOptions, "ro")
}

func describeMount(m mount.MountInfo) string {
	return fmt.Sprintf("%s %s (device %d:%d)", m.FsType, m.Source, m.Major, m.Minor)
}

// mayUnmount decides whether mount m may be unmounted on behalf of volumeID: it must expose
// the volume's disk, or, if that disk is already gone from the VM, at least be a disk mount.
// Anything else (a tmpfs, another volume's disk) was not mounted by us for this volume.
func (s *Server) mayUnmount(volumeID string, m mount.MountInfo) error {
	d, err := s.volumeDisk(volumeID, m.MountPoint)
	switch {
	case err == nil:
		if refersTo(m, d.dev) {
			return nil
		}
		return status.Errorf(codes.FailedPrecondition, "%s holds %s, not the disk of volume %q, %s; refusing to unmount it",
			m.MountPoint, describeMount(m), volumeID, d)
	case errors.Is(err, errDiskAbsent):
		if diskBacked(m) {
			return nil // the disk was unplugged first; unmounting what is left lets cleanup finish
		}
		return status.Errorf(codes.FailedPrecondition, "%s holds %s, which is not a disk csi-node mounts; refusing to unmount it",
			m.MountPoint, describeMount(m))
	default:
		return status.Errorf(codes.Internal, "finding the disk of volume %q: %v", volumeID, err)
	}
}

// unmount unmounts path once and checks that nothing is left mounted there.
func (s *Server) unmount(path string) error {
	if err := s.mounter.Unmount(path); err != nil {
		return status.Errorf(codes.Internal, "unmounting %s: %v", path, err)
	}
	t, err := readMounts()
	if err != nil {
		return err
	}
	if m, still := t.at(path); still {
		return status.Errorf(codes.Internal, "%s is still mounted after unmount (%s underneath); not touching it further",
			path, describeMount(m))
	}
	return nil
}
