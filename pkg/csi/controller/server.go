// Package controller is the CSI Controller service of tenantcloud. It runs in the management
// cluster next to the CSI sidecars (which watch the tenant apiserver) and turns tenant volumes
// into infra objects through pkg/infra, the only way it reaches the infra API:
//
//   - a volume is a CDI DataVolume (blank, or restored from a snapshot, or cloned) in the
//     tenant namespace, named by a hash of the CSI name (VolumeID), labelled and annotated as
//     this tenant's and as csi-controller's;
//   - publishing hot-plugs it into the VM named by the node ID, with a serial derived from the
//     volume ID (csi.Serial) that the node plugin finds the disk by, through KubeVirt's
//     VM-level addvolume subresource or, in declarative mode, by adding it to the VM's spec
//     (declarative.go); unpublishing removes it again;
//   - a snapshot is a VolumeSnapshot of the DataVolume's claim.
//
// Every handle the tenant passes (volume ID, snapshot ID, node ID) is resolved through
// ownership-checked lookups: anything this tenant's csi-controller did not create is NotFound
// and nothing is changed (DESIGN.md §2). The plugin keeps no state of its own: the infra
// objects are the state, names are derived from the CO's names, so every call can be retried
// after a crash at any point and converges on the same objects. Waits (for CDI to populate a
// DataVolume, for KubeVirt to hot-plug a disk) are driven by the scoped informers' events.
package controller

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/events"
	"k8s.io/klog/v2"
	kubevirtv1 "kubevirt.io/api/core/v1"
	cdiv1 "kubevirt.io/containerized-data-importer-api/pkg/apis/core/v1beta1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcloud/tenantcloud/pkg/config"
	tccsi "github.com/tenantcloud/tenantcloud/pkg/csi"
	"github.com/tenantcloud/tenantcloud/pkg/csi/identity"
	"github.com/tenantcloud/tenantcloud/pkg/csi/inflight"
	"github.com/tenantcloud/tenantcloud/pkg/grpcerr"
	"github.com/tenantcloud/tenantcloud/pkg/infra"
	"github.com/tenantcloud/tenantcloud/pkg/reconnect"
)

// Component is the tenantcloud component name csi-controller labels its infra objects with.
const Component = string(config.CSIController)

// Annotations csi-controller writes on its infra objects.
const (
	// AnnVolumeName is the CSI volume name a DataVolume was created for; VolumeID of it must
	// equal the DataVolume's name for the DataVolume to count as a volume.
	AnnVolumeName = "tenantcloud.io/csi-volume-name"
	// AnnCapacity is the volume's capacity in bytes as reported to the CO (the guest disk
	// size); ControllerExpandVolume raises it.
	AnnCapacity = "tenantcloud.io/capacity-bytes"
	// AnnClaimRequest is the infra claim request ControllerExpandVolume last asked for (the
	// capacity plus CDI's filesystem overhead for Filesystem claims).
	AnnClaimRequest = "tenantcloud.io/claim-request-bytes"
	// AnnBus is the disk bus the volume is hot-plugged with.
	AnnBus = "tenantcloud.io/disk-bus"
	// AnnContentSource is "snapshot/<snapshot ID>" or "volume/<volume ID>" for restored or
	// cloned volumes.
	AnnContentSource = "tenantcloud.io/content-source"
	// AnnTenantClaim is the tenant's "namespace/name" of the PVC, for operators.
	AnnTenantClaim = "tenantcloud.io/tenant-claim"
	// AnnSnapshotName is the CSI snapshot name a VolumeSnapshot was created for.
	AnnSnapshotName = "tenantcloud.io/csi-snapshot-name"
	// AnnSourceVolume is the volume ID a VolumeSnapshot was taken of.
	AnnSourceVolume = "tenantcloud.io/source-volume-id"

	// CDI: bind the claim at once even for WaitForFirstConsumer classes (CreateVolume has to
	// finish before anything consumes the volume), and never garbage-collect the DataVolume
	// after it succeeded (it is the volume's identity).
	annCDIImmediateBinding      = "cdi.kubevirt.io/storage.bind.immediate.requested"
	annCDIDeleteAfterCompletion = "cdi.kubevirt.io/storage.deleteAfterCompletion"
)

// Defaults for Options.
const (
	// DefaultSnapshotReadyWait bounds how long CreateSnapshot waits for readyToUse before it
	// answers ready_to_use=false (the CO then asks again).
	DefaultSnapshotReadyWait = 30 * time.Second
	// DefaultProbeTimeout bounds Probe's infra reachability check.
	DefaultProbeTimeout = 3 * time.Second
)

// Options configure a Server.
type Options struct {
	// Scope is the tenant: infra namespace and cluster name. Required.
	Scope infra.Scope
	// Storage is what the operator granted the tenant (config.Storage, defaulted).
	Storage config.Storage
	// Infra are credentials for the management apiserver. Required.
	Infra *rest.Config
	// SnapshotReadyWait: see DefaultSnapshotReadyWait; 0 = default.
	SnapshotReadyWait time.Duration
	// ProbeTimeout: see DefaultProbeTimeout; 0 = default.
	ProbeTimeout time.Duration
}

// Server implements csi.ControllerServer (and serves Identity through Register).
type Server struct {
	csi.UnimplementedControllerServer

	opts  Options
	scope infra.Scope
	infra *infra.Client
	sub   *infra.Subresources
	// nodes reads the zone of infra Nodes; nil unless topology is configured.
	nodes    *infra.NodeTopology
	notify   *notifier
	inflight *inflight.Guard
	// vmWrites queues hot-plug requests per VM.
	vmWrites *vmWrites

	events      events.EventRecorder
	broadcaster events.EventBroadcaster

	// quotaMu makes a quota check and what it admits one step, so two concurrent
	// CreateVolume calls cannot both take the last unit of a quota. A creation is admitted as
	// a reservation (reserved) and the lock released before its API round trips: holding it
	// until the cache had the new DataVolume made 50 concurrent creates queue behind each
	// other's GET, POST and watch delivery (CreateVolume overhead p99 428 ms).
	quotaMu sync.Mutex
	// reserved are the volumes admitted by the quota whose DataVolumes the cache may not hold
	// yet (volume ID → bytes); guarded by quotaMu.
	reserved map[string]int64
	synced   atomic.Bool
}

var _ csi.ControllerServer = (*Server)(nil)

// New validates opts and builds the infra clients. Call Start before serving.
func New(opts Options) (*Server, error) {
	if opts.Infra == nil {
		return nil, errors.New("csi controller: infra credentials are required")
	}
	if err := opts.Scope.Validate(); err != nil {
		return nil, fmt.Errorf("csi controller: %w", err)
	}
	if opts.Storage.DefaultStorageClass == "" {
		return nil, errors.New("csi controller: storage.defaultStorageClass is required")
	}
	if opts.Storage.DiskBus == "" {
		opts.Storage.DiskBus = config.DiskBusSCSI
	}
	if opts.Storage.VolumeMode == "" {
		opts.Storage.VolumeMode = config.VolumeModeBlock
	}
	if opts.Storage.Hotplug == "" {
		opts.Storage.Hotplug = config.HotplugSubresource
	}
	if opts.SnapshotReadyWait <= 0 {
		opts.SnapshotReadyWait = DefaultSnapshotReadyWait
	}
	if opts.ProbeTimeout <= 0 {
		opts.ProbeTimeout = DefaultProbeTimeout
	}
	// Every infra client below shares one gate: after an outage they resume together within
	// seconds of the apiserver answering, instead of on client-go's 15–60 s reflector backoff.
	infraCfg, _, err := reconnect.Config(opts.Infra, "infra")
	if err != nil {
		return nil, fmt.Errorf("csi controller: %w", err)
	}
	opts.Infra = infraCfg
	ic, err := infra.NewWithOptions(opts.Infra, opts.Scope, infra.Options{Trim: cacheTrim})
	if err != nil {
		return nil, fmt.Errorf("csi controller: %w", err)
	}
	sub, err := infra.NewSubresources(opts.Infra, opts.Scope)
	if err != nil {
		return nil, fmt.Errorf("csi controller: %w", err)
	}
	var nodes *infra.NodeTopology
	if opts.Storage.TopologyEnabled() {
		if nodes, err = infra.NewNodeTopology(opts.Infra); err != nil {
			return nil, fmt.Errorf("csi controller: %w", err)
		}
	}
	b, rec, err := infra.NewEventBroadcaster(opts.Infra, "tenantcloud-"+Component)
	if err != nil {
		return nil, fmt.Errorf("csi controller: %w", err)
	}
	return &Server{
		opts:        opts,
		scope:       opts.Scope,
		infra:       ic,
		sub:         sub,
		nodes:       nodes,
		notify:      newNotifier(),
		inflight:    inflight.New(),
		vmWrites:    newVMWrites(),
		reserved:    map[string]int64{},
		broadcaster: b,
		events:      rec,
	}, nil
}

// watched are the infra types whose informers feed the notifier.
func (s *Server) watched() map[string]client.Object {
	w := map[string]client.Object{
		kindDataVolume: &cdiv1.DataVolume{},
		kindClaim:      &corev1.PersistentVolumeClaim{},
		kindVM:         &kubevirtv1.VirtualMachine{},
		kindVMI:        &kubevirtv1.VirtualMachineInstance{},
	}
	if snapshotsConfigured(s.opts.Storage) {
		w[kindSnapshot] = infra.NewVolumeSnapshot()
	}
	return w
}

// Start runs the scoped infra cache (until ctx ends) and returns once it has synced, so the
// first call is answered from a complete view. It also starts emitting Events.
func (s *Server) Start(ctx context.Context) error {
	s.notify.stopped = ctx.Done()
	for kind, obj := range s.watched() {
		if err := s.infra.Watch(ctx, obj, s.notify.handler(kind)); err != nil {
			return fmt.Errorf("csi controller: %s: %w", kind, err)
		}
	}
	cacheDone := make(chan error, 1)
	go func() { cacheDone <- s.infra.Start(ctx) }()
	if !s.infra.WaitForCacheSync(ctx) {
		select {
		case err := <-cacheDone:
			return fmt.Errorf("csi controller: infra cache: %w", err)
		default:
			return fmt.Errorf("csi controller: infra cache did not sync: %w", context.Cause(ctx))
		}
	}
	s.synced.Store(true)
	go s.ownDataVolumes(ctx)
	// Its own context, ended after Shutdown has drained the queue, so pending Events are
	// still written when ctx ends.
	recCtx, recCancel := context.WithCancel(context.WithoutCancel(ctx))
	if err := s.broadcaster.StartRecordingToSinkWithContext(recCtx); err != nil {
		recCancel()
		return fmt.Errorf("csi controller: events: %w", err)
	}
	go func() {
		<-ctx.Done()
		s.synced.Store(false)
		s.broadcaster.Shutdown()
		recCancel()
	}()
	klog.FromContext(ctx).Info("CSI controller ready", "namespace", s.scope.Namespace, "cluster", s.scope.ClusterName)
	return nil
}

// Ready answers Probe: the informers must have synced and the infra apiserver must answer.
func (s *Server) Ready(ctx context.Context) error {
	if !s.synced.Load() {
		return errors.New("infra cache not synced")
	}
	ctx, cancel := context.WithTimeout(ctx, s.opts.ProbeTimeout)
	defer cancel()
	return s.sub.Reachable(ctx)
}

// PluginCapabilities is what the controller's Identity advertises: a controller service,
// online expansion and, when the config has a volume topology, accessibility constraints.
// Without one no volume is confined to a zone (LINSTOR volumes are reachable from every infra
// node through DRBD), so topology is not advertised and the CO sends no requirements.
func PluginCapabilities(topology bool) []*csi.PluginCapability {
	caps := []*csi.PluginCapability{
		identity.Service(csi.PluginCapability_Service_CONTROLLER_SERVICE),
		identity.Expansion(csi.PluginCapability_VolumeExpansion_ONLINE),
	}
	if topology {
		caps = append(caps, identity.Service(csi.PluginCapability_Service_VOLUME_ACCESSIBILITY_CONSTRAINTS))
	}
	return caps
}

// Register adds the Identity and Controller services to r.
func (s *Server) Register(r grpc.ServiceRegistrar) {
	s.register(r, tccsi.DriverName)
}

// apiError turns an infra API error into a gRPC status (grpcerr.Code) whose message says what
// was being done.
func apiError(err error, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	if _, ok := status.FromError(err); ok && !isAPIStatus(err) {
		return err // already a gRPC status
	}
	code := grpcerr.Code(err)
	if code == codes.PermissionDenied {
		msg += " (check csi-controller's infra RBAC)"
	}
	return status.Errorf(code, "%s: %v", msg, err)
}

func isAPIStatus(err error) bool {
	var s apierrors.APIStatus
	return errors.As(err, &s)
}

// waitError reports a wait that ended with ctx: DEADLINE_EXCEEDED (the CO retries; the
// operation carries on in the infra cluster) with what was last seen.
func waitError(err error, what, last string) error {
	code := codes.Internal
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	default:
		if _, ok := status.FromError(err); ok && !isAPIStatus(err) {
			return err
		}
	}
	if last != "" {
		return status.Errorf(code, "%s: %v (last seen: %s)", what, err, last)
	}
	return status.Errorf(code, "%s: %v", what, err)
}
