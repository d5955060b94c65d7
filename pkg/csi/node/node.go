// Package node is the CSI Node service of tenantcloud. It runs inside a tenant VM (the
// csi-node DaemonSet), finds the disk the csi-controller hot-plugged by the serial in
// publish_context, formats and mounts it with k8s.io/mount-utils, and never talks to the
// management cluster.
//
// The node keeps no state of its own: the kernel's mount table and the by-id directory are
// the state, so a restarted plugin answers every call exactly as before.
//
// Safety rules, enforced everywhere:
//   - every path in a request must lie inside the kubelet directory (checked lexically and
//     again after resolving symlinks);
//   - only a device that carries no filesystem is formatted, and a device with another
//     filesystem than requested is refused (FAILED_PRECONDITION), never reformatted;
//   - unmounts happen only where the mount is the volume's disk, or a disk-backed mount when
//     the disk has already vanished; anything else is refused.
package node

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/tenantcloud/tenantcloud/pkg/csi/inflight"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/klog/v2"
	mount "k8s.io/mount-utils"
	utilexec "k8s.io/utils/exec"
)

// Defaults for Options.
const (
	DefaultDeviceDir         = "/dev/disk/by-id"
	DefaultKubeletDir        = "/var/lib/kubelet"
	DefaultMaxVolumesPerNode = 16
	// DefaultDeviceWaitTimeout bounds how long NodeStage/NodePublish wait for udev to show a
	// freshly hot-plugged disk. KubeVirt reports the volume Ready before the guest has always
	// processed the hotplug event, but the gap is seconds, not minutes.
	DefaultDeviceWaitTimeout = 30 * time.Second
)

// Options configure a Server.
type Options struct {
	// NodeID is what NodeGetInfo reports and the controller hot-plugs into: the VM name.
	// Required; see ResolveIdentity to learn it from the tenant Node.
	NodeID string
	// Topology segments reported by NodeGetInfo, e.g. {TopologyZoneKey: "zone-a"}; may be nil.
	Topology map[string]string
	// MaxVolumesPerNode is the number of hot-plug slots this node advertises; 0 = default.
	MaxVolumesPerNode int64
	// DeviceDir is scanned for disks by serial; empty = DefaultDeviceDir.
	DeviceDir string
	// KubeletDir is kubelet's root directory; every staging and target path must be inside
	// it. Empty = DefaultKubeletDir. It must exist.
	KubeletDir string
	// DeviceWaitTimeout bounds the wait for a disk to appear in DeviceDir (and, on expansion,
	// to reach the requested size); 0 = DefaultDeviceWaitTimeout.
	DeviceWaitTimeout time.Duration
}

func (o *Options) defaults() {
	if o.DeviceDir == "" {
		o.DeviceDir = DefaultDeviceDir
	}
	if o.KubeletDir == "" {
		o.KubeletDir = DefaultKubeletDir
	}
	if o.MaxVolumesPerNode == 0 {
		o.MaxVolumesPerNode = DefaultMaxVolumesPerNode
	}
	if o.DeviceWaitTimeout == 0 {
		o.DeviceWaitTimeout = DefaultDeviceWaitTimeout
	}
}

func (o *Options) validate() error {
	var errs []error
	if o.NodeID == "" {
		errs = append(errs, errors.New("node ID is required"))
	} else if msgs := validation.IsDNS1123Subdomain(o.NodeID); len(msgs) > 0 {
		errs = append(errs, fmt.Errorf("node ID %q is not a VM name: %v", o.NodeID, msgs))
	}
	if o.MaxVolumesPerNode < 0 {
		errs = append(errs, fmt.Errorf("max volumes per node must not be negative, got %d", o.MaxVolumesPerNode))
	}
	if o.DeviceWaitTimeout < 0 {
		errs = append(errs, fmt.Errorf("device wait timeout must not be negative, got %s", o.DeviceWaitTimeout))
	}
	for name, dir := range map[string]string{"device dir": o.DeviceDir, "kubelet dir": o.KubeletDir} {
		if !filepath.IsAbs(dir) {
			errs = append(errs, fmt.Errorf("%s %q must be an absolute path", name, dir))
		}
	}
	return errors.Join(errs...)
}

// Server implements csi.NodeServer.
type Server struct {
	csi.UnimplementedNodeServer

	opts Options
	// kubeletDir is Options.KubeletDir cleaned (what request paths are spelled against);
	// kubeletDirReal is it with symlinks resolved (what mountinfo shows).
	kubeletDir, kubeletDirReal string

	mounter  *mount.SafeFormatAndMount
	resizer  *mount.ResizeFs
	inflight *inflight.Guard
}

var _ csi.NodeServer = (*Server)(nil)

// New validates opts and returns a Server using the host's mount, mkfs, blkid and resize
// tools.
func New(opts Options) (*Server, error) {
	opts.defaults()
	if err := opts.validate(); err != nil {
		return nil, fmt.Errorf("csi node options: %w", err)
	}
	kubeletDir := filepath.Clean(opts.KubeletDir)
	resolved, err := filepath.EvalSymlinks(kubeletDir)
	if err != nil {
		return nil, fmt.Errorf("csi node options: kubelet dir: %w", err)
	}
	if fi, err := os.Stat(resolved); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("csi node options: kubelet dir %s is not a directory", kubeletDir)
	}
	opts.Topology = maps.Clone(opts.Topology)
	exec := utilexec.New()
	return &Server{
		opts:           opts,
		kubeletDir:     kubeletDir,
		kubeletDirReal: resolved,
		// Without systemd: csi-node runs in a container where systemd-run cannot reach the
		// host's systemd, and the scope it adds only matters for FUSE-style mount helpers.
		mounter:  mount.NewSafeFormatAndMount(mount.NewWithoutSystemd(""), exec),
		resizer:  mount.NewResizeFs(exec),
		inflight: inflight.New(),
	}, nil
}

// Ready reports whether the node can serve: the kubelet directory it mounts into must still be
// there (a DaemonSet whose hostPath went away can do nothing useful). It is cheap enough for
// the livenessprobe sidecar's Probe calls.
func (s *Server) Ready(context.Context) error {
	fi, err := os.Stat(s.kubeletDirReal)
	if err != nil {
		return fmt.Errorf("kubelet dir: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("kubelet dir %s is not a directory", s.kubeletDirReal)
	}
	return nil
}

// nodeCapabilities are the Node RPCs this plugin implements.
//
// SINGLE_NODE_MULTI_WRITER is advertised because NodePublishVolume enforces the difference
// between SINGLE_NODE_SINGLE_WRITER (one target) and SINGLE_NODE_MULTI_WRITER (any number).
// Volume health is GET_VOLUME_HEALTH: spec v1.13 removed the VOLUME_CONDITION capability and
// the condition field of NodeGetVolumeStatsResponse in favour of NodeGetVolumeHealth.
var nodeCapabilities = []csi.NodeServiceCapability_RPC_Type{
	csi.NodeServiceCapability_RPC_STAGE_UNSTAGE_VOLUME,
	csi.NodeServiceCapability_RPC_EXPAND_VOLUME,
	csi.NodeServiceCapability_RPC_GET_VOLUME_STATS,
	csi.NodeServiceCapability_RPC_GET_VOLUME_HEALTH,
	csi.NodeServiceCapability_RPC_SINGLE_NODE_MULTI_WRITER,
}

// NodeGetCapabilities lists nodeCapabilities.
func (s *Server) NodeGetCapabilities(context.Context, *csi.NodeGetCapabilitiesRequest) (*csi.NodeGetCapabilitiesResponse, error) {
	caps := make([]*csi.NodeServiceCapability, 0, len(nodeCapabilities))
	for _, c := range nodeCapabilities {
		caps = append(caps, &csi.NodeServiceCapability{Type: &csi.NodeServiceCapability_Rpc{
			Rpc: &csi.NodeServiceCapability_RPC{Type: c}}})
	}
	return &csi.NodeGetCapabilitiesResponse{Capabilities: caps}, nil
}

// NodeGetInfo reports the VM name as node ID, the hot-plug slot count and the topology.
func (s *Server) NodeGetInfo(context.Context, *csi.NodeGetInfoRequest) (*csi.NodeGetInfoResponse, error) {
	rsp := &csi.NodeGetInfoResponse{
		NodeId:            s.opts.NodeID,
		MaxVolumesPerNode: s.opts.MaxVolumesPerNode,
	}
	if len(s.opts.Topology) > 0 {
		rsp.AccessibleTopology = &csi.Topology{Segments: s.opts.Topology}
	}
	return rsp, nil
}

// removeCreated removes path if it is an empty directory or an empty regular file, which is
// all NodePublishVolume ever creates; anything else stays, so no data is deleted by mistake.
func removeCreated(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode().IsRegular() && fi.Size() != 0 {
		return fmt.Errorf("%s is a non-empty file that csi-node did not create; not removing it", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err // a non-empty directory fails here, as intended
	}
	return nil
}

// logger returns the request-scoped logger with the volume ID attached.
func logger(ctx context.Context, volumeID string) klog.Logger {
	return klog.FromContext(ctx).WithValues("volumeID", volumeID)
}
