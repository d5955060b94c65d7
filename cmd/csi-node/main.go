// Command csi-node is the node half of the tenantcloud CSI driver. It runs as a DaemonSet
// inside the tenant cluster, finds hot-plugged disks by serial and mounts them; it holds no
// management-cluster credentials.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/spf13/pflag"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"

	"github.com/tenantcloud/tenantcloud/pkg/cli"
	"github.com/tenantcloud/tenantcloud/pkg/config"
	tccsi "github.com/tenantcloud/tenantcloud/pkg/csi"
	"github.com/tenantcloud/tenantcloud/pkg/csi/identity"
	"github.com/tenantcloud/tenantcloud/pkg/csi/node"
	"github.com/tenantcloud/tenantcloud/pkg/csi/registration"
	"github.com/tenantcloud/tenantcloud/pkg/kubeconfig"
	"github.com/tenantcloud/tenantcloud/pkg/metrics/grpcmetrics"
	"github.com/tenantcloud/tenantcloud/pkg/version"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// nodeNameEnv is where the DaemonSet puts spec.nodeName through the downward API.
const nodeNameEnv = "NODE_NAME"

// options are the flags only this program has.
type options struct {
	endpoint          string
	nodeID            string
	nodeName          string
	deviceDir         string
	kubeletDir        string
	maxVolumesPerNode int
	deviceWaitTimeout time.Duration
	resolveTimeout    time.Duration
	// requireZone: volume topology is on, so the node must report its zone (see
	// node.ResolveIdentity).
	requireZone bool
	// registrationDir and kubeletRegistrationPath: built-in plugin registration (see
	// pkg/csi/registration), off when registrationDir is empty.
	registrationDir         string
	kubeletRegistrationPath string
	// driverName is the name served; csi.kubevirt.io for a second instance that serves the PVs
	// adopted from the upstream KubeVirt CSI driver (docs/migration.md).
	driverName string
}

func run(args []string, stdout, stderr io.Writer) int {
	var o options
	return cli.Program{
		Component: config.CSINode,
		Description: "CSI node plugin inside a tenant cluster: stages and publishes volumes that " +
			"the csi-controller hot-plugged into this node's VM",
		AddFlags: func(fs *pflag.FlagSet) {
			fs.StringVar(&o.endpoint, "endpoint", "unix:///csi/csi.sock", "CSI gRPC endpoint to serve")
			fs.StringVar(&o.nodeID, "node-id", "", "CSI node ID, i.e. this node's VM name; empty = read it from the providerID (kubevirt://<vm>) of the tenant Node named by --node-name")
			fs.StringVar(&o.nodeName, "node-name", "", "name of this tenant Node, usually the downward-API spec.nodeName; empty = $"+nodeNameEnv)
			fs.StringVar(&o.deviceDir, "device-dir", node.DefaultDeviceDir, "directory scanned for hot-plugged disks by serial")
			fs.StringVar(&o.kubeletDir, "kubelet-dir", node.DefaultKubeletDir, "kubelet root directory; every staging and target path must be inside it")
			fs.IntVar(&o.maxVolumesPerNode, "max-volumes-per-node", node.DefaultMaxVolumesPerNode, "volumes this node reports it can attach")
			fs.DurationVar(&o.deviceWaitTimeout, "device-wait-timeout", node.DefaultDeviceWaitTimeout, "how long to wait for a hot-plugged disk to appear in --device-dir")
			fs.DurationVar(&o.resolveTimeout, "node-resolve-timeout", 2*time.Minute, "how long to wait for the tenant Node's providerID (and, with --require-zone, its zone label) at startup")
			fs.BoolVar(&o.requireZone, "require-zone", false, "volume topology is on: wait for the tenant Node's "+node.TopologyZoneKey+" label (the ccm sets it when it initialises the Node) and fail if it does not come within --node-resolve-timeout, rather than register without a zone")
			fs.StringVar(&o.driverName, "driver-name", tccsi.DriverName, "CSI driver name to serve: "+tccsi.DriverName+", or "+tccsi.LegacyDriverName+" for a second instance (its own --endpoint and registration) that serves the PVs adopted from the upstream KubeVirt CSI driver (docs/migration.md)")
			fs.StringVar(&o.registrationDir, "plugin-registration-dir", "", "register the driver with the kubelet itself by serving its plugin-registration API in this directory (the kubelet's plugins_registry, as mounted here); empty = leave registration to a node-driver-registrar sidecar")
			fs.StringVar(&o.kubeletRegistrationPath, "kubelet-registration-path", "", "path of the CSI socket as the kubelet sees it on the node, for --plugin-registration-dir; empty = the --endpoint's path")
		},
		CheckFlags: func() error {
			switch {
			case o.endpoint == "":
				return errors.New("--endpoint must not be empty")
			case o.deviceDir == "":
				return errors.New("--device-dir must not be empty")
			case o.kubeletDir == "":
				return errors.New("--kubelet-dir must not be empty")
			case o.maxVolumesPerNode < 1:
				return fmt.Errorf("--max-volumes-per-node must be at least 1, got %d", o.maxVolumesPerNode)
			case o.deviceWaitTimeout <= 0:
				return fmt.Errorf("--device-wait-timeout must be positive, got %s", o.deviceWaitTimeout)
			case o.driverName != tccsi.DriverName && o.driverName != tccsi.LegacyDriverName:
				return fmt.Errorf("--driver-name must be %s or %s, got %q", tccsi.DriverName, tccsi.LegacyDriverName, o.driverName)
			}
			path, err := unixSocketPath(o.endpoint)
			if err != nil {
				return err
			}
			if o.kubeletRegistrationPath == "" {
				o.kubeletRegistrationPath = path
			}
			if !filepath.IsAbs(o.kubeletRegistrationPath) {
				return fmt.Errorf("--kubelet-registration-path must be absolute, got %q", o.kubeletRegistrationPath)
			}
			return nil
		},
		Serve: o.serve,
	}.Run(args, stdout, stderr)
}

// serve learns who this node is, then serves Identity and Node on the endpoint until ctx ends.
func (o *options) serve(ctx context.Context, cfg *config.Config, opts cli.Options) error {
	id, err := o.identity(ctx, cfg)
	if err != nil {
		return err
	}
	ns, err := node.New(node.Options{
		NodeID:            id.NodeID,
		Topology:          id.Topology,
		MaxVolumesPerNode: int64(o.maxVolumesPerNode),
		DeviceDir:         o.deviceDir,
		KubeletDir:        o.kubeletDir,
		DeviceWaitTimeout: o.deviceWaitTimeout,
	})
	if err != nil {
		return err
	}
	ids := identity.New(identity.Options{
		Name:         o.driverName,
		Capabilities: identity.NodeCapabilities(len(id.Topology) > 0),
		Ready:        ns.Ready,
	})
	klog.InfoS("Starting CSI node plugin", "driver", o.driverName, "nodeID", id.NodeID, "topology", id.Topology,
		"deviceDir", o.deviceDir, "kubeletDir", o.kubeletDir, "pluginRegistrationDir", o.registrationDir)
	serve := func(ctx context.Context) error {
		return serveCSI(ctx, o.endpoint, func(s grpc.ServiceRegistrar) {
			csi.RegisterIdentityServer(s, ids)
			csi.RegisterNodeServer(s, ns)
		}, grpcmetrics.ServerOption(opts.Metrics))
	}
	if o.registrationDir == "" {
		return serve(ctx)
	}
	return o.serveWithRegistration(ctx, serve)
}

// serveWithRegistration serves CSI and, once the CSI socket answers, the kubelet's plugin
// registration, as node-driver-registrar would beside it: it first asks the driver's own
// endpoint for its name, so the kubelet is only told about a socket that serves. Either one
// ending ends both.
func (o *options) serveWithRegistration(ctx context.Context, serve func(context.Context) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- serve(ctx) }()
	name, err := driverName(ctx, o.endpoint)
	if err != nil {
		cancel()
		return errors.Join(err, <-served)
	}
	registered := make(chan error, 1)
	go func() { registered <- registration.New(name, o.kubeletRegistrationPath).Run(ctx, o.registrationDir) }()
	select {
	case err := <-served:
		cancel()
		return errors.Join(err, <-registered)
	case err := <-registered:
		cancel()
		return errors.Join(err, <-served)
	}
}

// driverName waits for the CSI endpoint to serve and returns the driver name it reports.
func driverName(ctx context.Context, endpoint string) (string, error) {
	conn, err := grpc.NewClient(endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return "", fmt.Errorf("connecting to own endpoint %s: %w", endpoint, err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	info, err := csi.NewIdentityClient(conn).GetPluginInfo(ctx, &csi.GetPluginInfoRequest{}, grpc.WaitForReady(true))
	if err != nil {
		return "", fmt.Errorf("asking own endpoint %s for the driver name: %w", endpoint, err)
	}
	return info.GetName(), nil
}

// identity is --node-id if given; otherwise it is read from the tenant Node, through the
// tenant API only (the config's tenantKubeconfig, or in-cluster credentials).
func (o *options) identity(ctx context.Context, cfg *config.Config) (node.Identity, error) {
	if o.nodeID != "" && !o.requireZone {
		return node.Identity{NodeID: o.nodeID}, nil
	}
	nodeName := o.nodeName
	if nodeName == "" {
		nodeName = os.Getenv(nodeNameEnv)
	}
	if nodeName == "" {
		if o.requireZone {
			return node.Identity{}, fmt.Errorf("--require-zone reads the zone from the tenant Node: set --node-name (or $%s)", nodeNameEnv)
		}
		return node.Identity{}, fmt.Errorf("cannot tell which VM this is: set --node-id, or --node-name (or $%s) to read it from the tenant Node's providerID", nodeNameEnv)
	}
	restCfg, err := tenantRESTConfig(cfg.TenantKubeconfig)
	if err != nil {
		return node.Identity{}, err
	}
	nodes, err := newNodeGetter(restCfg)
	if err != nil {
		return node.Identity{}, err
	}
	id, err := node.ResolveIdentity(ctx, nodes, nodeName, o.resolveTimeout, o.requireZone)
	if err != nil {
		return node.Identity{}, fmt.Errorf("resolving the node ID: %w", err)
	}
	if o.nodeID != "" {
		id.NodeID = o.nodeID
	}
	return id, nil
}

// nodeGetter reads tenant Nodes through a REST client that knows core/v1 only. The generated
// clientset (k8s.io/client-go/kubernetes and its typed clients) registers every built-in API
// group into its scheme at start-up: linking it cost csi-node ≈8 MB of resident memory on every
// tenant node (BenchmarkIdleRSS), for one GET of one Node.
type nodeGetter struct{ rc rest.Interface }

func newNodeGetter(cfg *rest.Config) (nodeGetter, error) {
	scheme := runtime.NewScheme()
	if err := corev1.AddToScheme(scheme); err != nil {
		return nodeGetter{}, fmt.Errorf("tenant API scheme: %w", err)
	}
	c := rest.CopyConfig(cfg)
	c.APIPath, c.GroupVersion = "/api", &corev1.SchemeGroupVersion
	c.NegotiatedSerializer = serializer.NewCodecFactory(scheme).WithoutConversion()
	rc, err := rest.RESTClientFor(c)
	if err != nil {
		return nodeGetter{}, fmt.Errorf("tenant API client: %w", err)
	}
	return nodeGetter{rc: rc}, nil
}

func (g nodeGetter) Get(ctx context.Context, name string, _ metav1.GetOptions) (*corev1.Node, error) {
	n := &corev1.Node{}
	if err := g.rc.Get().Resource("nodes").Name(name).Do(ctx).Into(n); err != nil {
		return nil, err
	}
	return n, nil
}

func tenantRESTConfig(path string) (*rest.Config, error) {
	cfg, err := kubeconfig.RESTConfig(path)
	if err != nil {
		return nil, fmt.Errorf("tenant API credentials: %w", err)
	}
	cfg.UserAgent = version.String("csi-node")
	return cfg, nil
}
