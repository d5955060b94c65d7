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

	corev1 "k8s.io/api/core/v1"

	tccsi "github.com/tenantcloud/tenantcloud/pkg/csi"
	"github.com/tenantcloud/tenantcloud/pkg/infra"
	"github.com/tenantcloud/tenantcloud/test/harness"
)

// waitCSI waits until the CSI plugin at sock answers GetPluginInfo.
func (s *sandbox) waitCSI(ctx context.Context, name string, c *harness.Process, sock string) error {
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close() }()
	id := csi.NewIdentityClient(conn)
	return poll(ctx, name+" answering GetPluginInfo on "+sock, func(ctx context.Context) (bool, error) {
		if err := exited(c); err != nil {
			return false, err
		}
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		_, err := id.GetPluginInfo(cctx, &csi.GetPluginInfoRequest{})
		return err == nil, err
	})
}

// csiNode is one csi-node process, as the DaemonSet runs one per Node.
type csiNode struct {
	node    string
	child   *harness.Process
	sock    string
	kubelet string
}

// ensureCSINodes starts csi-node for each of nodes that has none yet, as the tenant chart's
// DaemonSet does for a Node that joins: it finds its VM through the Node's providerID (given
// --node-name, as the DaemonSet's NODE_NAME) and sees that VM's hot-plugged disks.
func (s *sandbox) ensureCSINodes(ctx context.Context, nodes []corev1.Node) error {
	if s.csiNodes == nil {
		s.csiNodes = map[string]*csiNode{}
	}
	for _, n := range nodes {
		vm, err := infra.VMNameFromProviderID(n.Spec.ProviderID)
		if err != nil {
			return err
		}
		if _, running := s.csiNodes[vm]; running {
			continue
		}
		dir := filepath.Join(s.logDir, "csi-node-"+vm)
		kubelet := filepath.Join(dir, "kubelet")
		if err := os.MkdirAll(kubelet, 0o750); err != nil {
			return err
		}
		sock := filepath.Join(dir, "csi.sock")
		c, err := s.spawn("csi-node-"+vm, s.bin("csi-node"), "--config", s.cfg.files["csi-node"], "--node-name", n.Name,
			"--endpoint", "unix://"+sock, "--device-dir", s.sim.DeviceDir(infraNS, vm), "--kubelet-dir", kubelet,
			"--metrics-bind-address=0", "--v=2")
		if err != nil {
			return err
		}
		s.csiNodes[vm] = &csiNode{node: n.Name, child: c, sock: sock, kubelet: kubelet}
		if err := s.waitCSI(ctx, "csi-node on "+n.Name, c, sock); err != nil {
			return err
		}
		info, err := nodeInfo(ctx, sock)
		if err != nil {
			return fmt.Errorf("csi-node on %s: NodeGetInfo: %w", n.Name, err)
		}
		ok("csi-node on Node %s (one per Node, as the DaemonSet): node ID %s from the Node's providerID, devices of VM %s", n.Name, info.GetNodeId(), vm)
	}
	return nil
}

// stopCSINode stops the csi-node of a VM whose Node left, as its DaemonSet pod goes with it.
func (s *sandbox) stopCSINode(vm string) error {
	cn, found := s.csiNodes[vm]
	if !found {
		return nil
	}
	delete(s.csiNodes, vm)
	return cn.child.Stop()
}

func nodeInfo(ctx context.Context, sock string) (*csi.NodeGetInfoResponse, error) {
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	defer func() { _ = conn.Close() }()
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return csi.NewNodeClient(conn).NodeGetInfo(cctx, &csi.NodeGetInfoRequest{})
}

// storyStorage plays the CO (external-provisioner, external-attacher and kubelet; the tenant
// has no kubelet) over the CSI sockets of the real csi-controller and of a real csi-node
// "inside" the worker VM: provision, attach, stage, publish, write and read a file, then undo.
func (s *sandbox) storyStorage(ctx context.Context) error {
	vm := s.worker
	cn, found := s.csiNodes[vm]
	if !found {
		return fmt.Errorf("no csi-node runs for VM %s", vm)
	}
	kubelet, sock := cn.kubelet, cn.sock

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
