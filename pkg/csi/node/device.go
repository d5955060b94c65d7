package node

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	tccsi "github.com/tenantcloud/tenantcloud/pkg/csi"
)

// disk is a hot-plugged disk as the guest sees it.
type disk struct {
	serial string
	link   string // the by-id entry that named it
	path   string // the device node the link resolves to, e.g. /dev/sdb
	dev    uint64 // its device number (st_rdev), what mountinfo reports for filesystems on it
}

func (d disk) String() string {
	return fmt.Sprintf("%s (serial %s, %s)", d.path, d.serial, devString(d.dev))
}

func devString(dev uint64) string {
	return fmt.Sprintf("%d:%d", unix.Major(dev), unix.Minor(dev))
}

// errDiskAbsent means no by-id entry names the serial (yet): the disk is not plugged, or udev
// has not caught up.
var errDiskAbsent = errors.New("no disk with this serial")

// findDisk looks the serial up in dir once. errDiskAbsent (wrapped) means "not there"; other
// errors mean the directory holds something that must not be used, e.g. two different devices
// claiming the serial, or a link to a non-block file.
func findDisk(dir, serial, bus string) (disk, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		// udev creates /dev/disk/by-id with the first disk that has an ID.
		return disk{}, fmt.Errorf("serial %q (bus %s): %s does not exist: %w", serial, busName(bus), dir, errDiskAbsent)
	}
	if err != nil {
		return disk{}, fmt.Errorf("reading %s: %w", dir, err)
	}
	names := make([]string, len(entries))
	for i, e := range entries {
		names[i] = e.Name()
	}
	var found []disk
	for _, name := range matchDiskLinks(names, serial, bus) {
		d, err := resolveDiskLink(filepath.Join(dir, name), serial)
		if errors.Is(err, fs.ErrNotExist) {
			continue // a link whose device is already gone, or udev mid-update
		}
		if err != nil {
			return disk{}, err
		}
		if !slices.ContainsFunc(found, func(f disk) bool { return f.dev == d.dev }) {
			found = append(found, d)
		}
	}
	switch len(found) {
	case 0:
		return disk{}, fmt.Errorf("serial %q (bus %s) in %s: %w", serial, busName(bus), dir, errDiskAbsent)
	case 1:
		return found[0], nil
	default:
		return disk{}, fmt.Errorf("serial %q names different devices in %s: %s and %s; refusing to guess",
			serial, dir, found[0], found[1])
	}
}

func busName(bus string) string {
	if bus == "" {
		return "any"
	}
	return bus
}

// resolveDiskLink follows a by-id link and checks that it ends at a block device.
func resolveDiskLink(link, serial string) (disk, error) {
	path, err := filepath.EvalSymlinks(link)
	if err != nil {
		return disk{}, fmt.Errorf("resolving %s: %w", link, err)
	}
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return disk{}, fmt.Errorf("resolving %s: %w", link, &fs.PathError{Op: "stat", Path: path, Err: err})
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFBLK {
		return disk{}, fmt.Errorf("%s resolves to %s, which is not a block device", link, path)
	}
	return disk{serial: serial, link: link, path: path, dev: st.Rdev}, nil
}

// volumeDisk finds the disk of volumeID without waiting, for calls that carry no
// publish_context: its serial is derived from the volume ID exactly as the controller does,
// and either bus is accepted. An adopted upstream volume is found by the mount at one of
// paths instead (legacyDisk).
func (s *Server) volumeDisk(volumeID string, paths ...string) (disk, error) {
	if tccsi.IsLegacyVolumeID(volumeID) {
		return s.legacyDisk(paths...)
	}
	return findDisk(s.opts.DeviceDir, tccsi.Serial(volumeID), "")
}

// waitForDisk polls DeviceDir until the disk appears, the wait times out or ctx ends. Polling
// starts fast (the disk is usually there already) and backs off to a few checks a second;
// reading one directory that often costs nothing.
func (s *Server) waitForDisk(ctx context.Context, serial, bus string) (disk, error) {
	timeout := s.opts.DeviceWaitTimeout
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	interval := 10 * time.Millisecond
	for {
		d, err := findDisk(s.opts.DeviceDir, serial, bus)
		if err == nil {
			return d, nil
		}
		if !errors.Is(err, errDiskAbsent) {
			return disk{}, status.Error(codes.FailedPrecondition, err.Error())
		}
		tick := time.NewTimer(interval)
		select {
		case <-ctx.Done():
			tick.Stop()
			return disk{}, status.Errorf(codes.DeadlineExceeded, "waiting for the disk with serial %q (bus %s) in %s: %v",
				serial, busName(bus), s.opts.DeviceDir, ctx.Err())
		case <-deadline.C:
			tick.Stop()
			return disk{}, status.Errorf(codes.NotFound,
				"no disk with serial %q (bus %s) appeared in %s within %s; is the volume attached to this VM (ControllerPublishVolume)?",
				serial, busName(bus), s.opts.DeviceDir, timeout)
		case <-tick.C:
		}
		interval = min(2*interval, 250*time.Millisecond)
	}
}

// deviceSize returns the size in bytes of block device dev from sysfs, which needs no open of
// the device (opening a disk that is being unplugged can block).
func deviceSize(dev uint64) (int64, error) {
	p := fmt.Sprintf("/sys/dev/block/%s/size", devString(dev))
	raw, err := os.ReadFile(p)
	if err != nil {
		return 0, fmt.Errorf("block device %s: %w", devString(dev), err)
	}
	sectors, err := strconv.ParseInt(strings.TrimSpace(string(raw)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parsing %s: %w", p, err)
	}
	return sectors * 512, nil // sysfs counts 512-byte sectors whatever the logical block size
}

// waitForSize waits until the disk is at least want bytes: after ControllerExpandVolume the
// grown size reaches the guest with a capacity-change event that may lag the call.
func (s *Server) waitForSize(ctx context.Context, d disk, want int64) (int64, error) {
	deadline := time.Now().Add(s.opts.DeviceWaitTimeout)
	interval := 10 * time.Millisecond
	for {
		size, err := deviceSize(d.dev)
		if err != nil {
			return 0, status.Errorf(codes.Internal, "disk %s: %v", d, err)
		}
		if size >= want {
			return size, nil
		}
		if time.Now().After(deadline) {
			return 0, status.Errorf(codes.Unavailable,
				"disk %s is %d bytes, less than the %d requested: the grown disk has not reached this VM within %s",
				d, size, want, s.opts.DeviceWaitTimeout)
		}
		tick := time.NewTimer(interval)
		select {
		case <-ctx.Done():
			tick.Stop()
			return 0, status.Errorf(codes.DeadlineExceeded, "waiting for disk %s to grow to %d bytes: %v", d, want, ctx.Err())
		case <-tick.C:
		}
		interval = min(2*interval, 250*time.Millisecond)
	}
}
