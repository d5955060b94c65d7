package node

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	tccsi "github.com/tenantcloud/tenantcloud/pkg/csi"
)

// Volumes adopted from the upstream KubeVirt CSI driver (handle "pvc-<uid>", see
// tccsi.IsLegacyVolumeID) keep the disk serial upstream gave them: the DataVolume's UID
// (kubevirt/csi-driver pkg/service/controller.go CreateVolume puts it in the volume context as
// "serial"; its node plugin matches it against lsblk's SERIAL column). It cannot be derived
// from the handle, so:
//   - NodeStage/NodePublish take it from publish_context (csi-controller sends it when it
//     publishes an adopted volume) or, for a disk upstream attached before the switch (its
//     VolumeAttachment carries no publish_context), from the PV's volume_context;
//   - calls without either (expansion, stats, health, unmount) find the disk by the mount at
//     the path they name: a disk whose by-id link carries an upstream-form serial.

// legacyDiskFromContext is diskFromContext for an adopted volume.
func legacyDiskFromContext(volumeID string, pc, vc map[string]string) (serial, bus string, err error) {
	serial, bus = pc[tccsi.PublishContextSerial], pc[tccsi.PublishContextBus]
	if serial == "" {
		serial = vc[tccsi.LegacyContextSerial]
	}
	if bus == "" {
		bus = vc[tccsi.LegacyContextBus]
	}
	if !tccsi.IsCanonicalUID(serial) {
		return "", "", status.Errorf(codes.InvalidArgument,
			"volume %q is an adopted upstream volume: its serial (publish_context or volume_context %q) must be the DataVolume's UID, got %q",
			volumeID, tccsi.LegacyContextSerial, serial)
	}
	if err := validateBus(bus); err != nil {
		return "", "", status.Errorf(codes.InvalidArgument, "volume %q: %v", volumeID, err)
	}
	return serial, bus, nil
}

// legacySerialOfLink returns the serial of a by-id link name if it names a whole SCSI disk
// whose serial has the upstream form (a UID). Upstream hot-plugs on scsi unless a StorageClass
// asks otherwise, and a virtio guest sees only 20 bytes of a UID, which upstream itself could
// never match.
func legacySerialOfLink(name string) (string, bool) {
	if strings.ContainsRune(name, '/') || !strings.HasPrefix(name, scsiLinkPrefix) || len(name) < 37 {
		return "", false
	}
	serial := name[len(name)-36:]
	if name[len(name)-37] != '_' || !tccsi.IsCanonicalUID(serial) {
		return "", false
	}
	return serial, true
}

// legacyDisk finds the disk of an adopted volume from the mounts at paths: the first path that
// holds a disk with an upstream-form serial. errDiskAbsent (wrapped) means none does.
func (s *Server) legacyDisk(paths ...string) (disk, error) {
	entries, err := os.ReadDir(s.opts.DeviceDir)
	if errors.Is(err, fs.ErrNotExist) {
		return disk{}, fmt.Errorf("%s does not exist: %w", s.opts.DeviceDir, errDiskAbsent)
	}
	if err != nil {
		return disk{}, fmt.Errorf("reading %s: %w", s.opts.DeviceDir, err)
	}
	t, err := readMounts()
	if err != nil {
		return disk{}, err
	}
	for _, p := range paths {
		m, ok := t.at(p)
		if !ok {
			continue
		}
		for _, e := range entries {
			serial, ok := legacySerialOfLink(e.Name())
			if !ok {
				continue
			}
			d, err := resolveDiskLink(filepath.Join(s.opts.DeviceDir, e.Name()), serial)
			if err != nil {
				continue // gone, or not a block device: not this volume's disk
			}
			if refersTo(m, d.dev) {
				return d, nil
			}
		}
	}
	return disk{}, fmt.Errorf("no disk with an upstream serial is mounted at %v: %w", paths, errDiskAbsent)
}
