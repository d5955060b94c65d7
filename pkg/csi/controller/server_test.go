package controller

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"k8s.io/client-go/rest"

	"github.com/tenantcloud/tenantcloud/pkg/config"
	"github.com/tenantcloud/tenantcloud/pkg/csi/identity"
	"github.com/tenantcloud/tenantcloud/pkg/infra"
)

// unstarted is a Server whose infra apiserver does not exist: anything that reaches the infra
// API fails, so the tests below prove which checks come first.
func unstarted(t *testing.T, storage config.Storage) *Server {
	t.Helper()
	s, err := New(Options{
		Scope:        infra.Scope{Namespace: "tenant-a", ClusterName: "alpha"},
		Storage:      storage,
		Infra:        &rest.Config{Host: "https://127.0.0.1:1"},
		ProbeTimeout: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestNewValidates(t *testing.T) {
	good := Options{Scope: infra.Scope{Namespace: "ns", ClusterName: "c"}, Storage: config.Storage{DefaultStorageClass: "x"},
		Infra: &rest.Config{Host: "https://127.0.0.1:1"}}
	tests := []struct {
		mut  func(*Options)
		want string
	}{
		{func(o *Options) { o.Infra = nil }, "infra credentials are required"},
		{func(o *Options) { o.Scope.Namespace = "Bad_NS" }, "infra namespace"},
		{func(o *Options) { o.Scope.ClusterName = "" }, "cluster name"},
		{func(o *Options) { o.Storage.DefaultStorageClass = "" }, "defaultStorageClass is required"},
	}
	for _, tt := range tests {
		o := good
		tt.mut(&o)
		if _, err := New(o); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("New: %v, want %q", err, tt.want)
		}
	}
	s, err := New(good)
	if err != nil {
		t.Fatal(err)
	}
	if s.opts.Storage.DiskBus != config.DiskBusSCSI || s.opts.Storage.VolumeMode != config.VolumeModeBlock {
		t.Errorf("storage defaults not applied: %+v", s.opts.Storage)
	}
}

func TestProbeNotReadyWithoutInfra(t *testing.T) {
	s := unstarted(t, config.Storage{DefaultStorageClass: "x"})
	if err := s.Ready(context.Background()); err == nil || !strings.Contains(err.Error(), "not synced") {
		t.Errorf("Ready before Start = %v", err)
	}
	ids := identity.New(identity.Options{Capabilities: PluginCapabilities(false), Ready: s.Ready})
	rsp, err := ids.Probe(context.Background(), &csi.ProbeRequest{})
	if err != nil || rsp.GetReady().GetValue() {
		t.Errorf("Probe = %v, %v; want not ready", rsp, err)
	}
	// Synced but the apiserver is unreachable: still not ready.
	s.synced.Store(true)
	if err := s.Ready(context.Background()); err == nil || !strings.Contains(err.Error(), "/readyz") {
		t.Errorf("Ready with an unreachable apiserver = %v", err)
	}
	// Start gives up with its context when the cache cannot sync.
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := unstarted(t, config.Storage{DefaultStorageClass: "x"}).Start(ctx); err == nil {
		t.Error("Start against an unreachable apiserver succeeded")
	}
}

func TestCapabilitiesFollowTheGrant(t *testing.T) {
	has := func(s *Server, c csi.ControllerServiceCapability_RPC_Type) bool {
		rsp, err := s.ControllerGetCapabilities(context.Background(), &csi.ControllerGetCapabilitiesRequest{})
		if err != nil {
			t.Fatal(err)
		}
		return slices.ContainsFunc(rsp.GetCapabilities(), func(x *csi.ControllerServiceCapability) bool { return x.GetRpc().GetType() == c })
	}
	plain := unstarted(t, config.Storage{DefaultStorageClass: "x"})
	full := unstarted(t, config.Storage{DefaultStorageClass: "x", DefaultSnapshotClass: "s", MaxTotalCapacity: "1Ti"})
	for _, c := range []csi.ControllerServiceCapability_RPC_Type{
		csi.ControllerServiceCapability_RPC_CREATE_DELETE_VOLUME, csi.ControllerServiceCapability_RPC_PUBLISH_UNPUBLISH_VOLUME,
		csi.ControllerServiceCapability_RPC_EXPAND_VOLUME, csi.ControllerServiceCapability_RPC_SINGLE_NODE_MULTI_WRITER,
		csi.ControllerServiceCapability_RPC_LIST_VOLUMES_PUBLISHED_NODES, csi.ControllerServiceCapability_RPC_CLONE_VOLUME,
	} {
		if !has(plain, c) || !has(full, c) {
			t.Errorf("%s not advertised", c)
		}
	}
	for _, c := range []csi.ControllerServiceCapability_RPC_Type{
		csi.ControllerServiceCapability_RPC_GET_CAPACITY, csi.ControllerServiceCapability_RPC_CREATE_DELETE_SNAPSHOT,
		csi.ControllerServiceCapability_RPC_LIST_SNAPSHOTS, csi.ControllerServiceCapability_RPC_GET_SNAPSHOT,
	} {
		if has(plain, c) || !has(full, c) {
			t.Errorf("%s: advertised without the grant or missing with it", c)
		}
	}
	if has(full, csi.ControllerServiceCapability_RPC_PUBLISH_READONLY) || has(full, csi.ControllerServiceCapability_RPC_MODIFY_VOLUME) {
		t.Error("PUBLISH_READONLY/MODIFY_VOLUME must not be advertised")
	}
}

// TestArgumentsCheckedFirst: malformed requests are refused with INVALID_ARGUMENT (and handles
// that cannot be ours with their answer) before anything reaches the infra API, which here
// does not exist.
func TestArgumentsCheckedFirst(t *testing.T) {
	s := unstarted(t, config.Storage{DefaultStorageClass: "x", DefaultSnapshotClass: "s"})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	rwo := &csi.VolumeCapability{AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
		AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}}}
	rwxFS := &csi.VolumeCapability{AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER},
		AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}}}
	call := func(f func() (any, error)) error { _, err := f(); return err }
	tests := []struct {
		name string
		err  error
		code codes.Code
		msg  string
	}{
		{"create without name", call(func() (any, error) {
			return s.CreateVolume(ctx, &csi.CreateVolumeRequest{VolumeCapabilities: []*csi.VolumeCapability{rwo}})
		}), codes.InvalidArgument, "name is required"},
		{"create without capabilities", call(func() (any, error) { return s.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "v"}) }),
			codes.InvalidArgument, "volume_capabilities are required"},
		{"create RWX filesystem", call(func() (any, error) {
			return s.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "v", VolumeCapabilities: []*csi.VolumeCapability{rwxFS}})
		}), codes.InvalidArgument, "use access type block"},
		{"create with unknown parameter", call(func() (any, error) {
			return s.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "v", VolumeCapabilities: []*csi.VolumeCapability{rwo}, Parameters: map[string]string{"foo": "1"}})
		}), codes.InvalidArgument, `unknown parameters ["foo"]`},
		{"create with mutable parameters", call(func() (any, error) {
			return s.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: "v", VolumeCapabilities: []*csi.VolumeCapability{rwo}, MutableParameters: map[string]string{"iops": "1"}})
		}), codes.InvalidArgument, "mutable_parameters"},
		{"delete without ID", call(func() (any, error) { return s.DeleteVolume(ctx, &csi.DeleteVolumeRequest{}) }), codes.InvalidArgument, "volume_id is required"},
		{"delete a handle that cannot be ours", call(func() (any, error) { return s.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: "pvc-root"}) }), codes.OK, ""},
		{"publish without volume", call(func() (any, error) { return s.ControllerPublishVolume(ctx, &csi.ControllerPublishVolumeRequest{}) }), codes.InvalidArgument, "volume_id"},
		{"publish without node", call(func() (any, error) {
			return s.ControllerPublishVolume(ctx, &csi.ControllerPublishVolumeRequest{VolumeId: "tc-x"})
		}), codes.InvalidArgument, "node_id"},
		{"publish without capability", call(func() (any, error) {
			return s.ControllerPublishVolume(ctx, &csi.ControllerPublishVolumeRequest{VolumeId: "tc-x", NodeId: "vm"})
		}), codes.InvalidArgument, "volume_capability is required"},
		{"publish a handle that cannot be ours", call(func() (any, error) {
			return s.ControllerPublishVolume(ctx, &csi.ControllerPublishVolumeRequest{VolumeId: "worker-1-rootdisk", NodeId: "vm", VolumeCapability: rwo})
		}), codes.NotFound, "not found"},
		{"unpublish without volume", call(func() (any, error) { return s.ControllerUnpublishVolume(ctx, &csi.ControllerUnpublishVolumeRequest{}) }), codes.InvalidArgument, "volume_id"},
		{"unpublish a handle that cannot be ours", call(func() (any, error) {
			return s.ControllerUnpublishVolume(ctx, &csi.ControllerUnpublishVolumeRequest{VolumeId: "../rootdisk", NodeId: "vm"})
		}), codes.NotFound, "not found"},
		{"expand without range", call(func() (any, error) {
			return s.ControllerExpandVolume(ctx, &csi.ControllerExpandVolumeRequest{VolumeId: "tc-x"})
		}), codes.InvalidArgument, "capacity_range is required"},
		{"validate without capabilities", call(func() (any, error) {
			return s.ValidateVolumeCapabilities(ctx, &csi.ValidateVolumeCapabilitiesRequest{VolumeId: "tc-x"})
		}), codes.InvalidArgument, "volume_capabilities are required"},
		{"snapshot without name", call(func() (any, error) { return s.CreateSnapshot(ctx, &csi.CreateSnapshotRequest{SourceVolumeId: "x"}) }), codes.InvalidArgument, "name"},
		{"snapshot without source", call(func() (any, error) { return s.CreateSnapshot(ctx, &csi.CreateSnapshotRequest{Name: "x"}) }), codes.InvalidArgument, "source_volume_id"},
		{"delete snapshot that cannot be ours", call(func() (any, error) {
			return s.DeleteSnapshot(ctx, &csi.DeleteSnapshotRequest{SnapshotId: "reallyfake"})
		}), codes.OK, ""},
		{"get snapshot that cannot be ours", call(func() (any, error) { return s.GetSnapshot(ctx, &csi.GetSnapshotRequest{SnapshotId: "none-exist-id"}) }), codes.NotFound, ""},
	}
	for _, tt := range tests {
		if status.Code(tt.err) != tt.code || !strings.Contains(status.Convert(tt.err).Message(), tt.msg) {
			t.Errorf("%s: %v, want %s %q", tt.name, tt.err, tt.code, tt.msg)
		}
	}
}
