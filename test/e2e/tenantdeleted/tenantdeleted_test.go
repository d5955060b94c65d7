package tenantdeleted_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/utils/ptr"
	cdiv1 "kubevirt.io/containerized-data-importer-api/pkg/apis/core/v1beta1"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/tenantcloud/tenantcloud/pkg/cloud/loadbalancer"
	"github.com/tenantcloud/tenantcloud/pkg/config"
	"github.com/tenantcloud/tenantcloud/pkg/csi/controller"
	"github.com/tenantcloud/tenantcloud/pkg/infra"
	"github.com/tenantcloud/tenantcloud/test/fixture"
	"github.com/tenantcloud/tenantcloud/test/harness"
	"github.com/tenantcloud/tenantcloud/test/sim/capi"
)

// alpha is deleted; beta shares alpha's namespace (its objects differ only in the cluster
// name) and stays; gamma, in a namespace of its own, is deleted with storage.retainDataVolumes.
const (
	nsA, nsB = "tenant-a", "tenant-b"
	alpha    = "alpha"
	beta     = "beta"
	gamma    = "gamma"
	alphaVM  = "alpha-w1"
	mib      = int64(1) << 20
	timeout  = time.Minute
)

// TestTenantDeletedLeavesNothing: with the management cluster's real garbage collector
// running, alpha's csi-controller and ccm create a DataVolume, a VolumeSnapshot and an infra
// LoadBalancer Service (owned by alpha's Cluster from creation) with an ETP=Local EndpointSlice
// (owned by the infra Service), and a DataVolume made before
// alpha's Cluster existed gets its owner reference when it is published. Deleting alpha's
// Cluster removes all of them; beta's volume, snapshot and load balancer in the same namespace
// stay; gamma's DataVolume (retained) stays while its snapshot goes. Afterwards alpha's
// components create nothing more: CreateVolume is FailedPrecondition and the ccm's sync of
// the tenant Service fails instead of re-creating the infra Service without an owner.
func TestTenantDeletedLeavesNothing(t *testing.T) {
	harness.Require(t, harness.NeedDisks, disksErr)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	dir := t.TempDir()
	built := make(chan error, 1)
	go func() { built <- harness.BuildPrograms(ctx, dir, nil, "ccm") }()

	kcm, err := env.StartControllerManager(ctx, env.Management, "garbagecollector")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("kube-controller-manager log (tail):\n%s", kcm.Log(4000))
		}
	})
	mgmt := env.Management.Client
	for _, ns := range []string{nsA, nsB} {
		must(t, fixture.CreateNamespace(ctx, mgmt, ns))
	}
	must(t, fixture.EnsureClasses(ctx, mgmt))
	must(t, fixture.CreateRunningVM(ctx, mgmt, nsA, alpha, alphaVM, ""))
	must(t, fixture.WaitVMIRunning(ctx, mgmt, nsA, alphaVM))

	alphaCtrl := startController(t, infra.Scope{Namespace: nsA, ClusterName: alpha}, fixture.Storage(), dir, alpha)
	// Made before alpha's Cluster exists, as by a csi-controller before owner references:
	// it has none until it is next published.
	earlyVol := createVolume(t, ctx, alphaCtrl, "pvc-early")
	if refs := dataVolume(t, ctx, nsA, earlyVol).OwnerReferences; len(refs) != 0 {
		t.Fatalf("DataVolume made without a Cluster has owner references %v", refs)
	}

	clusters := map[string]*clusterv1.Cluster{}
	for cluster, ns := range map[string]string{alpha: nsA, beta: nsA, gamma: nsB} {
		cl := capi.NewCluster(ns, cluster)
		must(t, mgmt.Create(ctx, cl))
		clusters[cluster] = cl
	}

	// alpha: a volume and its snapshot, owned from creation; the early volume published.
	alphaVol := createVolume(t, ctx, alphaCtrl, "pvc-alpha")
	alphaSnap := createSnapshot(t, ctx, alphaCtrl, "snap-alpha", alphaVol)
	wantOwner(t, dataVolume(t, ctx, nsA, alphaVol), clusters[alpha])
	wantOwner(t, snapshot(t, ctx, nsA, alphaSnap), clusters[alpha])
	if _, err := alphaCtrl.Controller.ControllerPublishVolume(ctx, &csi.ControllerPublishVolumeRequest{
		VolumeId: earlyVol, NodeId: alphaVM, VolumeCapability: mountCap()}); err != nil {
		t.Fatalf("publishing %s: %v", earlyVol, err)
	}
	wantOwner(t, dataVolume(t, ctx, nsA, earlyVol), clusters[alpha])

	// beta, same namespace, by its own csi-controller; gamma retains its DataVolumes.
	betaCtrl := startController(t, infra.Scope{Namespace: nsA, ClusterName: beta}, fixture.Storage(), dir, beta)
	betaVol := createVolume(t, ctx, betaCtrl, "pvc-beta")
	betaSnap := createSnapshot(t, ctx, betaCtrl, "snap-beta", betaVol)
	retain := fixture.Storage()
	retain.RetainDataVolumes = true
	gammaCtrl := startController(t, infra.Scope{Namespace: nsB, ClusterName: gamma}, retain, dir, gamma)
	gammaVol := createVolume(t, ctx, gammaCtrl, "pvc-gamma")
	gammaSnap := createSnapshot(t, ctx, gammaCtrl, "snap-gamma", gammaVol)
	if refs := dataVolume(t, ctx, nsB, gammaVol).OwnerReferences; len(refs) != 0 {
		t.Fatalf("retained DataVolume has owner references %v", refs)
	}
	wantOwner(t, snapshot(t, ctx, nsB, gammaSnap), clusters[gamma])

	// alpha's load balancer, by the real ccm; beta's infra Service as beta's ccm makes it.
	if err := <-built; err != nil {
		t.Fatal(err)
	}
	startCCM(t, dir)
	// ETP=Local with an endpoint on alpha's worker, so the ccm also makes an infra
	// EndpointSlice (owned by the infra Service, so collected after it).
	tenant := env.Tenant.Client
	must(t, tenant.Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: alphaVM},
		Spec: corev1.NodeSpec{ProviderID: infra.ProviderID(alphaVM)}}))
	web := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web"}, Spec: corev1.ServiceSpec{
		Type: corev1.ServiceTypeLoadBalancer, ExternalTrafficPolicy: corev1.ServiceExternalTrafficPolicyLocal,
		Ports: []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}}}}
	must(t, tenant.Create(ctx, web))
	must(t, tenant.Create(ctx, &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: web.Namespace, Name: "web-eps", Labels: map[string]string{
			discoveryv1.LabelServiceName: web.Name, discoveryv1.LabelManagedBy: "e2e.tenantcloud.io"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To[int32](8080), Protocol: ptr.To(corev1.ProtocolTCP)}},
		Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"10.100.0.1"}, NodeName: ptr.To(alphaVM),
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}}},
	}))
	var alphaLB *corev1.Service
	var alphaSlice *discoveryv1.EndpointSlice
	harness.Eventually(t, ctx, timeout, "alpha's infra Service and its EndpointSlice", func(ctx context.Context) (bool, error) {
		lbs, err := infraServices(ctx, nsA, alpha)
		if err != nil || len(lbs) != 1 {
			return false, err
		}
		alphaLB = &lbs[0]
		var slices discoveryv1.EndpointSliceList
		if err := mgmt.List(ctx, &slices, client.InNamespace(nsA), client.MatchingLabels{discoveryv1.LabelServiceName: alphaLB.Name}); err != nil {
			return false, err
		}
		for i := range slices.Items {
			if len(slices.Items[i].Endpoints) > 0 {
				alphaSlice = &slices.Items[i]
			}
		}
		return alphaSlice != nil, nil
	})
	wantOwner(t, alphaLB, clusters[alpha])
	betaScope := infra.Scope{Namespace: nsA, ClusterName: beta}
	betaLB := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: nsA, Name: "beta-lb",
		Labels: betaScope.OwnedLabels(loadbalancer.Component), Annotations: betaScope.OwnedAnnotations(),
		OwnerReferences: []metav1.OwnerReference{*infra.ClusterOwner(beta, clusters[beta].UID)}},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Ports: []corev1.ServicePort{{Port: 80, Protocol: corev1.ProtocolTCP}}}}
	must(t, mgmt.Create(ctx, betaLB))

	// Delete alpha and gamma.
	start := time.Now()
	for _, name := range []string{alpha, gamma} {
		must(t, mgmt.Delete(ctx, clusters[name]))
	}
	alphaGone := []client.Object{
		dvKey(nsA, earlyVol), dvKey(nsA, alphaVol), snapKey(nsA, alphaSnap), alphaLB, alphaSlice, snapKey(nsB, gammaSnap),
	}
	harness.Eventually(t, ctx, timeout, "alpha's objects and gamma's snapshot removed", func(ctx context.Context) (bool, error) {
		for _, o := range alphaGone {
			err := mgmt.Get(ctx, client.ObjectKeyFromObject(o), o.DeepCopyObject().(client.Object))
			if err == nil {
				return false, nil
			}
			if !apierrors.IsNotFound(err) {
				return false, err
			}
		}
		return true, nil
	})
	t.Logf("%d objects of the deleted tenants collected %v after their Clusters' deletion", len(alphaGone), time.Since(start).Round(time.Millisecond))

	// The tenant that still exists keeps everything; the retained DataVolume stays.
	for _, o := range []client.Object{clusters[beta], dvKey(nsA, betaVol), snapKey(nsA, betaSnap), betaLB, dvKey(nsB, gammaVol)} {
		got := o.DeepCopyObject().(client.Object)
		if err := mgmt.Get(ctx, client.ObjectKeyFromObject(o), got); err != nil {
			t.Errorf("%T %s after the deletion: %v", o, client.ObjectKeyFromObject(o), err)
		} else if got.GetDeletionTimestamp() != nil {
			t.Errorf("%T %s is being deleted", o, client.ObjectKeyFromObject(o))
		}
	}

	// A deleted tenant's components create nothing more.
	_, err = alphaCtrl.Controller.CreateVolume(ctx, createReq("pvc-late"))
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "Cluster") {
		t.Errorf("CreateVolume after the tenant's deletion = %v, want FailedPrecondition naming the Cluster", err)
	}
	if err := mgmt.Get(ctx, client.ObjectKey{Namespace: nsA, Name: controller.VolumeID(alpha, "pvc-late")}, &cdiv1.DataVolume{}); !apierrors.IsNotFound(err) {
		t.Errorf("DataVolume of the refused volume: %v, want NotFound", err)
	}
	// A change to the tenant Service makes the service controller ensure its load balancer
	// again; the ccm must refuse rather than re-create the collected infra Service.
	touched := web.DeepCopy()
	must(t, tenant.Get(ctx, client.ObjectKeyFromObject(web), touched))
	touched.Spec.Ports = append(touched.Spec.Ports, corev1.ServicePort{Name: "https", Port: 443, Protocol: corev1.ProtocolTCP})
	must(t, tenant.Update(ctx, touched))
	harness.Eventually(t, ctx, timeout, "the ccm refuses to re-create alpha's load balancer", func(ctx context.Context) (bool, error) {
		var evs corev1.EventList
		if err := tenant.List(ctx, &evs, client.InNamespace(web.Namespace)); err != nil {
			return false, err
		}
		for _, e := range evs.Items {
			if e.InvolvedObject.UID == touched.UID && e.Reason == "SyncLoadBalancerFailed" && strings.Contains(e.Message, infra.ErrTenantDeleted.Error()) {
				return true, nil
			}
		}
		return false, nil
	})
	if lbs, err := infraServices(ctx, nsA, alpha); err != nil || len(lbs) != 0 {
		t.Errorf("alpha's infra Services after its deletion: %v, %v; want none", lbs, err)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func mountCap() *csi.VolumeCapability {
	return &csi.VolumeCapability{
		AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
		AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}},
	}
}

func createReq(name string) *csi.CreateVolumeRequest {
	return &csi.CreateVolumeRequest{Name: name, VolumeCapabilities: []*csi.VolumeCapability{mountCap()},
		CapacityRange: &csi.CapacityRange{RequiredBytes: 16 * mib}}
}

func startController(t *testing.T, scope infra.Scope, st config.Storage, dir, name string) *fixture.Controller {
	t.Helper()
	sock := filepath.Join(dir, "csi-"+name)
	must(t, os.MkdirAll(sock, 0o755))
	c, err := fixture.StartController(env.Management.Config, scope, st, sock)
	must(t, err)
	t.Cleanup(func() {
		if err := c.Stop(); err != nil {
			t.Errorf("stopping csi-controller %s: %v", name, err)
		}
	})
	return c
}

func createVolume(t *testing.T, ctx context.Context, c *fixture.Controller, name string) string {
	t.Helper()
	rsp, err := c.Controller.CreateVolume(ctx, createReq(name))
	if err != nil {
		t.Fatalf("CreateVolume %s: %v", name, err)
	}
	return rsp.GetVolume().GetVolumeId()
}

func createSnapshot(t *testing.T, ctx context.Context, c *fixture.Controller, name, vol string) string {
	t.Helper()
	rsp, err := c.Controller.CreateSnapshot(ctx, &csi.CreateSnapshotRequest{Name: name, SourceVolumeId: vol})
	if err != nil {
		t.Fatalf("CreateSnapshot %s: %v", name, err)
	}
	return rsp.GetSnapshot().GetSnapshotId()
}

func dvKey(ns, name string) *cdiv1.DataVolume {
	return &cdiv1.DataVolume{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
}

func snapKey(ns, name string) *unstructured.Unstructured {
	u := infra.NewVolumeSnapshot()
	u.SetNamespace(ns)
	u.SetName(name)
	return u
}

func dataVolume(t *testing.T, ctx context.Context, ns, name string) *cdiv1.DataVolume {
	t.Helper()
	dv := dvKey(ns, name)
	must(t, env.Management.Client.Get(ctx, client.ObjectKeyFromObject(dv), dv))
	return dv
}

func snapshot(t *testing.T, ctx context.Context, ns, name string) *unstructured.Unstructured {
	t.Helper()
	u := snapKey(ns, name)
	must(t, env.Management.Client.Get(ctx, client.ObjectKeyFromObject(u), u))
	return u
}

// wantOwner fails t unless obj is owned by exactly this incarnation (UID) of cl.
func wantOwner(t *testing.T, obj metav1.Object, cl *clusterv1.Cluster) {
	t.Helper()
	want := *infra.ClusterOwner(cl.Name, cl.UID)
	for _, r := range obj.GetOwnerReferences() {
		if r == want {
			return
		}
	}
	t.Fatalf("%s/%s: owner references %v, want %v", obj.GetNamespace(), obj.GetName(), obj.GetOwnerReferences(), want)
}

// infraServices lists the infra LoadBalancer Services tenantcloud's ccm made for cluster.
func infraServices(ctx context.Context, ns, cluster string) ([]corev1.Service, error) {
	var list corev1.ServiceList
	scope := infra.Scope{Namespace: ns, ClusterName: cluster}
	err := env.Management.Client.List(ctx, &list, client.InNamespace(ns), client.MatchingLabels(scope.OwnedLabels(loadbalancer.Component)))
	return list.Items, err
}

// startCCM runs alpha's ccm binary against both clusters.
func startCCM(t *testing.T, dir string) {
	t.Helper()
	tenantID, err := env.Tenant.AddUser("tenantcloud-ccm", "system:masters")
	must(t, err)
	data, err := yaml.Marshal(map[string]any{
		"clusterName": alpha, "infraNamespace": nsA,
		"infraKubeconfig": env.Management.Kubeconfig, "tenantKubeconfig": tenantID.Kubeconfig,
		"loadBalancer": map[string]any{"allowedPools": []string{"public"}},
		"storage":      map[string]any{"defaultStorageClass": fixture.StorageClass},
	})
	must(t, err)
	cfgPath := filepath.Join(dir, "alpha.yaml")
	must(t, os.WriteFile(cfgPath, data, 0o600))
	p, err := harness.StartBinary("ccm", filepath.Join(dir, "ccm"), filepath.Join(dir, "ccm.log"),
		"--config", cfgPath, "--v=2", "--leader-elect=false", "--metrics-bind-address=127.0.0.1:0")
	must(t, err)
	t.Cleanup(func() {
		if err := p.Stop(); err != nil && !errors.Is(err, context.Canceled) {
			t.Error(err)
		}
		if t.Failed() {
			t.Logf("ccm log tail:\n%s", p.Log(8000))
		}
	})
}
