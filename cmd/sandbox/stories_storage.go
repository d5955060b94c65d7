package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	tccsi "github.com/tenantcloud/tenantcloud/pkg/csi"
)

// waitCSI waits until the CSI plugin at sock answers GetPluginInfo.
func (s *sandbox) waitCSI(ctx context.Context, name string, c *child, sock string) error {
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close() }()
	id := csi.NewIdentityClient(conn)
	return poll(ctx, name+" answering GetPluginInfo on "+sock, func(ctx context.Context) (bool, error) {
		if err := c.exited(); err != nil {
			return false, err
		}
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		_, err := id.GetPluginInfo(cctx, &csi.GetPluginInfoRequest{})
		return err == nil, err
	})
}

// storyStorage plays the CO (external-provisioner, external-attacher and kubelet; the tenant
// has no kubelet) over the CSI sockets of the real csi-controller and of a real csi-node
// "inside" the worker VM: provision, attach, stage, publish, write and read a file, then undo.
func (s *sandbox) storyStorage(ctx context.Context) error {
	vm := s.worker
	dir := filepath.Join(s.logDir, "csi-node-"+vm)
	kubelet := filepath.Join(dir, "kubelet")
	if err := os.MkdirAll(kubelet, 0o750); err != nil {
		return err
	}
	sock := filepath.Join(dir, "csi.sock")
	step("starting csi-node for VM %s (device dir %s)", vm, s.sim.DeviceDir(infraNS, vm))
	node, err := s.spawn("csi-node-"+vm, s.bin("csi-node"), "--config", s.cfg.node, "--node-id", vm,
		"--endpoint", "unix://"+sock, "--device-dir", s.sim.DeviceDir(infraNS, vm), "--kubelet-dir", kubelet,
		"--metrics-bind-address=0", "--v=2")
	if err != nil {
		return err
	}
	if err := s.waitCSI(ctx, "csi-node", node, sock); err != nil {
		return err
	}
	ok("csi-node serving on %s", sock)

	ctrlConn, err := grpc.NewClient("unix://"+s.cfg.ctrlSock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer func() { _ = ctrlConn.Close() }()
	nodeConn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer func() { _ = nodeConn.Close() }()
	cc, nc := csi.NewControllerClient(ctrlConn), csi.NewNodeClient(nodeConn)
	call := func() (context.Context, context.CancelFunc) { return context.WithTimeout(ctx, waitTimeout) }

	fmt.Println("           (the sandbox itself acts as external-provisioner, external-attacher and kubelet over the CSI sockets)")
	capability := &csi.VolumeCapability{
		AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{FsType: "ext4"}},
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
	}
	c, cancel := call()
	vol, err := cc.CreateVolume(c, &csi.CreateVolumeRequest{Name: "pvc-sandbox-data", VolumeCapabilities: []*csi.VolumeCapability{capability},
		CapacityRange: &csi.CapacityRange{RequiredBytes: 64 << 20}})
	cancel()
	if err != nil {
		return fmt.Errorf("CreateVolume pvc-sandbox-data: %w", err)
	}
	id := vol.GetVolume().GetVolumeId()
	ok("CreateVolume → %s (%d MiB DataVolume in %s)", id, vol.GetVolume().GetCapacityBytes()>>20, infraNS)
	c, cancel = call()
	pub, err := cc.ControllerPublishVolume(c, &csi.ControllerPublishVolumeRequest{VolumeId: id, NodeId: vm, VolumeCapability: capability,
		VolumeContext: vol.GetVolume().GetVolumeContext()})
	cancel()
	if err != nil {
		return fmt.Errorf("ControllerPublishVolume %s to %s: %w", id, vm, err)
	}
	ok("ControllerPublishVolume → hot-plugged into VM %s (publish context %v)", vm, pub.GetPublishContext())

	staging := filepath.Join(kubelet, "plugins", "kubernetes.io", "csi", tccsi.DriverName, tccsi.Serial(id), "globalmount")
	target := filepath.Join(kubelet, "pods", "sandbox-pod", "volumes", "kubernetes.io~csi", id, "mount")
	for _, d := range []string{staging, filepath.Dir(target)} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			return err
		}
	}
	c, cancel = call()
	_, err = nc.NodeStageVolume(c, &csi.NodeStageVolumeRequest{VolumeId: id, StagingTargetPath: staging, VolumeCapability: capability,
		PublishContext: pub.GetPublishContext(), VolumeContext: vol.GetVolume().GetVolumeContext()})
	cancel()
	if err != nil {
		return fmt.Errorf("NodeStageVolume %s on %s: %w", id, vm, err)
	}
	ok("NodeStageVolume → ext4 formatted and mounted at %s", staging)
	c, cancel = call()
	_, err = nc.NodePublishVolume(c, &csi.NodePublishVolumeRequest{VolumeId: id, StagingTargetPath: staging, TargetPath: target,
		VolumeCapability: capability, PublishContext: pub.GetPublishContext(), VolumeContext: vol.GetVolume().GetVolumeContext()})
	cancel()
	if err != nil {
		return fmt.Errorf("NodePublishVolume %s on %s: %w", id, vm, err)
	}
	ok("NodePublishVolume → bind-mounted at %s", target)

	file := filepath.Join(target, "hello.txt")
	want := "hello from the tenantcloud sandbox\n"
	if err := os.WriteFile(file, []byte(want), 0o644); err != nil {
		return fmt.Errorf("writing %s: %w", file, err)
	}
	got, err := os.ReadFile(file)
	if err != nil || string(got) != want {
		return fmt.Errorf("reading %s back: %q, %v", file, got, err)
	}
	ok("wrote and read back %s (%d bytes)", file, len(got))

	c, cancel = call()
	defer cancel()
	if _, err := nc.NodeUnpublishVolume(c, &csi.NodeUnpublishVolumeRequest{VolumeId: id, TargetPath: target}); err != nil {
		return fmt.Errorf("NodeUnpublishVolume %s: %w", id, err)
	}
	if _, err := nc.NodeUnstageVolume(c, &csi.NodeUnstageVolumeRequest{VolumeId: id, StagingTargetPath: staging}); err != nil {
		return fmt.Errorf("NodeUnstageVolume %s: %w", id, err)
	}
	if _, err := cc.ControllerUnpublishVolume(c, &csi.ControllerUnpublishVolumeRequest{VolumeId: id, NodeId: vm}); err != nil {
		return fmt.Errorf("ControllerUnpublishVolume %s from %s: %w", id, vm, err)
	}
	if _, err := cc.DeleteVolume(c, &csi.DeleteVolumeRequest{VolumeId: id}); err != nil {
		return fmt.Errorf("DeleteVolume %s: %w", id, err)
	}
	ok("NodeUnpublish, NodeUnstage, ControllerUnpublish, DeleteVolume: volume %s gone", id)
	return nil
}
