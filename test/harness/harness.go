package harness

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/tenantcloud/tenantcloud/pkg/infra"
)

// Cluster is one running control plane.
type Cluster struct {
	Name string
	// Config authenticates as a member of system:masters.
	Config *rest.Config
	// Kubeconfig is the path of a kubeconfig file equivalent to Config, for components that
	// load their credentials from a file as they do in production.
	Kubeconfig string
	// Client is an admin client whose scheme knows every infra type and CRDs.
	Client client.Client
	// CRDs are the CustomResourceDefinitions installed at start.
	CRDs []*apiextensionsv1.CustomResourceDefinition

	env *envtest.Environment
	dir string
	// certDir is the apiserver's certificate directory once StopAPIServer ran (envtest stops
	// cleaning it up after a restart); apiServerDown is true between Stop and StartAPIServer.
	certDir       string
	apiServerDown bool
	// advertise is the address the apiserver advertises as the kubernetes Service's endpoint
	// (nil: the apiserver's own choice).
	advertise net.IP
}

// Env is the pair of clusters plus what tests need to add to them.
type Env struct {
	Management *Cluster
	Tenant     *Cluster
	Assets     Assets
	// Dir holds kubeconfigs, certificates and control-plane logs; removed by Stop.
	Dir string
	// FrontProxyCAFile is the CA that signs the management apiserver's front-proxy client
	// certificate, for aggregated API servers that must trust proxied requests.
	FrontProxyCAFile string
	// KeepDir leaves Dir (logs, kubeconfigs) in place after Stop, for failed runs.
	KeepDir bool

	schedulers  map[string]*Process
	controllers map[string]*Process
}

// tenantCRDGroups are the API groups whose CRDs a tenant cluster has: the snapshot CRDs the
// CSI snapshotter sidecar needs. Everything else belongs to the management cluster.
var tenantCRDGroups = map[string]bool{"snapshot.storage.k8s.io": true, "groupsnapshot.storage.k8s.io": true}

// Options change how Start brings the clusters up; the zero value is what most suites run.
type Options struct {
	// TenantServiceAccounts runs the tenant apiserver with the ServiceAccount admission plugin,
	// as a cluster's apiserver runs: every pod gets its kube-api-access volume (token, CA,
	// namespace) and its ServiceAccount must exist, so run the kube-controller-manager's
	// serviceaccount and root-ca-cert-publisher controllers. envtest turns the plugin off
	// because it runs no controllers; suites with real nodes (test/harness/node) turn it on.
	TenantServiceAccounts bool
	// ManagementDualStack and TenantDualStack give that cluster's apiserver a dual-stack
	// service CIDR (ServiceCIDRs: envtest's IPv4 range first, so ServiceIP is unchanged, then
	// ServiceCIDRv6): RequireDualStack and PreferDualStack Services get a cluster IP of each
	// family there, as on a dual-stack cluster. Off, the cluster is single-stack IPv4 and
	// refuses RequireDualStack, as such a cluster does.
	ManagementDualStack, TenantDualStack bool
	// ManagementServiceAccounts is TenantServiceAccounts for the management apiserver, for
	// suites that run pods on a real management node (the charts' management side).
	ManagementServiceAccounts bool
}

// ServiceCIDRv4 is envtest's --service-cluster-ip-range; ServiceCIDRv6 is the second family's
// range of a dual-stack harness cluster (a /112: the apiserver's IPv6 allocator takes at most
// 20 host bits).
const (
	ServiceCIDRv4 = "10.0.0.0/24"
	ServiceCIDRv6 = "fd00:10:96::/112"
)

// Start brings up the management and tenant control planes in parallel and installs CRDs.
// On error nothing is left running.
func Start(ctx context.Context) (*Env, error) { return StartWith(ctx, Options{}) }

// StartWith is Start with opts.
func StartWith(ctx context.Context, opts Options) (*Env, error) {
	assets, err := FindAssets()
	if err != nil {
		return nil, err
	}
	if n := reapOrphans(assets.BinDir); n > 0 {
		klog.InfoS("Killed control-plane processes left by a previous test binary", "count", n)
	}
	dir, err := os.MkdirTemp("", "tenantcloud-harness-")
	if err != nil {
		return nil, fmt.Errorf("creating harness directory: %w", err)
	}
	fp, err := writeFrontProxyCerts(dir)
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	policy, err := writeAuditPolicy(dir)
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	crdOpts := envtest.CRDInstallOptions{Paths: []string{assets.CRDDir}, ErrorIfPathMissing: true}
	if err := envtest.ReadCRDFiles(&crdOpts); err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("reading CRDs from %s: %w", assets.CRDDir, err)
	}
	var tenantCRDs []*apiextensionsv1.CustomResourceDefinition
	for _, crd := range crdOpts.CRDs {
		if tenantCRDGroups[crd.Spec.Group] {
			tenantCRDs = append(tenantCRDs, crd)
		}
	}

	e := &Env{Assets: assets, Dir: dir, FrontProxyCAFile: fp.CAFile}
	e.Management = newCluster("management", assets, dir, fp, policy, crdOpts.CRDs)
	e.Tenant = newCluster("tenant", assets, dir, fp, policy, tenantCRDs)
	for c, on := range map[*Cluster]bool{e.Management: opts.ManagementServiceAccounts, e.Tenant: opts.TenantServiceAccounts} {
		if on {
			// Only envtest's default turns the plugin off; the apiserver's own defaults enable it.
			c.env.ControlPlane.GetAPIServer().Configure().Disable("disable-admission-plugins")
		}
	}
	for c, dual := range map[*Cluster]bool{e.Management: opts.ManagementDualStack, e.Tenant: opts.TenantDualStack} {
		if dual {
			c.env.ControlPlane.GetAPIServer().Configure().Set("service-cluster-ip-range", ServiceCIDRv4+","+ServiceCIDRv6)
		}
	}
	advertise := advertiseAddress()
	for _, c := range []*Cluster{e.Management, e.Tenant} {
		api := c.env.ControlPlane.GetAPIServer()
		api.CertDir = filepath.Join(dir, c.Name+"-pki")
		if advertise != nil {
			api.Configure().Set("advertise-address", advertise.String())
			c.advertise = advertise
		}
		if api.SecureServing.CA, err = writeAPIServerCerts(api.CertDir, advertise); err != nil {
			_ = os.RemoveAll(dir)
			return nil, err
		}
	}

	start := time.Now()
	errs := make(chan error, 2)
	for _, c := range []*Cluster{e.Management, e.Tenant} {
		go func() { errs <- c.start(ctx) }()
	}
	err = errors.Join(<-errs, <-errs)
	// Record before checking err so a half-started pair is still reaped if Stop never runs.
	if rerr := recordChildren(assets.BinDir); rerr != nil {
		klog.ErrorS(rerr, "Cannot record control-plane processes; a killed test may leave them running")
	}
	if err != nil {
		_ = e.Stop()
		return nil, err
	}
	klog.InfoS("Harness control planes running", "management", e.Management.Config.Host,
		"tenant", e.Tenant.Config.Host, "crds", len(crdOpts.CRDs), "startup", time.Since(start).Round(time.Millisecond))
	return e, nil
}

func newCluster(name string, assets Assets, dir string, fp frontProxy, auditPolicy string, crds []*apiextensionsv1.CustomResourceDefinition) *Cluster {
	env := &envtest.Environment{
		CRDs:                     crds,
		BinaryAssetsDirectory:    assets.BinDir,
		ControlPlaneStartTimeout: 2 * time.Minute,
		ControlPlaneStopTimeout:  time.Minute,
	}
	// Explicit paths: envtest would otherwise prefer KUBEBUILDER_ASSETS from the environment.
	env.ControlPlane.Etcd = &envtest.Etcd{Path: filepath.Join(assets.BinDir, "etcd")}
	api := env.ControlPlane.GetAPIServer()
	api.Path = filepath.Join(assets.BinDir, "kube-apiserver")
	args := api.Configure()
	args.Set("requestheader-client-ca-file", fp.CAFile)
	args.Set("requestheader-allowed-names", FrontProxyClientName)
	args.Set("requestheader-username-headers", "X-Remote-User")
	args.Set("requestheader-group-headers", "X-Remote-Group")
	args.Set("requestheader-extra-headers-prefix", "X-Remote-Extra-")
	args.Set("proxy-client-cert-file", fp.CertFile)
	args.Set("proxy-client-key-file", fp.KeyFile)
	c := &Cluster{Name: name, CRDs: crds, env: env, dir: dir}
	args.Set("audit-policy-file", auditPolicy)
	args.Set("audit-log-path", c.AuditLog())
	args.Set("audit-log-format", "json")
	args.Set("audit-log-mode", "blocking") // an event is on disk when its request returns
	return c
}

func (c *Cluster) start(ctx context.Context) error {
	logPath := filepath.Join(c.dir, c.Name+"-apiserver.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return fmt.Errorf("%s: creating log: %w", c.Name, err)
	}
	api := c.env.ControlPlane.GetAPIServer()
	api.Out, api.Err = logFile, logFile
	c.env.ControlPlane.Etcd.Out, c.env.ControlPlane.Etcd.Err = logFile, logFile

	cfg, err := c.env.Start()
	if err != nil {
		return fmt.Errorf("starting %s control plane (log: %s): %w", c.Name, logPath, err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	c.Config = cfg
	c.Kubeconfig = filepath.Join(c.dir, c.Name+".kubeconfig")
	if err := os.WriteFile(c.Kubeconfig, c.env.KubeConfig, 0o600); err != nil {
		return fmt.Errorf("%s: writing kubeconfig: %w", c.Name, err)
	}
	scheme, err := Scheme()
	if err != nil {
		return err
	}
	if c.Client, err = client.New(cfg, client.Options{Scheme: scheme}); err != nil {
		return fmt.Errorf("%s: building client: %w", c.Name, err)
	}
	return nil
}

// Scheme knows the infra types plus CRDs, for test clients.
func Scheme() (*runtime.Scheme, error) {
	s, err := infra.NewScheme()
	if err != nil {
		return nil, err
	}
	if err := apiextensionsv1.AddToScheme(s); err != nil {
		return nil, fmt.Errorf("adding apiextensions to scheme: %w", err)
	}
	return s, nil
}

// User is a non-admin identity on a cluster.
type User struct {
	Config     *rest.Config
	Kubeconfig string
}

// AddUser creates a client-certificate identity name in groups, with no rights beyond what
// RBAC grants those names, for least-privilege tests.
func (c *Cluster) AddUser(name string, groups ...string) (*User, error) {
	u, err := c.env.AddUser(envtest.User{Name: name, Groups: groups}, nil)
	if err != nil {
		return nil, fmt.Errorf("%s: adding user %s: %w", c.Name, name, err)
	}
	kc, err := u.KubeConfig()
	if err != nil {
		return nil, fmt.Errorf("%s: kubeconfig for %s: %w", c.Name, name, err)
	}
	path := filepath.Join(c.dir, c.Name+"-"+strings.ReplaceAll(name, ":", "_")+".kubeconfig")
	if err := os.WriteFile(path, kc, 0o600); err != nil {
		return nil, fmt.Errorf("%s: writing kubeconfig for %s: %w", c.Name, name, err)
	}
	return &User{Config: u.Config(), Kubeconfig: path}, nil
}

// LogFile is where the cluster's kube-apiserver and etcd write.
func (c *Cluster) LogFile() string { return filepath.Join(c.dir, c.Name+"-apiserver.log") }

// Stop stops everything Start, StartSchedulerFor and StartControllerManager started and removes Dir.
func (e *Env) Stop() error {
	var errs []error
	for _, p := range e.schedulers {
		errs = append(errs, p.Stop())
	}
	for _, p := range e.controllers {
		errs = append(errs, p.Stop())
	}
	for _, c := range []*Cluster{e.Management, e.Tenant} {
		if c != nil && c.env != nil {
			if err := c.env.Stop(); err != nil {
				errs = append(errs, fmt.Errorf("stopping %s: %w", c.Name, err))
			}
			errs = append(errs, c.removeRestartDirs())
		}
	}
	err := errors.Join(errs...)
	if err == nil {
		forgetChildren(e.Assets.BinDir)
		if !e.KeepDir {
			_ = os.RemoveAll(e.Dir)
		}
	}
	return err
}
