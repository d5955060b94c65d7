package dualstack_test

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/tenantcloud/tenantcloud/pkg/cloud/loadbalancer"
	"github.com/tenantcloud/tenantcloud/test/e2e/tenantlb"
	"github.com/tenantcloud/tenantcloud/test/harness"
	"github.com/tenantcloud/tenantcloud/test/sim/capi"
	"github.com/tenantcloud/tenantcloud/test/sim/metallb"
)

const (
	infraNS     = "tenant-a"
	cluster     = "alpha"
	template    = "worker"
	waitTimeout = 90 * time.Second

	// The tenant's MetalLB pool holds a range of each family.
	poolV4 = "192.0.2.0/27"
	poolV6 = "2001:db8:1::/120"
)

// world is one tenant's ccm (the binary, as deployed) on a pair of harness clusters.
type world struct {
	ctx          context.Context
	mgmt, tenant client.Client
	ccm          *harness.Process
}

var (
	buildOnce sync.Once
	ccmBin    string
	buildErr  error
)

// ccmBinary builds the ccm once for the package.
func ccmBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "dualstack-e2e-bin-")
		if err != nil {
			buildErr = err
			return
		}
		buildErr = harness.BuildPrograms(context.Background(), dir, nil, "ccm")
		ccmBin = filepath.Join(dir, "ccm")
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return ccmBin
}

// startWorld makes the tenant's infra namespace, Cluster and dual-stack pool on e (whose
// MetalLB must be running), workers worker VMs through Cluster API when workers > 0, and runs
// the ccm with a config granting the pool.
func startWorld(t *testing.T, e *harness.Env, workers int32) *world {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	w := &world{ctx: ctx, mgmt: e.Management.Client, tenant: e.Tenant.Client}
	dir := t.TempDir()
	w.create(t, w.mgmt, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: infraNS}})
	w.create(t, w.mgmt, &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
		"metadata": map[string]any{"namespace": metallb.DefaultNamespace, "name": "public"},
		"spec":     map[string]any{"addresses": []any{poolV4, poolV6}, "autoAssign": true},
	}})
	w.create(t, w.mgmt, capi.NewCluster(infraNS, cluster))
	if workers > 0 {
		w.create(t, w.mgmt, capi.NewKubevirtMachineTemplate(infraNS, template, cluster, 2, "1Gi"))
		w.create(t, w.mgmt, capi.NewMachineDeployment(infraNS, "workers", cluster, template, workers))
	}

	tenantID, err := e.Tenant.AddUser("tenantcloud-ccm", "system:masters")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := yaml.Marshal(map[string]any{
		"clusterName": cluster, "infraNamespace": infraNS,
		"infraKubeconfig": e.Management.Kubeconfig, "tenantKubeconfig": tenantID.Kubeconfig,
		"loadBalancer": map[string]any{
			"allowedPools": []string{"public"}, "defaultPool": "public", "allowedIPRanges": []string{poolV4, poolV6},
		},
		"storage": map[string]any{"defaultStorageClass": "unused"},
	})
	if err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "tenant.yaml")
	if err := os.WriteFile(cfgPath, cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	w.ccm, err = harness.StartBinary("ccm", ccmBinary(t), filepath.Join(dir, "ccm.log"),
		"--config", cfgPath, "--v=2", "--leader-elect=false", "--node-monitor-period=500ms",
		"--concurrent-service-syncs=4", "--metrics-bind-address=127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("ccm log tail:\n%s", w.ccm.Log(8000))
		}
		if err := w.ccm.Stop(); err != nil {
			t.Error(err)
		}
	})
	return w
}

func (w *world) create(t *testing.T, c client.Client, obj client.Object) {
	t.Helper()
	if err := c.Create(w.ctx, obj); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("creating %T %s: %v", obj, obj.GetName(), err)
	}
}

// eventually waits for cond, failing at once if the ccm has exited.
func (w *world) eventually(t *testing.T, what string, cond func() (bool, error)) {
	t.Helper()
	harness.Eventually(t, w.ctx, waitTimeout, what, func(context.Context) (bool, error) {
		if exited, err := w.ccm.Exited(); exited {
			t.Fatalf("ccm exited: %v\n%s", err, w.ccm.Log(3000))
		}
		return cond()
	})
}

// lbService creates a tenant LoadBalancer Service (TCP 80 unless mut changes it) in a fresh
// namespace and deletes it when the test ends, waiting for its infra Service to go.
func (w *world) lbService(t *testing.T, name string, mut func(*corev1.Service)) *corev1.Service {
	t.Helper()
	svc, err := tenantlb.Create(w.ctx, w.tenant, name, name, mut)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := w.tenant.Delete(w.ctx, svc); client.IgnoreNotFound(err) != nil {
			t.Errorf("deleting %s: %v", name, err)
			return
		}
		w.eventually(t, "infra Service of "+name+" gone", func() (bool, error) {
			err := w.mgmt.Get(w.ctx, w.infraKey(t, svc), &corev1.Service{})
			return apierrors.IsNotFound(err), client.IgnoreNotFound(err)
		})
	})
	return svc
}

func (w *world) infraKey(t *testing.T, svc *corev1.Service) client.ObjectKey {
	t.Helper()
	name, err := loadbalancer.InfraServiceName(svc.UID)
	if err != nil {
		t.Fatal(err)
	}
	return client.ObjectKey{Namespace: infraNS, Name: name}
}

// waitInfra waits until svc's infra Service exists and cond holds.
func (w *world) waitInfra(t *testing.T, svc *corev1.Service, what string, cond func(*corev1.Service) bool) *corev1.Service {
	t.Helper()
	in := &corev1.Service{}
	w.eventually(t, "infra Service of "+svc.Name+" "+what, func() (bool, error) {
		if err := w.mgmt.Get(w.ctx, w.infraKey(t, svc), in); err != nil {
			return false, client.IgnoreNotFound(err)
		}
		return cond(in), nil
	})
	return in
}

// waitStatus waits until the tenant Service's load-balancer addresses are one per entry of
// prefixes, in that order, and returns them.
func (w *world) waitStatus(t *testing.T, svc *corev1.Service, prefixes ...string) []netip.Addr {
	t.Helper()
	var got []netip.Addr
	w.eventually(t, "tenant Service "+svc.Name+" addresses in "+strings.Join(prefixes, ", "), func() (bool, error) {
		if err := w.tenant.Get(w.ctx, client.ObjectKeyFromObject(svc), svc); err != nil {
			return false, err
		}
		got = got[:0]
		for _, in := range svc.Status.LoadBalancer.Ingress {
			a, err := netip.ParseAddr(in.IP)
			if err != nil {
				return false, err
			}
			got = append(got, a)
		}
		if len(got) != len(prefixes) {
			return false, nil
		}
		for i, p := range prefixes {
			if !netip.MustParsePrefix(p).Contains(got[i]) {
				return false, nil
			}
		}
		return true, nil
	})
	return got
}

// waitWarning waits for a Warning Event of reason on the tenant object and returns its message.
func (w *world) waitWarning(t *testing.T, obj client.Object, reason string) string {
	t.Helper()
	var msg string
	w.eventually(t, reason+" Warning on "+obj.GetName(), func() (found bool, err error) {
		msg, found, err = tenantlb.Warning(w.ctx, w.tenant, obj, reason)
		return found, err
	})
	return msg
}

// families of an infra Service, for comparisons.
func families(in *corev1.Service) string {
	var out []string
	for _, f := range in.Spec.IPFamilies {
		out = append(out, string(f))
	}
	return strings.Join(out, ",")
}
