package node

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	tccsi "github.com/tenantcloud/tenantcloud/pkg/csi"
	"github.com/tenantcloud/tenantcloud/test/harness"
)

// blockDevices returns n block device nodes of this host (stat'ing them needs no privilege).
func blockDevices(t *testing.T, n int) []string {
	t.Helper()
	entries, _ := os.ReadDir("/dev")
	var out []string
	for _, e := range entries {
		p := filepath.Join("/dev", e.Name())
		var st unix.Stat_t
		if unix.Stat(p, &st) == nil && st.Mode&syscall.S_IFMT == syscall.S_IFBLK {
			out = append(out, p)
			if len(out) == n {
				return out
			}
		}
	}
	harness.Require(t, harness.NeedBlockDevices, fmt.Errorf("%d block device nodes in /dev, found %d", n, len(out)))
	return nil
}

func TestFindDisk(t *testing.T) {
	devs := blockDevices(t, 2)
	serial := tccsi.Serial("vol-1")
	regular := filepath.Join(t.TempDir(), "not-a-disk")
	if err := os.WriteFile(regular, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	// udev writes relative links ("../../sdb"); the test dir is not under /dev, so point
	// relative links at the devices through enough "..".
	rel := func(dir, dev string) string {
		r, err := filepath.Rel(dir, dev)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	tests := []struct {
		name     string
		links    func(dir string) map[string]string // link name → target
		bus      string
		wantDev  string
		wantErr  string
		wantGone bool
	}{
		{"no directory yet", nil, "", "", "does not exist", true},
		{"empty", func(string) map[string]string { return nil }, "", "", "", true},
		{"virtio, relative link", func(dir string) map[string]string {
			return map[string]string{"virtio-" + serial: rel(dir, devs[0])}
		}, tccsi.BusVirtio, devs[0], "", false},
		{"scsi", func(string) map[string]string {
			return map[string]string{"scsi-0QEMU_QEMU_HARDDISK_" + serial: devs[1]}
		}, tccsi.BusSCSI, devs[1], "", false},
		{"wrong bus", func(string) map[string]string {
			return map[string]string{"scsi-0QEMU_QEMU_HARDDISK_" + serial: devs[1]}
		}, tccsi.BusVirtio, "", "", true},
		{"two names, one disk", func(string) map[string]string {
			return map[string]string{"scsi-0QEMU_QEMU_HARDDISK_" + serial: devs[0], "scsi-SQEMU_QEMU_HARDDISK_" + serial: devs[0]}
		}, "", devs[0], "", false},
		{"dangling link is not there yet", func(dir string) map[string]string {
			return map[string]string{"virtio-" + serial: filepath.Join(dir, "gone")}
		}, "", "", "", true},
		{"not a block device", func(string) map[string]string {
			return map[string]string{"virtio-" + serial: regular}
		}, "", "", "not a block device", false},
		{"two disks claim the serial", func(string) map[string]string {
			return map[string]string{"virtio-" + serial: devs[0], "scsi-0QEMU_QEMU_HARDDISK_" + serial: devs[1]}
		}, "", "", "refusing to guess", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "by-id")
			if tt.links != nil {
				if err := os.Mkdir(dir, 0o755); err != nil {
					t.Fatal(err)
				}
				for name, target := range tt.links(dir) {
					if err := os.Symlink(target, filepath.Join(dir, name)); err != nil {
						t.Fatal(err)
					}
				}
			}
			d, err := findDisk(dir, serial, tt.bus)
			if gone := errors.Is(err, errDiskAbsent); gone != tt.wantGone {
				t.Fatalf("findDisk = %v, %v; want absent=%v", d, err, tt.wantGone)
			}
			if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("findDisk error %v, want %q", err, tt.wantErr)
			}
			if tt.wantDev != "" {
				if err != nil || d.path != tt.wantDev || d.serial != serial {
					t.Fatalf("findDisk = %+v, %v; want %s", d, err, tt.wantDev)
				}
				var st unix.Stat_t
				_ = unix.Stat(tt.wantDev, &st)
				if d.dev != st.Rdev {
					t.Errorf("dev = %s, want %s", devString(d.dev), devString(st.Rdev))
				}
			}
			if err != nil && !strings.Contains(err.Error(), serial) {
				t.Errorf("error %q does not name the serial", err)
			}
		})
	}
}

func TestWaitForDiskAppearsLater(t *testing.T) {
	dev := blockDevices(t, 1)[0]
	dir := filepath.Join(t.TempDir(), "by-id")
	s := &Server{opts: Options{DeviceDir: dir, DeviceWaitTimeout: 10 * time.Second}}
	serial := tccsi.Serial("vol-late")
	found := make(chan error, 1)
	go func() {
		d, err := s.waitForDisk(context.Background(), serial, tccsi.BusSCSI)
		if err == nil && d.path != dev {
			err = errors.New("found " + d.path)
		}
		found <- err
	}()
	// udev creates the directory and the link while the plugin is waiting.
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(dev, filepath.Join(dir, "scsi-0QEMU_QEMU_HARDDISK_"+serial)); err != nil {
		t.Fatal(err)
	}
	if err := <-found; err != nil {
		t.Fatalf("waitForDisk: %v", err)
	}
}

func TestWaitForDiskCancelled(t *testing.T) {
	s := &Server{opts: Options{DeviceDir: t.TempDir(), DeviceWaitTimeout: time.Hour}}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := s.waitForDisk(ctx, "abc", "")
	if status.Code(err) != codes.DeadlineExceeded || !strings.Contains(err.Error(), `"abc"`) {
		t.Errorf("waitForDisk with a cancelled context: %v, want DeadlineExceeded naming the serial", err)
	}
}
