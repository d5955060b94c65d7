package node

import (
	"context"
	"errors"
	"os"
	"slices"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	mount "k8s.io/mount-utils"

	tccsi "github.com/tenantcloud/tenantcloud/pkg/csi"
)

// diskFromContext returns the serial and bus of the volume's disk from publish_context. The
// serial is always csi.Serial(volumeID); a publish_context without one (a CO that lost it)
// still works, and one that disagrees is refused rather than mounting another volume's disk.
// Adopted upstream volumes carry their serial in the contexts (legacyDiskFromContext).
func diskFromContext(volumeID string, pc, vc map[string]string) (serial, bus string, err error) {
	if tccsi.IsLegacyVolumeID(volumeID) {
		return legacyDiskFromContext(volumeID, pc, vc)
	}
	want := tccsi.Serial(volumeID)
	serial = pc[tccsi.PublishContextSerial]
	if serial == "" {
		serial = want
	} else if err := validateSerial(serial); err != nil {
		return "", "", status.Errorf(codes.InvalidArgument, "publish_context %s: %v", tccsi.PublishContextSerial, err)
	} else if serial != want {
		return "", "", status.Errorf(codes.InvalidArgument, "publish_context %s %q is not the serial of volume %q (want %q)",
			tccsi.PublishContextSerial, serial, volumeID, want)
	}
	bus = pc[tccsi.PublishContextBus]
	if err := validateBus(bus); err != nil {
		return "", "", status.Errorf(codes.InvalidArgument, "publish_context %s: %v", tccsi.PublishContextBus, err)
	}
	return serial, bus, nil
}

// NodeStageVolume formats the volume's disk if it is blank and mounts it at the staging path.
// Block volumes need no staging.
func (s *Server) NodeStageVolume(ctx context.Context, req *csi.NodeStageVolumeRequest) (*csi.NodeStageVolumeResponse, error) {
	volumeID := req.GetVolumeId()
	if err := validateVolumeID(volumeID); err != nil {
		return nil, err
	}
	staging, err := s.resolvePath("staging_target_path", req.GetStagingTargetPath())
	if err != nil {
		return nil, err
	}
	spec, err := parseCapability(req.GetVolumeCapability())
	if err != nil {
		return nil, err
	}
	serial, bus, err := diskFromContext(volumeID, req.GetPublishContext(), req.GetVolumeContext())
	if err != nil {
		return nil, err
	}
	release, err := s.inflight.Acquire(volumeID, "NodeStageVolume")
	if err != nil {
		return nil, err
	}
	defer release()

	log := logger(ctx, volumeID)
	if spec.block {
		log.V(2).Info("Block volume: nothing to stage", "stagingPath", staging)
		return &csi.NodeStageVolumeResponse{}, nil
	}
	d, err := s.waitForDisk(ctx, serial, bus)
	if err != nil {
		return nil, err
	}
	if err := s.stageFilesystem(d, staging, spec); err != nil {
		return nil, err
	}
	log.Info("Staged volume", "disk", d.path, "serial", serial, "stagingPath", staging, "fsType", spec.fsType)
	return &csi.NodeStageVolumeResponse{}, nil
}

func (s *Server) stageFilesystem(d disk, staging string, spec volumeSpec) error {
	t, err := readMounts()
	if err != nil {
		return err
	}
	if m, ok := t.at(staging); ok {
		return checkStaged(m, d, spec)
	}
	// The CO creates the staging directory; creating it here too costs nothing and makes a
	// retry after a kubelet restart robust.
	if err := os.MkdirAll(staging, 0o750); err != nil {
		return status.Errorf(codes.Internal, "creating staging path: %v", err)
	}
	if err := s.checkFormat(d, spec.fsType); err != nil {
		return err
	}
	if err := s.mounter.FormatAndMount(d.path, staging, spec.fsType, stageMountOptions(spec)); err != nil {
		return mountErrorStatus(err, d, staging)
	}
	return nil
}

// checkStaged makes a repeated NodeStageVolume idempotent: the same disk with the same
// filesystem and read-only flag is success, anything else at the path is an error.
func checkStaged(m mount.MountInfo, d disk, spec volumeSpec) error {
	switch {
	case !refersTo(m, d.dev):
		return status.Errorf(codes.FailedPrecondition, "staging path %s already holds %s, not disk %s",
			m.MountPoint, describeMount(m), d)
	case m.FsType != spec.fsType:
		return status.Errorf(codes.AlreadyExists, "disk %s is already staged at %s as %s; the request asks for %s",
			d, m.MountPoint, m.FsType, spec.fsType)
	case isReadOnly(m) != spec.readOnly():
		return status.Errorf(codes.AlreadyExists, "disk %s is already staged at %s with read-only=%t; the request asks for read-only=%t",
			d, m.MountPoint, isReadOnly(m), spec.readOnly())
	}
	return nil
}

// checkFormat refuses a disk that carries anything other than the requested filesystem.
// SafeFormatAndMount would only log a mismatch and try to mount anyway.
func (s *Server) checkFormat(d disk, fsType string) error {
	existing, err := s.mounter.GetDiskFormat(d.path)
	if err != nil {
		return status.Errorf(codes.Internal, "probing the filesystem on disk %s: %v", d, err)
	}
	if existing != "" && existing != fsType {
		return status.Errorf(codes.FailedPrecondition,
			"disk %s already carries %s but the volume asks for %s; refusing to format or mount it",
			d, existing, fsType)
	}
	return nil
}

// stageMountOptions are the capability's mount flags plus what the driver needs.
func stageMountOptions(spec volumeSpec) []string {
	opts := slices.Clone(spec.mountFlags)
	if spec.readOnly() {
		opts = append(opts, "ro")
	}
	// Clones and restored snapshots carry their source's XFS UUID, and XFS refuses to mount a
	// second filesystem with a UUID that is already mounted.
	if spec.fsType == fsXFS && !slices.Contains(opts, "nouuid") {
		opts = append(opts, "nouuid")
	}
	return opts
}

func mountErrorStatus(err error, d disk, staging string) error {
	var me mount.MountError
	if errors.As(err, &me) {
		switch me.Type {
		case mount.UnformattedReadOnly, mount.FilesystemMismatch, mount.HasFilesystemErrors:
			return status.Errorf(codes.FailedPrecondition, "mounting disk %s at %s: %v", d, staging, err)
		}
	}
	return status.Errorf(codes.Internal, "mounting disk %s at %s: %v", d, staging, err)
}

// NodeUnstageVolume unmounts the staging path. The directory itself belongs to the CO and
// stays. A path with nothing mounted is already unstaged.
func (s *Server) NodeUnstageVolume(ctx context.Context, req *csi.NodeUnstageVolumeRequest) (*csi.NodeUnstageVolumeResponse, error) {
	volumeID := req.GetVolumeId()
	if err := validateVolumeID(volumeID); err != nil {
		return nil, err
	}
	staging, err := s.resolvePath("staging_target_path", req.GetStagingTargetPath())
	if err != nil {
		return nil, err
	}
	release, err := s.inflight.Acquire(volumeID, "NodeUnstageVolume")
	if err != nil {
		return nil, err
	}
	defer release()

	log := logger(ctx, volumeID)
	t, err := readMounts()
	if err != nil {
		return nil, err
	}
	m, ok := t.at(staging)
	if !ok {
		log.V(2).Info("Not staged: nothing to unmount", "stagingPath", staging)
		return &csi.NodeUnstageVolumeResponse{}, nil
	}
	if err := s.mayUnmount(volumeID, m); err != nil {
		return nil, err
	}
	dev := unix.Mkdev(uint32(m.Major), uint32(m.Minor))
	if users := t.usersOf(dev, s.kubeletDirReal, staging); len(users) > 0 {
		// The CO must unpublish first; unmounting now would leave the pods' bind mounts on a
		// disk the controller is about to unplug.
		return nil, status.Errorf(codes.FailedPrecondition, "volume %q is still published at %q; unpublish it before unstaging", volumeID, users)
	}
	if err := s.unmount(staging); err != nil {
		return nil, err
	}
	log.Info("Unstaged volume", "stagingPath", staging, "device", describeMount(m))
	return &csi.NodeUnstageVolumeResponse{}, nil
}
