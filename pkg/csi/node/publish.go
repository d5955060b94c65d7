package node

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	mount "k8s.io/mount-utils"
)

// NodePublishVolume bind-mounts the staged filesystem onto the target directory, or, for a
// block volume, the disk's device node onto the target file.
func (s *Server) NodePublishVolume(ctx context.Context, req *csi.NodePublishVolumeRequest) (*csi.NodePublishVolumeResponse, error) {
	volumeID := req.GetVolumeId()
	if err := validateVolumeID(volumeID); err != nil {
		return nil, err
	}
	target, err := s.resolvePath("target_path", req.GetTargetPath())
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
	var staging string
	if !spec.block {
		if req.GetStagingTargetPath() == "" {
			return nil, status.Error(codes.FailedPrecondition, "staging_target_path is required: filesystem volumes are published from their staging path")
		}
		if staging, err = s.resolvePath("staging_target_path", req.GetStagingTargetPath()); err != nil {
			return nil, err
		}
	}
	release, err := s.inflight.Acquire(volumeID, "NodePublishVolume")
	if err != nil {
		return nil, err
	}
	defer release()

	readOnly := req.GetReadonly() || spec.readOnly()
	if spec.block {
		err = s.publishBlock(ctx, serial, bus, target, readOnly, spec)
	} else {
		err = s.publishFilesystem(serial, bus, staging, target, readOnly, spec)
	}
	if err != nil {
		return nil, err
	}
	logger(ctx, volumeID).Info("Published volume", "targetPath", target, "block", spec.block, "readOnly", readOnly)
	return &csi.NodePublishVolumeResponse{}, nil
}

func (s *Server) publishFilesystem(serial, bus, staging, target string, readOnly bool, spec volumeSpec) error {
	t, err := readMounts()
	if err != nil {
		return err
	}
	sm, staged := t.at(staging)
	if !staged {
		return status.Errorf(codes.FailedPrecondition, "nothing is staged at %s; NodeStageVolume must succeed first", staging)
	}
	d, err := s.attachedDisk(serial, bus)
	if err != nil {
		return err
	}
	if !refersTo(sm, d.dev) {
		return status.Errorf(codes.FailedPrecondition, "staging path %s holds %s, not disk %s", staging, describeMount(sm), d)
	}
	if tm, ok := t.at(target); ok {
		return checkPublished(tm, d, readOnly)
	}
	if err := s.checkSingleWriter(t, d, spec, staging, target); err != nil {
		return err
	}
	if err := os.MkdirAll(target, 0o750); err != nil {
		return status.Errorf(codes.Internal, "creating target path: %v", err)
	}
	return s.bindMount(staging, target, readOnly)
}

func (s *Server) publishBlock(ctx context.Context, serial, bus, target string, readOnly bool, spec volumeSpec) error {
	// Nothing was staged for a block volume, so this is the first time the disk is needed.
	d, err := s.waitForDisk(ctx, serial, bus)
	if err != nil {
		return err
	}
	t, err := readMounts()
	if err != nil {
		return err
	}
	if tm, ok := t.at(target); ok {
		return checkPublished(tm, d, readOnly)
	}
	if err := s.checkSingleWriter(t, d, spec, target); err != nil {
		return err
	}
	if err := createTargetFile(target); err != nil {
		return err
	}
	// A read-only bind of a device node does not stop writes through it (the kernel checks
	// MNT_READONLY only for files on the mount, not for devices); kubelet enforces read-only
	// block volumes with the container's device permission. "ro" is kept as a marker.
	return s.bindMount(d.path, target, readOnly)
}

// attachedDisk finds the disk by serial without waiting: when it is needed after staging it
// must already be there.
func (s *Server) attachedDisk(serial, bus string) (disk, error) {
	d, err := findDisk(s.opts.DeviceDir, serial, bus)
	if errors.Is(err, errDiskAbsent) {
		return disk{}, status.Errorf(codes.FailedPrecondition, "the disk is no longer attached to this VM: %v", err)
	}
	if err != nil {
		return disk{}, status.Error(codes.FailedPrecondition, err.Error())
	}
	return d, nil
}

// checkPublished makes a repeated NodePublishVolume idempotent: the same disk with the same
// read-only flag is success; anything else at the target is ALREADY_EXISTS, as the spec's
// table asks for "T1=T2, P1!=P2".
func checkPublished(m mount.MountInfo, d disk, readOnly bool) error {
	if !refersTo(m, d.dev) {
		return status.Errorf(codes.AlreadyExists, "target path %s already holds %s, not disk %s", m.MountPoint, describeMount(m), d)
	}
	if isReadOnly(m) != readOnly {
		return status.Errorf(codes.AlreadyExists, "disk %s is already published at %s with read-only=%t; the request asks for read-only=%t",
			d, m.MountPoint, isReadOnly(m), readOnly)
	}
	return nil
}

// checkSingleWriter enforces SINGLE_NODE_SINGLE_WRITER: one publish per node. The other
// single-node modes may be published to several targets on this node, as Kubernetes does for
// several pods sharing a ReadWriteOnce volume.
func (s *Server) checkSingleWriter(t mountTable, d disk, spec volumeSpec, skip ...string) error {
	if spec.mode != csi.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER {
		return nil
	}
	if others := t.usersOf(d.dev, s.kubeletDirReal, skip...); len(others) > 0 {
		return status.Errorf(codes.FailedPrecondition, "disk %s has access mode SINGLE_NODE_SINGLE_WRITER and is already published at %q",
			d, others)
	}
	return nil
}

// createTargetFile creates the empty file a block volume is bound onto; the CO creates only
// its parent directory.
func createTargetFile(target string) error {
	if fi, err := os.Lstat(target); err == nil {
		if !fi.Mode().IsRegular() {
			return status.Errorf(codes.FailedPrecondition, "target path %s exists and is not a regular file (%s); block volumes are published onto a file",
				target, fi.Mode().Type())
		}
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(target), 0o750); err != nil {
		return status.Errorf(codes.Internal, "creating the parent of target path: %v", err)
	}
	f, err := os.OpenFile(target, os.O_CREATE|os.O_RDONLY, 0o640)
	if err != nil {
		return status.Errorf(codes.Internal, "creating target file: %v", err)
	}
	return f.Close()
}

func (s *Server) bindMount(source, target string, readOnly bool) error {
	opts := []string{"bind"}
	if readOnly {
		opts = append(opts, "ro")
	}
	if err := s.mounter.Mount(source, target, "", opts); err != nil {
		if rmErr := removeCreated(target); rmErr != nil {
			err = errors.Join(err, rmErr)
		}
		return status.Errorf(codes.Internal, "bind-mounting %s at %s: %v", source, target, err)
	}
	return nil
}

// NodeUnpublishVolume unmounts the target and removes the directory or file NodePublishVolume
// created. A target that is already gone is success.
func (s *Server) NodeUnpublishVolume(ctx context.Context, req *csi.NodeUnpublishVolumeRequest) (*csi.NodeUnpublishVolumeResponse, error) {
	volumeID := req.GetVolumeId()
	if err := validateVolumeID(volumeID); err != nil {
		return nil, err
	}
	target, err := s.resolvePath("target_path", req.GetTargetPath())
	if err != nil {
		return nil, err
	}
	release, err := s.inflight.Acquire(volumeID, "NodeUnpublishVolume")
	if err != nil {
		return nil, err
	}
	defer release()

	log := logger(ctx, volumeID)
	t, err := readMounts()
	if err != nil {
		return nil, err
	}
	if m, ok := t.at(target); ok {
		if err := s.mayUnmount(volumeID, m); err != nil {
			return nil, err
		}
		if err := s.unmount(target); err != nil {
			return nil, err
		}
		log.Info("Unpublished volume", "targetPath", target)
	} else if _, err := os.Lstat(target); errors.Is(err, fs.ErrNotExist) {
		log.V(2).Info("Target path is gone: already unpublished", "targetPath", target)
		return &csi.NodeUnpublishVolumeResponse{}, nil
	}
	if err := removeCreated(target); err != nil {
		return nil, status.Errorf(codes.Internal, "removing target path: %v", err)
	}
	return &csi.NodeUnpublishVolumeResponse{}, nil
}
