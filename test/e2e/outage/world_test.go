package outage

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/autoscaler/cluster-autoscaler/cloudprovider/externalgrpc/protos"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/tenantcloud/tenantcloud/pkg/autoscaler"
	"github.com/tenantcloud/tenantcloud/test/fixture"
	"github.com/tenantcloud/tenantcloud/test/harness"
	"github.com/tenantcloud/tenantcloud/test/sim/metallb"
)

// The one tenant every test works for.
const (
	infraNS = "outage-infra"
	cluster = "omega"
	vmName  = "omega-w1" // the worker volumes are published to

	ccmInfraUser  = "tenantcloud-ccm-omega" // the ccm's management identity, for the audit log
	ccmTenantUser = "tenantcloud-ccm"
	leaseNS       = "kube-system"
	leaseName     = "cloud-controller-manager"

	pool         = "omega-public"
	poolCIDR     = "192.0.2.0/26"
	latePool     = "omega-late" // granted to the tenant, created in MetalLB only when a test says
	latePoolCIDR = "198.51.100.0/28"

	phaseDelay = 50 * time.Millisecond

	// Short leader-election timings (the flags' defaults are 15s/10s/2s) so a takeover fits the
	// test budget; the ratios are upstream's.
	leaseDuration = 4 * time.Second
	renewDeadline = 3 * time.Second
	retryPeriod   = time.Second

	// waitTimeout bounds every wait for convergence; generous, the machine is shared.
	waitTimeout = 4 * time.Minute
)

// World is what TestMain set up once for every test: MetalLB with the tenant's pool, a running
// worker VM, the ccm binary and its config.
type World struct {
	Dir     string
	CCM     string // the ccm binary
	Config  string // the ccm's tenant config file
	MetalLB *metallb.Controller
}

// setupWorld is the harness.Setup of this package: the CSI simulators (fixture), MetalLB, the
// tenant's namespace, pool, VM and identities, and the ccm built from source.
func setupWorld(e *harness.Env) (stop func() error, err error) {
	stopSims, err := fixture.Setup(&sims, fixture.Options{PhaseDelay: phaseDelay}, "outage-e2e-disks-")(e)
	if err != nil {
		return nil, err
	}
	w := &World{Dir: filepath.Join(e.Dir, "outage")}
	stop = func() error {
		var errs []error
		if w.MetalLB != nil {
			errs = append(errs, w.MetalLB.Stop())
		}
		return errors.Join(append(errs, stopSims())...)
	}
	defer func() {
		if err != nil {
			_ = stop()
		}
	}()
	if err := os.MkdirAll(w.Dir, 0o755); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	built := make(chan error, 1)
	w.CCM = filepath.Join(w.Dir, "ccm")
	go func() {
		built <- harness.BuildPrograms(ctx, w.Dir, nil, "ccm")
	}()

	mgmt := e.Management.Client
	if err := fixture.CreateNamespace(ctx, mgmt, infraNS); err != nil {
		return nil, err
	}
	if w.MetalLB, err = metallb.Start(ctx, e.Management.Kubeconfig, e.Assets.BinDir, metallb.Options{LogDir: w.Dir}); err != nil {
		return nil, err
	}
	if err := mgmt.Create(ctx, ipAddressPool(pool, poolCIDR)); err != nil {
		return nil, fmt.Errorf("creating IPAddressPool %s: %w", pool, err)
	}
	if err := fixture.CreateRunningVM(ctx, mgmt, infraNS, cluster, vmName, ""); err != nil {
		return nil, err
	}
	// Admin identities of their own, so the audit log tells the ccm's requests apart.
	infraID, err := e.Management.AddUser(ccmInfraUser, "system:masters")
	if err != nil {
		return nil, err
	}
	tenantID, err := e.Tenant.AddUser(ccmTenantUser, "system:masters")
	if err != nil {
		return nil, err
	}
	if err := w.writeConfig(infraID.Kubeconfig, tenantID.Kubeconfig); err != nil {
		return nil, err
	}
	if err := <-built; err != nil {
		return nil, err
	}
	world = w
	return stop, nil
}

func ipAddressPool(name, cidr string) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
		"metadata": map[string]any{"namespace": metallb.DefaultNamespace, "name": name},
		"spec":     map[string]any{"addresses": []any{cidr}, "autoAssign": true},
	}}
}

func (w *World) writeConfig(infraKubeconfig, tenantKubeconfig string) error {
	data, err := yaml.Marshal(map[string]any{
		"clusterName":      cluster,
		"infraNamespace":   infraNS,
		"infraKubeconfig":  infraKubeconfig,
		"tenantKubeconfig": tenantKubeconfig,
		"loadBalancer": map[string]any{
			"allowedPools":    []string{pool, latePool},
			"defaultPool":     pool,
			"allowedIPRanges": []string{poolCIDR, latePoolCIDR},
		},
	})
	if err != nil {
		return err
	}
	w.Config = filepath.Join(w.Dir, "tenant.yaml")
	return os.WriteFile(w.Config, data, 0o600)
}

// ccmProc is one run of the ccm binary.
type ccmProc struct{ *harness.Process }

// startCCM runs the ccm with leader election on the short timings.
func (w *World) startCCM(name string) (*ccmProc, error) {
	p, err := harness.StartBinary(name, w.CCM, filepath.Join(w.Dir, name+".log"), "--config", w.Config, "--v=2",
		"--leader-elect-lease-duration="+leaseDuration.String(),
		"--leader-elect-renew-deadline="+renewDeadline.String(),
		"--leader-elect-retry-period="+retryPeriod.String(),
		"--concurrent-service-syncs=4",
		"--metrics-bind-address=127.0.0.1:0") // replicas share the host
	if err != nil {
		return nil, err
	}
	return &ccmProc{p}, nil
}

// leads reports whether the process has acquired the leader Lease (client-go's leader
// election logs it; the holder identity is hostname_UUID and names no process).
func (p *ccmProc) leads() bool {
	b, err := os.ReadFile(p.LogFile)
	return err == nil && strings.Contains(strings.ToLower(string(b)), "successfully acquired lease")
}

// kubelet keeps one ccm replica running the way a Deployment's kubelet does: when the process
// exits (the ccm exits when it cannot renew its Lease, as upstream does), a new one starts.
type kubelet struct {
	w    *World
	name string

	mu       sync.Mutex
	cur      *ccmProc
	runs     int
	exits    []string // why each run ended: exit status and the last lines of its log
	quit     chan struct{}
	finished chan struct{}
}

// restartDelay stands for the kubelet's restart back-off (10 s doubling upstream; short here).
const restartDelay = time.Second

func (w *World) runCCM(t testing.TB, name string) *kubelet {
	t.Helper()
	k := &kubelet{w: w, name: name, quit: make(chan struct{}), finished: make(chan struct{})}
	p, err := w.startCCM(fmt.Sprintf("%s-%d", name, 1))
	if err != nil {
		t.Fatal(err)
	}
	k.cur, k.runs = p, 1
	go k.loop()
	t.Cleanup(func() {
		if err := k.stop(); err != nil {
			t.Error(err)
		}
		if t.Failed() {
			t.Logf("%s log (tail):\n%s", k.current().Name, k.current().Log(8000))
		}
	})
	return k
}

func (k *kubelet) loop() {
	defer close(k.finished)
	for {
		p := k.current()
		select {
		case <-k.quit:
			return
		case <-p.Done():
		}
		_, why := p.Exited()
		k.mu.Lock()
		k.exits = append(k.exits, fmt.Sprintf("%s: %v: %s", p.Name, why, lastLines(p.Log(4000), 3)))
		k.mu.Unlock()
		select {
		case <-k.quit:
			return
		case <-time.After(restartDelay):
		}
		k.mu.Lock()
		k.runs++
		next, err := k.w.startCCM(fmt.Sprintf("%s-%d", k.name, k.runs))
		if err == nil {
			k.cur = next
		}
		k.mu.Unlock()
	}
}

func (k *kubelet) current() *ccmProc {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.cur
}

// restarts is how often the ccm had to be started again.
func (k *kubelet) restarts() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.runs - 1
}

// exitReasons says why each run that ended on its own ended.
func (k *kubelet) exitReasons() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]string(nil), k.exits...)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], " | ")
}

func (k *kubelet) stop() error {
	close(k.quit)
	<-k.finished
	return k.current().Stop()
}

// lease returns the ccm's leader Lease in the tenant cluster.
func lease(ctx context.Context) (*coordinationv1.Lease, error) {
	l := &coordinationv1.Lease{}
	err := env.Tenant.Client.Get(ctx, client.ObjectKey{Namespace: leaseNS, Name: leaseName}, l)
	return l, err
}

// eventually waits until cond holds; errors (an apiserver that is down) are retried.
func eventually(tb testing.TB, ctx context.Context, what string, cond func(context.Context) (bool, error)) {
	tb.Helper()
	harness.Eventually(tb, ctx, waitTimeout, what, cond)
}

func testCtx(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// tenantNamespace creates a namespace in the tenant cluster for one test's Services.
func tenantNamespace(t testing.TB, ctx context.Context, name string) string {
	t.Helper()
	err := env.Tenant.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	return name
}

// programs are tenantcloud's programs for one test: the ccm binary (leading), csi-controller
// over gRPC, and autoscaler-provider over gRPC with a node group of its own at size 0.
type programs struct {
	ccm   *kubelet
	cc    csi.ControllerClient
	prov  protos.CloudProviderClient
	md    *clusterv1.MachineDeployment
	group string
}

// startPrograms starts them, names made unique by suffix, and stops them in cleanups.
func startPrograms(tb testing.TB, ctx context.Context, suffix string) *programs {
	tb.Helper()
	k := world.runCCM(tb, "ccm-"+suffix)
	eventually(tb, ctx, "the ccm leading", func(context.Context) (bool, error) {
		if exited, err := k.current().Exited(); exited {
			return false, fmt.Errorf("ccm exited: %v\n%s", err, k.current().Log(3000))
		}
		return k.current().leads(), nil
	})
	ctrl := startController(tb)
	tb.Cleanup(func() {
		if err := ctrl.Stop(); err != nil {
			tb.Errorf("stopping csi-controller: %v", err)
		}
	})
	prov := startProvider(tb, ctx)
	md := ensureGroup(tb, ctx, cluster+"-"+suffix, 0)
	tb.Cleanup(func() { removeGroup(tb, md) })
	group := autoscaler.GroupID(infraNS, md.Name)
	eventually(tb, ctx, "autoscaler-provider serving the node group", targetIs(prov, group, 0))
	return &programs{ccm: k, cc: ctrl.Controller, prov: prov, md: md, group: group}
}
