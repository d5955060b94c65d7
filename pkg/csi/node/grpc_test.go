package node

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	tccsi "github.com/tenantcloud/tenantcloud/pkg/csi"
)

// serveNode runs s on a unix socket and returns a client connected through it, so the tests
// see exactly what a CO sees on the wire (status codes, messages).
func serveNode(t *testing.T, s *Server) csi.NodeClient {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "csi.sock")
	lis, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	csi.RegisterNodeServer(srv, s)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return csi.NewNodeClient(conn)
}

type testNode struct {
	s       *Server
	c       csi.NodeClient
	kubelet string
	devices string
}

func newTestNode(t *testing.T) testNode {
	t.Helper()
	base := t.TempDir()
	kubelet := filepath.Join(base, "kubelet")
	devices := filepath.Join(base, "by-id")
	for _, d := range []string{kubelet, devices} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	s, err := New(Options{
		NodeID:            "vm-1",
		Topology:          map[string]string{TopologyZoneKey: "zone-a"},
		MaxVolumesPerNode: 7,
		DeviceDir:         devices,
		KubeletDir:        kubelet,
		DeviceWaitTimeout: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	return testNode{s: s, c: serveNode(t, s), kubelet: kubelet, devices: devices}
}

func mountCap(fs string) *csi.VolumeCapability {
	return &csi.VolumeCapability{
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
		AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{FsType: fs}},
	}
}

func TestNew(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name    string
		opts    Options
		wantErr string
	}{
		{"ok", Options{NodeID: "vm-1", KubeletDir: dir}, ""},
		{"no node ID", Options{KubeletDir: dir}, "node ID is required"},
		{"node ID not a VM name", Options{NodeID: "kubevirt://vm-1", KubeletDir: dir}, "is not a VM name"},
		{"relative kubelet dir", Options{NodeID: "vm-1", KubeletDir: "var/lib/kubelet"}, "must be an absolute path"},
		{"missing kubelet dir", Options{NodeID: "vm-1", KubeletDir: filepath.Join(dir, "nope")}, "kubelet dir"},
		{"negative max", Options{NodeID: "vm-1", KubeletDir: dir, MaxVolumesPerNode: -1}, "must not be negative"},
	}
	for _, tt := range tests {
		_, err := New(tt.opts)
		if (err == nil) != (tt.wantErr == "") || err != nil && !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("%s: New = %v, want error containing %q", tt.name, err, tt.wantErr)
		}
	}
}

func TestNodeGetInfoAndCapabilities(t *testing.T) {
	n := newTestNode(t)
	ctx := context.Background()
	info, err := n.c.NodeGetInfo(ctx, &csi.NodeGetInfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if info.GetNodeId() != "vm-1" || info.GetMaxVolumesPerNode() != 7 ||
		info.GetAccessibleTopology().GetSegments()[TopologyZoneKey] != "zone-a" {
		t.Errorf("NodeGetInfo = %v", info)
	}
	caps, err := n.c.NodeGetCapabilities(ctx, &csi.NodeGetCapabilitiesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	got := map[csi.NodeServiceCapability_RPC_Type]bool{}
	for _, c := range caps.GetCapabilities() {
		got[c.GetRpc().GetType()] = true
	}
	for _, want := range nodeCapabilities {
		if !got[want] {
			t.Errorf("capability %v missing from %v", want, caps)
		}
	}
	if err := n.s.Ready(ctx); err != nil {
		t.Errorf("Ready: %v", err)
	}
	if len(got) != len(nodeCapabilities) {
		t.Errorf("capabilities = %v, want %v", got, nodeCapabilities)
	}
}

// TestBadRequests checks the error codes csi-sanity (v5.6.0 node.go) and the spec require for
// malformed requests, and that messages name what is wrong. None of these touch a device.
func TestBadRequests(t *testing.T) {
	n := newTestNode(t)
	ctx := context.Background()
	in := func(p ...string) string { return filepath.Join(append([]string{n.kubelet}, p...)...) }
	const vol = "vol-1"
	if err := os.WriteFile(in("file"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	emptyDir := in("pods", "u1", "empty")
	if err := os.MkdirAll(emptyDir, 0o750); err != nil {
		t.Fatal(err)
	}
	type call func() error
	stage := func(r *csi.NodeStageVolumeRequest) call {
		return func() error { _, err := n.c.NodeStageVolume(ctx, r); return err }
	}
	unstage := func(r *csi.NodeUnstageVolumeRequest) call {
		return func() error { _, err := n.c.NodeUnstageVolume(ctx, r); return err }
	}
	publish := func(r *csi.NodePublishVolumeRequest) call {
		return func() error { _, err := n.c.NodePublishVolume(ctx, r); return err }
	}
	unpublish := func(r *csi.NodeUnpublishVolumeRequest) call {
		return func() error { _, err := n.c.NodeUnpublishVolume(ctx, r); return err }
	}
	stats := func(r *csi.NodeGetVolumeStatsRequest) call {
		return func() error { _, err := n.c.NodeGetVolumeStats(ctx, r); return err }
	}
	expand := func(r *csi.NodeExpandVolumeRequest) call {
		return func() error { _, err := n.c.NodeExpandVolume(ctx, r); return err }
	}
	health := func(r *csi.NodeGetVolumeHealthRequest) call {
		return func() error { _, err := n.c.NodeGetVolumeHealth(ctx, r); return err }
	}
	staging := in("plugins", "kubernetes.io", "csi", tccsi.DriverName, "abc", "globalmount")
	target := in("pods", "u1", "volumes", "kubernetes.io~csi", "pv1", "mount")
	tests := []struct {
		name     string
		call     call
		wantCode codes.Code
		wantMsg  string
	}{
		{"stage: no volume ID", stage(&csi.NodeStageVolumeRequest{StagingTargetPath: staging, VolumeCapability: mountCap("")}), codes.InvalidArgument, "volume_id is required"},
		{"stage: no staging path", stage(&csi.NodeStageVolumeRequest{VolumeId: vol, VolumeCapability: mountCap("")}), codes.InvalidArgument, "staging_target_path is required"},
		{"stage: relative staging path", stage(&csi.NodeStageVolumeRequest{VolumeId: vol, StagingTargetPath: "plugins/x", VolumeCapability: mountCap("")}), codes.InvalidArgument, "not an absolute path"},
		{"stage: staging path outside kubelet dir", stage(&csi.NodeStageVolumeRequest{VolumeId: vol, StagingTargetPath: "/etc/x", VolumeCapability: mountCap("")}), codes.InvalidArgument, "not inside the kubelet directory"},
		{"stage: traversal", stage(&csi.NodeStageVolumeRequest{VolumeId: vol, StagingTargetPath: n.kubelet + "/plugins/../../x", VolumeCapability: mountCap("")}), codes.InvalidArgument, "'..'"},
		{"stage: no capability", stage(&csi.NodeStageVolumeRequest{VolumeId: vol, StagingTargetPath: staging, PublishContext: map[string]string{"device": "/dev/mock"}}), codes.InvalidArgument, "volume_capability is required"},
		{"stage: unsupported fs", stage(&csi.NodeStageVolumeRequest{VolumeId: vol, StagingTargetPath: staging, VolumeCapability: mountCap("btrfs")}), codes.InvalidArgument, `fs_type "btrfs"`},
		{"stage: foreign serial", stage(&csi.NodeStageVolumeRequest{VolumeId: vol, StagingTargetPath: staging, VolumeCapability: mountCap(""),
			PublishContext: map[string]string{tccsi.PublishContextSerial: tccsi.Serial("other")}}), codes.InvalidArgument, "is not the serial of volume"},
		{"stage: bad bus", stage(&csi.NodeStageVolumeRequest{VolumeId: vol, StagingTargetPath: staging, VolumeCapability: mountCap(""),
			PublishContext: map[string]string{tccsi.PublishContextBus: "ide"}}), codes.InvalidArgument, "not hot-pluggable"},

		{"unstage: no volume ID", unstage(&csi.NodeUnstageVolumeRequest{StagingTargetPath: staging}), codes.InvalidArgument, "volume_id"},
		{"unstage: no staging path", unstage(&csi.NodeUnstageVolumeRequest{VolumeId: vol}), codes.InvalidArgument, "staging_target_path"},
		{"unstage: outside", unstage(&csi.NodeUnstageVolumeRequest{VolumeId: vol, StagingTargetPath: "/"}), codes.InvalidArgument, "not inside"},
		{"unstage: unknown volume, nothing staged", unstage(&csi.NodeUnstageVolumeRequest{VolumeId: "unknown", StagingTargetPath: staging}), codes.OK, ""},

		{"publish: no volume ID", publish(&csi.NodePublishVolumeRequest{}), codes.InvalidArgument, "volume_id"},
		{"publish: no target", publish(&csi.NodePublishVolumeRequest{VolumeId: vol}), codes.InvalidArgument, "target_path is required"},
		{"publish: relative target", publish(&csi.NodePublishVolumeRequest{VolumeId: vol, TargetPath: "pods/x", VolumeCapability: mountCap("")}), codes.InvalidArgument, "target_path"},
		{"publish: no capability", publish(&csi.NodePublishVolumeRequest{VolumeId: vol, TargetPath: target}), codes.InvalidArgument, "volume_capability is required"},
		{"publish: no staging path", publish(&csi.NodePublishVolumeRequest{VolumeId: vol, TargetPath: target, VolumeCapability: mountCap("")}), codes.FailedPrecondition, "staging_target_path is required"},
		{"publish: parent is a file", publish(&csi.NodePublishVolumeRequest{VolumeId: vol, TargetPath: filepath.Join(n.kubelet, "file", "x"), VolumeCapability: mountCap("")}), codes.InvalidArgument, "not a directory"},
		{"publish: not staged", publish(&csi.NodePublishVolumeRequest{VolumeId: vol, TargetPath: target, StagingTargetPath: staging, VolumeCapability: mountCap("")}), codes.FailedPrecondition, "nothing is staged"},

		{"unpublish: no volume ID", unpublish(&csi.NodeUnpublishVolumeRequest{TargetPath: target}), codes.InvalidArgument, "volume_id"},
		{"unpublish: no target", unpublish(&csi.NodeUnpublishVolumeRequest{VolumeId: vol}), codes.InvalidArgument, "target_path is required"},
		{"unpublish: outside", unpublish(&csi.NodeUnpublishVolumeRequest{VolumeId: vol, TargetPath: "/tmp"}), codes.InvalidArgument, "not inside"},
		{"unpublish: unknown volume, no target", unpublish(&csi.NodeUnpublishVolumeRequest{VolumeId: "unknown", TargetPath: target}), codes.OK, ""},
		{"unpublish: leftover empty target", unpublish(&csi.NodeUnpublishVolumeRequest{VolumeId: vol, TargetPath: emptyDir}), codes.OK, ""},

		{"stats: no volume ID", stats(&csi.NodeGetVolumeStatsRequest{VolumePath: "some/path"}), codes.InvalidArgument, "volume_id"},
		{"stats: no path", stats(&csi.NodeGetVolumeStatsRequest{VolumeId: vol}), codes.InvalidArgument, "volume_path is required"},
		{"stats: relative path", stats(&csi.NodeGetVolumeStatsRequest{VolumeId: vol, VolumePath: "some/path"}), codes.NotFound, "not an absolute path"},
		{"stats: missing path", stats(&csi.NodeGetVolumeStatsRequest{VolumeId: vol, VolumePath: target}), codes.NotFound, "does not exist"},
		{"stats: not mounted", stats(&csi.NodeGetVolumeStatsRequest{VolumeId: vol, VolumePath: n.kubelet + "/pods"}), codes.NotFound, "is not mounted at"},

		{"expand: no volume ID", expand(&csi.NodeExpandVolumeRequest{VolumePath: target}), codes.InvalidArgument, "volume_id"},
		{"expand: no path", expand(&csi.NodeExpandVolumeRequest{VolumeId: vol}), codes.InvalidArgument, "volume_path is required"},
		{"expand: unknown volume", expand(&csi.NodeExpandVolumeRequest{VolumeId: "unknown", VolumePath: "some/path"}), codes.NotFound, "cannot be at volume_path"},
		{"expand: not attached", expand(&csi.NodeExpandVolumeRequest{VolumeId: vol, VolumePath: target}), codes.NotFound, "not attached to this VM"},

		{"health: no volume ID", health(&csi.NodeGetVolumeHealthRequest{}), codes.InvalidArgument, "volume_id"},
		{"health: outside", health(&csi.NodeGetVolumeHealthRequest{VolumeId: vol, VolumePublishPath: "/etc"}), codes.InvalidArgument, "volume_publish_path"},
		{"health: unknown volume", health(&csi.NodeGetVolumeHealthRequest{VolumeId: vol}), codes.NotFound, "not on this VM"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			if status.Code(err) != tt.wantCode || !strings.Contains(status.Convert(err).Message(), tt.wantMsg) {
				t.Errorf("got %v (%v), want %v with %q", status.Code(err), err, tt.wantCode, tt.wantMsg)
			}
		})
	}
	if _, err := os.Lstat(emptyDir); !os.IsNotExist(err) {
		t.Errorf("NodeUnpublish left the empty target %s behind: %v", emptyDir, err)
	}
}

// TestDiskNeverAppears checks that a stage for a disk that is not plugged fails within the
// wait timeout with NOT_FOUND naming the serial.
func TestDiskNeverAppears(t *testing.T) {
	n := newTestNode(t)
	const vol = "pvc-missing"
	serial := tccsi.Serial(vol)
	for _, block := range []bool{false, true} {
		start := time.Now()
		var err error
		if block {
			_, err = n.c.NodePublishVolume(context.Background(), &csi.NodePublishVolumeRequest{
				VolumeId: vol, TargetPath: filepath.Join(n.kubelet, "pods", "u", "dev"),
				PublishContext: map[string]string{tccsi.PublishContextSerial: serial, tccsi.PublishContextBus: tccsi.BusSCSI},
				VolumeCapability: &csi.VolumeCapability{
					AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
					AccessType: &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}},
				},
			})
		} else {
			_, err = n.c.NodeStageVolume(context.Background(), &csi.NodeStageVolumeRequest{
				VolumeId: vol, StagingTargetPath: filepath.Join(n.kubelet, "staging"), VolumeCapability: mountCap(""),
				PublishContext: map[string]string{tccsi.PublishContextSerial: serial, tccsi.PublishContextBus: tccsi.BusVirtio},
			})
		}
		elapsed := time.Since(start)
		msg := status.Convert(err).Message()
		if status.Code(err) != codes.NotFound || !strings.Contains(msg, serial) || !strings.Contains(msg, n.devices) {
			t.Errorf("block=%v: got %v, want NotFound naming serial %s and %s", block, err, serial, n.devices)
		}
		if elapsed < 200*time.Millisecond || elapsed > 2*time.Second {
			t.Errorf("block=%v: failed after %s, want just after the 200ms timeout", block, elapsed)
		}
	}
}

// TestConcurrentOperationAborted checks the in-flight guard is wired into every mutating RPC.
func TestConcurrentOperationAborted(t *testing.T) {
	n := newTestNode(t)
	ctx := context.Background()
	const vol = "vol-busy"
	release, err := n.s.inflight.Acquire(vol, "NodeStageVolume")
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	p := filepath.Join(n.kubelet, "p")
	calls := map[string]func() error{
		"stage": func() error {
			_, err := n.c.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{VolumeId: vol, StagingTargetPath: p, VolumeCapability: mountCap("")})
			return err
		},
		"unstage": func() error {
			_, err := n.c.NodeUnstageVolume(ctx, &csi.NodeUnstageVolumeRequest{VolumeId: vol, StagingTargetPath: p})
			return err
		},
		"publish": func() error {
			_, err := n.c.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{VolumeId: vol, TargetPath: p, StagingTargetPath: p, VolumeCapability: mountCap("")})
			return err
		},
		"unpublish": func() error {
			_, err := n.c.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: vol, TargetPath: p})
			return err
		},
		"expand": func() error {
			_, err := n.c.NodeExpandVolume(ctx, &csi.NodeExpandVolumeRequest{VolumeId: vol, VolumePath: p})
			return err
		},
	}
	for name, call := range calls {
		if err := call(); status.Code(err) != codes.Aborted || !strings.Contains(err.Error(), `NodeStageVolume on "`+vol+`"`) {
			t.Errorf("%s while NodeStageVolume runs: %v, want Aborted", name, err)
		}
	}
	// Read-only queries never wait on or block a mutation.
	if _, err := n.c.NodeGetVolumeStats(ctx, &csi.NodeGetVolumeStatsRequest{VolumeId: vol, VolumePath: p}); status.Code(err) == codes.Aborted {
		t.Errorf("stats were aborted: %v", err)
	}
}

func TestUnescapeMountPath(t *testing.T) {
	for in, want := range map[string]string{
		`/var/lib/kubelet/pods/x`: `/var/lib/kubelet/pods/x`,
		`/mnt/with\040space`:      `/mnt/with space`,
		`/a\011b\012c\134d`:       "/a\tb\nc\\d",
		`/trailing\04`:            `/trailing\04`,
		`/not\999octal`:           `/not\999octal`,
		`/twice\040\040`:          `/twice  `,
	} {
		if got := unescapeMountPath(in); got != want {
			t.Errorf("unescapeMountPath(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestRemoveCreated(t *testing.T) {
	dir := t.TempDir()
	emptyFile := filepath.Join(dir, "empty")
	dataFile := filepath.Join(dir, "data")
	fullDir := filepath.Join(dir, "full")
	_ = os.WriteFile(emptyFile, nil, 0o600)
	_ = os.WriteFile(dataFile, []byte("x"), 0o600)
	_ = os.MkdirAll(filepath.Join(fullDir, "sub"), 0o700)
	for path, wantErr := range map[string]bool{
		emptyFile:                    false,
		filepath.Join(dir, "absent"): false,
		dataFile:                     true,
		fullDir:                      true,
	} {
		err := removeCreated(path)
		if (err != nil) != wantErr {
			t.Errorf("removeCreated(%s) = %v, want error=%v", filepath.Base(path), err, wantErr)
		}
	}
	if _, err := os.Stat(dataFile); err != nil {
		t.Errorf("a file with data was removed: %v", err)
	}
}
