package install

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/tenantcloud/tenantcloud/test/harness"
	"github.com/tenantcloud/tenantcloud/test/sim"
)

const (
	// DefaultRelease is the release name of both charts, as the README installs them.
	DefaultRelease = "tc"
	// TenantNamespace is where the tenant chart goes and the management components keep their
	// leader-election Leases (the management chart's tenantLeaseNamespace default).
	TenantNamespace = "kube-system"
	// ManagedBy labels every object Install creates besides the charts' own.
	ManagedBy = "tenantcloud-harness-install"
)

// ManagementControllers are the kube-controller-manager controllers the management cluster
// must run for the chart to become pods: ServiceAccounts and their CA ConfigMap in every
// namespace, the not-ready taint lifted from the management node, Deployments → ReplicaSets →
// Pods, the EndpointSlices kube-proxy serves the autoscaler-provider Service from, and the
// garbage and namespace collectors Uninstall relies on.
var ManagementControllers = []string{
	"serviceaccount", "root-ca-cert-publisher", "nodelifecycle", "deployment", "replicaset",
	"endpointslice", "garbagecollector", "namespace",
}

// Options say what to install where.
type Options struct {
	// ClusterName is the tenant's Cluster API cluster name (the charts' clusterName). Required.
	ClusterName string
	// Namespace is the tenant's infra namespace in the management cluster; default ClusterName.
	// Install creates it if missing.
	Namespace string
	// Release names both releases; default DefaultRelease.
	Release string
	// Images are the pushed images (PushImages). Required.
	Images *Images
	// ManagementNode is the real management node the management pods must run on (a
	// nodeSelector: pods on different nodes cannot reach each other here, and the
	// simulator's infra Nodes are schedulable too). Required.
	ManagementNode string
	// Dir holds the generated values files; default <env.Dir>/install-<ClusterName>.
	Dir string
	// ManagementValues and TenantValues are given to helm after the example values files
	// and the installation's own (one more -f each): test-specific tuning, e.g.
	// cluster-autoscaler's loop intervals.
	ManagementValues, TenantValues map[string]any
	// PoolAddresses are the addresses of each IPAddressPool the grant names (pool name →
	// CIDR or range); pools not listed get a /28 of 198.51.100.0/24 (TEST-NET-2), one each.
	PoolAddresses map[string]string
	// Timeout bounds the wait for every pod to be Ready; default 5 minutes.
	Timeout time.Duration
}

// Release is both charts installed for one tenant.
type Release struct {
	Name, Namespace, ClusterName string
	// ManagementPods and TenantPods are the releases' pods as they were when all were Ready.
	ManagementPods, TenantPods []corev1.Pod
	// Started is when Install began (CheckAudit from it covers the pods' first requests).
	Started time.Time
	// Took is how long Install took; Ready is the part from the first helm install to every
	// pod Ready.
	Took, Ready time.Duration
	// Values are the values files given to helm, management chart then tenant chart.
	ManagementValuesFiles, TenantValuesFiles []string

	env     *harness.Env
	opts    Options
	created []createdObject
	// tenantUser is who the tenant kubeconfig authenticates as (CheckAudit).
	tenantUser string
}

type createdObject struct {
	cluster *harness.Cluster
	obj     client.Object
}

// ExampleValues are the operator's values files in the repository, relative to its root.
var ExampleValues = struct{ Management, Tenant string }{
	Management: "deploy/examples/management-values.yaml",
	Tenant:     "deploy/examples/tenant-values.yaml",
}

// Install installs both charts (see the package comment) and returns once every pod of both
// releases is Running, Ready and runs the digest bin/images lists. On error what it made is
// left for diagnosis; call Uninstall on the returned Release (nil only before anything was
// made) to remove it.
func Install(ctx context.Context, env *harness.Env, s *sim.Sim, opts Options) (*Release, error) {
	start := time.Now()
	if opts.ClusterName == "" || opts.Images == nil || opts.ManagementNode == "" {
		return nil, errors.New("install: ClusterName, Images and ManagementNode are required")
	}
	if opts.Namespace == "" {
		opts.Namespace = opts.ClusterName
	}
	if opts.Release == "" {
		opts.Release = DefaultRelease
	}
	if opts.Dir == "" {
		opts.Dir = filepath.Join(env.Dir, "install-"+opts.ClusterName)
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 5 * time.Minute
	}
	if err := os.MkdirAll(opts.Dir, 0o755); err != nil {
		return nil, err
	}
	root := filepath.Dir(env.Assets.BinDir)
	r := &Release{Name: opts.Release, Namespace: opts.Namespace, ClusterName: opts.ClusterName, Started: start, env: env, opts: opts}
	grant, err := readGrant(filepath.Join(root, ExampleValues.Management), opts.ManagementValues)
	if err != nil {
		return nil, err
	}
	if err := r.prerequisites(ctx, s, grant); err != nil {
		return r, err
	}
	if err := r.credentials(ctx); err != nil {
		return r, err
	}
	if r.ManagementValuesFiles, r.TenantValuesFiles, err = r.valuesFiles(root); err != nil {
		return r, err
	}
	helmStart := time.Now()
	helm := filepath.Join(env.Assets.BinDir, "helm")
	if err := helmInstall(ctx, helm, env.Management, opts.Release, filepath.Join(root, "deploy", "charts", "tenantcloud"),
		opts.Namespace, r.ManagementValuesFiles); err != nil {
		return r, err
	}
	if err := helmInstall(ctx, helm, env.Tenant, opts.Release, filepath.Join(root, "deploy", "charts", "tenantcloud-tenant"),
		TenantNamespace, r.TenantValuesFiles); err != nil {
		return r, err
	}
	if err := r.waitReady(ctx); err != nil {
		return r, err
	}
	r.Ready = time.Since(helmStart)
	r.Took = time.Since(start)
	klog.InfoS("Charts installed as pods", "cluster", opts.ClusterName, "namespace", opts.Namespace,
		"managementPods", len(r.ManagementPods), "tenantPods", len(r.TenantPods),
		"ready", r.Ready.Round(time.Millisecond), "took", r.Took.Round(time.Millisecond))
	return r, nil
}

// helmInstall runs helm install of chart as release into ns of c, with the values files in
// order.
func helmInstall(ctx context.Context, helm string, c *harness.Cluster, release, chart, ns string, values []string) error {
	args := []string{"install", release, chart, "--namespace", ns, "--kubeconfig", c.Kubeconfig}
	for _, v := range values {
		args = append(args, "--values", v)
	}
	out, err := exec.CommandContext(ctx, helm, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("helm %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

// valuesFiles writes the installation's own values (cluster, images, management node, and
// the two images this repository cannot build turned off) and returns each chart's files in
// the order helm gets them.
func (r *Release) valuesFiles(root string) (mgmt, tenant []string, err error) {
	refs := r.opts.Images.Refs
	img := func(name string) map[string]any {
		repo, tag := repoTag(refs[name])
		return map[string]any{"repository": repo, "tag": tag}
	}
	for _, name := range []string{"ccm", "csi-controller", "autoscaler-provider", "cluster-autoscaler",
		"csi-provisioner", "csi-attacher", "csi-resizer", "csi-snapshotter", "csi-node"} {
		if refs[name] == "" {
			return nil, nil, fmt.Errorf("bin/images has no %s image: run make images", name)
		}
	}
	own := map[string]any{
		"clusterName": r.ClusterName,
		"images": map[string]any{
			"ccm": img("ccm"), "csiController": img("csi-controller"), "autoscalerProvider": img("autoscaler-provider"),
			"clusterAutoscaler": img("cluster-autoscaler"), "csiProvisioner": img("csi-provisioner"),
			"csiAttacher": img("csi-attacher"), "csiResizer": img("csi-resizer"), "csiSnapshotter": img("csi-snapshotter"),
		},
		"nodeSelector": map[string]any{corev1.LabelHostname: r.opts.ManagementNode},
		// The upstream livenessprobe image is not built here (deploy/README.md).
		"csiController": map[string]any{"livenessProbe": false},
	}
	tenantOwn := map[string]any{
		"clusterName": r.ClusterName, "infraNamespace": r.Namespace,
		"images": map[string]any{"csiNode": img("csi-node")},
		// Neither node-driver-registrar nor livenessprobe is built here: csi-node registers
		// itself with the kubelet.
		"csiNode": map[string]any{"registration": "builtin", "livenessProbe": false},
	}
	mgmt = []string{filepath.Join(root, ExampleValues.Management)}
	tenant = []string{filepath.Join(root, ExampleValues.Tenant)}
	for _, f := range []struct {
		name   string
		values map[string]any
		into   *[]string
	}{
		{"management-install.yaml", own, &mgmt}, {"tenant-install.yaml", tenantOwn, &tenant},
		{"management-extra.yaml", r.opts.ManagementValues, &mgmt}, {"tenant-extra.yaml", r.opts.TenantValues, &tenant},
	} {
		if len(f.values) == 0 {
			continue
		}
		b, err := yaml.Marshal(f.values)
		if err != nil {
			return nil, nil, err
		}
		path := filepath.Join(r.opts.Dir, f.name)
		if err := os.WriteFile(path, b, 0o600); err != nil {
			return nil, nil, err
		}
		*f.into = append(*f.into, path)
	}
	return mgmt, tenant, nil
}

// credentials creates the Secrets the management chart mounts but does not make: the tenant
// kubeconfig (as Cluster API names it) and the autoscaler mTLS pair.
func (r *Release) credentials(ctx context.Context) error {
	r.tenantUser = "tenantcloud:" + r.ClusterName + ":admin"
	kc, err := tenantKubeconfig(r.env, r.ClusterName, r.tenantUser)
	if err != nil {
		return err
	}
	provider := r.Name + "-autoscaler-provider"
	ca, server, clientPair, err := autoscalerTLS([]string{
		provider + "." + r.Namespace + ".svc", provider + "." + r.Namespace + ".svc.cluster.local",
	}, r.Name+"-cluster-autoscaler")
	if err != nil {
		return err
	}
	for name, data := range map[string]map[string][]byte{
		r.ClusterName + "-kubeconfig":      {"value": kc},
		provider + "-tls":                  {"tls.crt": server.cert, "tls.key": server.key, "ca.crt": ca},
		r.Name + "-cluster-autoscaler-tls": {"tls.crt": clientPair.cert, "tls.key": clientPair.key, "ca.crt": ca},
	} {
		secret := &corev1.Secret{ObjectMeta: r.meta(name), Data: data}
		if err := r.create(ctx, r.env.Management, secret); err != nil {
			return err
		}
	}
	return nil
}

// meta is the ObjectMeta of an object Install makes in the infra namespace.
func (r *Release) meta(name string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Namespace: r.Namespace, Name: name, Labels: map[string]string{
		"app.kubernetes.io/managed-by": ManagedBy, "app.kubernetes.io/instance": r.Name,
		"cluster.x-k8s.io/cluster-name": r.ClusterName,
	}}
}

// create creates obj in c and remembers it for Uninstall; an existing object is left as it is
// (and to its owner).
func (r *Release) create(ctx context.Context, c *harness.Cluster, obj client.Object) error {
	if err := c.Client.Create(ctx, obj); err != nil {
		if apierrors.IsAlreadyExists(err) {
			return nil
		}
		return fmt.Errorf("creating %T %s/%s: %w", obj, obj.GetNamespace(), obj.GetName(), err)
	}
	r.created = append(r.created, createdObject{c, obj})
	return nil
}

// Uninstall removes both releases with helm, waits until their pods are gone, and deletes
// what Install created. It may be called on a Release whose Install failed.
func (r *Release) Uninstall(ctx context.Context) error {
	var errs []error
	helm := filepath.Join(r.env.Assets.BinDir, "helm")
	for _, c := range []struct {
		cluster *harness.Cluster
		ns      string
	}{{r.env.Tenant, TenantNamespace}, {r.env.Management, r.Namespace}} {
		args := []string{"uninstall", r.Name, "--namespace", c.ns, "--kubeconfig", c.cluster.Kubeconfig, "--ignore-not-found"}
		if out, err := exec.CommandContext(ctx, helm, args...).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("helm %s: %w\n%s", strings.Join(args, " "), err, out))
		}
		err := harness.WaitFor(ctx, 2*time.Minute, func(ctx context.Context) (bool, error) {
			pods := &corev1.PodList{}
			if err := c.cluster.Client.List(ctx, pods, client.InNamespace(c.ns), r.podSelector()); err != nil {
				return false, err
			}
			return len(pods.Items) == 0, nil
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: the release's pods in %s did not go: %w", c.cluster.Name, c.ns, err))
		}
	}
	for i := len(r.created) - 1; i >= 0; i-- {
		o := r.created[i]
		if err := o.cluster.Client.Delete(ctx, o.obj); client.IgnoreNotFound(err) != nil {
			errs = append(errs, fmt.Errorf("deleting %T %s: %w", o.obj, o.obj.GetName(), err))
		}
	}
	r.created = nil
	return errors.Join(errs...)
}

// podSelector selects both charts' pods of this release.
func (r *Release) podSelector() client.MatchingLabels {
	return client.MatchingLabels{"app.kubernetes.io/name": "tenantcloud", "app.kubernetes.io/instance": r.Name}
}
