package ccm

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/tenantcloud/tenantcloud/test/harness"
	"github.com/tenantcloud/tenantcloud/test/sim/capi"
	"github.com/tenantcloud/tenantcloud/test/sim/kubevirt"
	"github.com/tenantcloud/tenantcloud/test/sim/metallb"
	"github.com/tenantcloud/tenantcloud/test/sim/simmgr"
)

// The tenant under test and a second one sharing the management cluster.
const (
	infraNS      = "tenant-a"
	cluster      = "alpha"
	otherNS      = "tenant-b"
	otherCluster = "beta"

	workers      = "workers" // the MachineDeployment of the tenant's workers
	template     = "worker"
	lbClass      = "tenantcloud.io/metallb"
	maxServices  = 12
	infraUser    = "tenantcloud-ccm-alpha" // least-privileged management identity of the ccm
	tenantUser   = "tenantcloud-ccm"       // the ccm's tenant identity (admin there)
	phaseDelay   = 20 * time.Millisecond
	waitTimeout  = 60 * time.Second
	leaseName    = "cloud-controller-manager"
	leaseNS      = "kube-system"
	simCores     = 2
	simMemory    = "3Gi"
	instanceType = "2c3Gi"
)

// MetalLB pools. The tenant is granted public (its default) and internal; foreign is another
// tenant's pool that exists in the same MetalLB.
var pools = []struct {
	name, cidr string
	auto       bool
}{
	{"public", "192.0.2.0/27", true},
	{"internal", "198.51.100.0/28", false},
	{"foreign", "203.0.113.0/28", false},
	{"bulk", "10.96.0.0/20", false}, // for BenchmarkLBPropagation
}

var (
	allowedPools  = []string{"public", "internal", "bulk"}
	allowedRanges = []string{"192.0.2.0/27", "198.51.100.0/28", "10.96.0.0/20"}
)

// suite is everything TestCCM started.
type suite struct {
	ctx     context.Context
	mgmt    client.Client
	tenant  client.Client
	dir     string
	bin     string
	cfgPath string
	ccmArgs []string

	mu   sync.Mutex
	ccm  *harness.Process
	runs int
}

// startSuite starts everything with loadBalancer.maxServices = quota (0: unlimited); ccmArgs
// are added to (and override) the ccm's flags.
func startSuite(t testing.TB, quota int, ccmArgs ...string) *suite {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	// Not t.TempDir: the ccm logs of a failed run are kept for inspection.
	dir, err := os.MkdirTemp("", "ccm-e2e-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() || os.Getenv("CCM_E2E_KEEP_LOGS") != "" {
			t.Logf("ccm logs kept in %s", dir)
			return
		}
		_ = os.RemoveAll(dir)
	})
	s := &suite{ctx: ctx, mgmt: env.Management.Client, tenant: env.Tenant.Client, dir: dir, ccmArgs: ccmArgs}
	start := time.Now()

	built := make(chan error, 1)
	go func() { built <- s.build() }()

	for _, ns := range []string{infraNS, otherNS} {
		s.create(t, s.mgmt, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
	}
	lb, err := metallb.Start(ctx, env.Management.Kubeconfig, env.Assets.BinDir, metallb.Options{LogDir: s.dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := lb.Stop(); err != nil {
			t.Errorf("stopping MetalLB: %v", err)
		}
	})
	for _, p := range pools {
		s.create(t, s.mgmt, ipAddressPool(p.name, p.cidr, p.auto))
	}
	s.startSimulators(t)
	kubeconfigs := s.credentials(t)
	s.writeConfig(t, kubeconfigs, quota)
	if err := <-built; err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			s.dumpLog(t)
		}
		s.stopCCM(t)
	})
	s.startCCM(t)
	t.Logf("suite ready in %s (MetalLB %s)", time.Since(start).Round(time.Millisecond), lb.StartupLatency().Round(time.Millisecond))
	return s
}

func (s *suite) build() error {
	s.bin = filepath.Join(s.dir, "ccm")
	var flags []string
	if os.Getenv("CCM_E2E_RACE") != "" { // a race-enabled ccm; its log reports any race found
		flags = append(flags, "-race")
	}
	return harness.BuildPrograms(s.ctx, s.dir, flags, "ccm")
}

func ipAddressPool(name, cidr string, auto bool) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
		"metadata": map[string]any{"namespace": metallb.DefaultNamespace, "name": name},
		"spec":     map[string]any{"addresses": []any{cidr}, "autoAssign": auto},
	}}
}

// startSimulators runs KubeVirt (VM → VMI → launcher pod, infra nodes in zones) and Cluster
// API/CAPK (MachineDeployment → VM → tenant Node with the uninitialized taint) for cluster.
func (s *suite) startSimulators(t testing.TB) {
	mgr, err := simmgr.New(env.Management.Config)
	if err != nil {
		t.Fatal(err)
	}
	if err := kubevirt.Setup(s.ctx, mgr, kubevirt.Options{PhaseDelay: phaseDelay}); err != nil {
		t.Fatal(err)
	}
	if err := capi.Setup(s.ctx, mgr, capi.Options{PhaseDelay: phaseDelay, Tenant: s.tenant, ExternalCloudProvider: true, ClusterName: cluster}); err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(s.ctx)
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("simulator manager: %v", err)
		}
	})
	s.create(t, s.mgmt, capi.NewCluster(infraNS, cluster))
	s.create(t, s.mgmt, capi.NewKubevirtMachineTemplate(infraNS, template, cluster, simCores, simMemory))
}

// credentials gives the ccm a namespaced Role in the management cluster (plus get on Nodes for
// --node-zones), as deploy/ would, and an admin identity in the tenant cluster. It returns the
// infra and tenant kubeconfig paths.
func (s *suite) credentials(t testing.TB) [2]string {
	infraID, err := env.Management.AddUser(infraUser)
	if err != nil {
		t.Fatal(err)
	}
	tenantID, err := env.Tenant.AddUser(tenantUser, "system:masters")
	if err != nil {
		t.Fatal(err)
	}
	all := []string{"get", "list", "watch"}
	s.create(t, s.mgmt, &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Namespace: infraNS, Name: "tenantcloud-ccm"},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"services"}, Verbs: append(all, "create", "update", "patch", "delete")},
			{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: append(all, "create", "update", "patch", "delete")},
			{APIGroups: []string{"kubevirt.io"}, Resources: []string{"virtualmachines", "virtualmachineinstances"}, Verbs: all},
			{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: all},
			// The Cluster, for the infra Services' owner reference to it.
			{APIGroups: []string{"cluster.x-k8s.io"}, Resources: []string{"clusters"}, Verbs: []string{"get"}},
		},
	})
	subject := []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: infraUser}}
	s.create(t, s.mgmt, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Namespace: infraNS, Name: "tenantcloud-ccm"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "tenantcloud-ccm"},
		Subjects:   subject,
	})
	s.create(t, s.mgmt, &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: "tenantcloud-ccm-node-zones"},
		Rules:      []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"nodes"}, Verbs: []string{"get"}}},
	})
	s.create(t, s.mgmt, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "tenantcloud-ccm-alpha-node-zones"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "tenantcloud-ccm-node-zones"},
		Subjects:   subject,
	})
	return [2]string{infraID.Kubeconfig, tenantID.Kubeconfig}
}

func (s *suite) writeConfig(t testing.TB, kubeconfigs [2]string, quota int) {
	cfg := map[string]any{
		"clusterName":      cluster,
		"infraNamespace":   infraNS,
		"infraKubeconfig":  kubeconfigs[0],
		"tenantKubeconfig": kubeconfigs[1],
		"loadBalancer": map[string]any{
			"allowedPools":    allowedPools,
			"defaultPool":     "public",
			"allowedIPRanges": allowedRanges,
			"maxServices":     quota,
		},
		"storage": map[string]any{"defaultStorageClass": "unused"},
	}
	data, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s.cfgPath = filepath.Join(s.dir, "tenant.yaml")
	if err := os.WriteFile(s.cfgPath, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// startCCM runs the binary and waits until it holds the leader lease. Lease timings are short
// so a restarted ccm takes over within seconds (upstream does not release the lease on exit).
func (s *suite) startCCM(t testing.TB) {
	t.Helper()
	s.mu.Lock()
	s.runs++
	name := fmt.Sprintf("ccm-%d", s.runs)
	s.mu.Unlock()
	prevHolder := s.leaseHolder()
	args := append([]string{"--config", s.cfgPath, "--v=2",
		"--node-zones", "--load-balancer-class=" + lbClass,
		"--leader-elect-lease-duration=3s", "--leader-elect-renew-deadline=2s", "--leader-elect-retry-period=250ms",
		"--node-monitor-period=500ms", "--concurrent-service-syncs=4", "--metrics-bind-address=127.0.0.1:0"}, s.ccmArgs...)
	p, err := harness.StartBinary(name, s.bin, filepath.Join(s.dir, name+".log"), args...)
	if err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	s.ccm = p
	s.mu.Unlock()
	start := time.Now()
	s.eventually(t, "ccm holds the leader lease", func() (bool, error) {
		if err := s.ccmExited(); err != nil {
			return false, err
		}
		h := s.leaseHolder()
		return h != "" && h != prevHolder, nil
	})
	t.Logf("%s leading %s after start", name, time.Since(start).Round(time.Millisecond))
}

// ccmExited is an error if the ccm the suite started has exited on its own (e.g. it lost the
// leader lease), so waits fail at once with its log instead of timing out; nil while no ccm is
// meant to run (between stopCCM and startCCM).
func (s *suite) ccmExited() error {
	s.mu.Lock()
	p := s.ccm
	s.mu.Unlock()
	if p == nil {
		return nil
	}
	if exited, err := p.Exited(); exited {
		return fmt.Errorf("ccm exited: %v\n%s", err, p.Log(3000))
	}
	return nil
}

func (s *suite) leaseHolder() string {
	l := &coordinationv1.Lease{}
	if err := s.tenant.Get(s.ctx, client.ObjectKey{Namespace: leaseNS, Name: leaseName}, l); err != nil {
		return ""
	}
	if l.Spec.HolderIdentity == nil {
		return ""
	}
	return *l.Spec.HolderIdentity
}

// stopCCM sends SIGTERM and waits for the process to exit.
func (s *suite) stopCCM(t testing.TB) {
	s.mu.Lock()
	p := s.ccm
	s.ccm = nil
	s.mu.Unlock()
	if p == nil {
		return
	}
	if err := p.Stop(); err != nil {
		t.Error(err)
	}
}

func (s *suite) dumpLog(t testing.TB) {
	s.mu.Lock()
	p := s.ccm
	s.mu.Unlock()
	if p != nil {
		t.Logf("ccm log %s (tail):\n%s", p.LogFile, p.Log(12000))
	}
}

func (s *suite) create(t testing.TB, c client.Client, obj client.Object) {
	t.Helper()
	if err := c.Create(s.ctx, obj); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("creating %T %s: %v", obj, obj.GetName(), err)
	}
}
