package harness

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	kubevirtv1 "kubevirt.io/api/core/v1"
	cdiv1 "kubevirt.io/containerized-data-importer-api/pkg/apis/core/v1beta1"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

var env *Env

func TestMain(m *testing.M) { os.Exit(Main(m, &env)) }

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func TestBothAPIServersAnswer(t *testing.T) {
	if env.Management.Config.Host == env.Tenant.Config.Host {
		t.Fatalf("management and tenant share an endpoint: %s", env.Management.Config.Host)
	}
	for _, c := range []*Cluster{env.Management, env.Tenant} {
		dc, err := discovery.NewDiscoveryClientForConfig(c.Config)
		if err != nil {
			t.Fatal(err)
		}
		v, err := dc.ServerVersion()
		if err != nil {
			t.Fatalf("%s: /version: %v", c.Name, err)
		}
		if !strings.HasPrefix(v.GitVersion, "v1.") {
			t.Fatalf("%s: unexpected version %q", c.Name, v.GitVersion)
		}
		t.Logf("%s apiserver %s at %s", c.Name, v.GitVersion, c.Config.Host)
	}
}

func TestKubeconfigFilesWork(t *testing.T) {
	for _, c := range []*Cluster{env.Management, env.Tenant} {
		cfg, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig)
		if err != nil {
			t.Fatalf("%s: loading %s: %v", c.Name, c.Kubeconfig, err)
		}
		if strings.TrimSuffix(cfg.Host, "/") != strings.TrimSuffix(c.Config.Host, "/") {
			t.Fatalf("%s: kubeconfig points at %s, want %s", c.Name, cfg.Host, c.Config.Host)
		}
		cl, err := client.New(cfg, client.Options{})
		if err != nil {
			t.Fatal(err)
		}
		var nss corev1.NamespaceList
		if err := cl.List(ctxT(t), &nss); err != nil {
			t.Fatalf("%s: listing namespaces through kubeconfig: %v", c.Name, err)
		}
	}
}

func TestClustersAreIsolated(t *testing.T) {
	ctx := ctxT(t)
	pairs := []struct{ in, other *Cluster }{{env.Management, env.Tenant}, {env.Tenant, env.Management}}
	for _, p := range pairs {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "only-in-" + p.in.Name}}
		if err := p.in.Client.Create(ctx, ns); err != nil {
			t.Fatalf("creating namespace in %s: %v", p.in.Name, err)
		}
		err := p.other.Client.Get(ctx, client.ObjectKeyFromObject(ns), &corev1.Namespace{})
		if !apierrors.IsNotFound(err) {
			t.Fatalf("namespace created in %s is visible in %s (err=%v)", p.in.Name, p.other.Name, err)
		}
	}
}

// The CRDs every later component relies on, by cluster.
var wantCRDs = map[string][]string{
	"management": {
		"virtualmachines.kubevirt.io", "virtualmachineinstances.kubevirt.io", "datavolumes.cdi.kubevirt.io",
		"clusters.cluster.x-k8s.io", "machinedeployments.cluster.x-k8s.io", "machinesets.cluster.x-k8s.io",
		"machines.cluster.x-k8s.io", "kubevirtmachinetemplates.infrastructure.cluster.x-k8s.io",
		"kubevirtmachines.infrastructure.cluster.x-k8s.io", "ipaddresspools.metallb.io",
		"volumesnapshots.snapshot.storage.k8s.io",
	},
	"tenant": {"volumesnapshots.snapshot.storage.k8s.io", "volumesnapshotclasses.snapshot.storage.k8s.io", "volumesnapshotcontents.snapshot.storage.k8s.io"},
}

func TestCRDsEstablished(t *testing.T) {
	ctx := ctxT(t)
	for _, c := range []*Cluster{env.Management, env.Tenant} {
		var list apiextensionsv1.CustomResourceDefinitionList
		if err := c.Client.List(ctx, &list); err != nil {
			t.Fatal(err)
		}
		established := map[string]bool{}
		for _, crd := range list.Items {
			for _, cond := range crd.Status.Conditions {
				if cond.Type == apiextensionsv1.Established && cond.Status == apiextensionsv1.ConditionTrue {
					established[crd.Name] = true
				}
			}
		}
		for _, crd := range c.CRDs {
			if !established[crd.Name] {
				t.Errorf("%s: CRD %s from bin/crds is not Established", c.Name, crd.Name)
			}
		}
		for _, name := range wantCRDs[c.Name] {
			if !established[name] {
				t.Errorf("%s: required CRD %s missing", c.Name, name)
			}
		}
		t.Logf("%s: %d CRDs established", c.Name, len(established))
	}
	if err := env.Tenant.Client.List(ctx, &kubevirtv1.VirtualMachineList{}); err == nil {
		t.Error("tenant cluster serves KubeVirt VMs; infra CRDs must stay in the management cluster")
	}
}

// statusRoundTrip creates obj, applies setStatus, writes it (through the status subresource
// when the upstream CRD has one) and checks that check(readBack) holds, proving the CRD schema
// keeps the fields we rely on.
func statusRoundTrip[T client.Object](t *testing.T, c client.Client, obj T, setStatus func(T), check func(T) bool) {
	t.Helper()
	ctx := ctxT(t)
	if err := c.Create(ctx, obj); err != nil {
		t.Fatalf("create %T: %v", obj, err)
	}
	setStatus(obj)
	var err error
	if _, isVMI := any(obj).(*kubevirtv1.VirtualMachineInstance); isVMI {
		// KubeVirt's VMI CRD has no status subresource: virt-handler writes the whole object.
		if serr := c.Status().Update(ctx, obj.DeepCopyObject().(T)); !apierrors.IsNotFound(serr) {
			t.Fatalf("VMI status subresource: want NotFound as upstream, got %v", serr)
		}
		err = c.Update(ctx, obj)
	} else {
		err = c.Status().Update(ctx, obj)
	}
	if err != nil {
		t.Fatalf("status update %T: %v", obj, err)
	}
	got := obj.DeepCopyObject().(T)
	if err := c.Get(ctx, client.ObjectKeyFromObject(obj), got); err != nil {
		t.Fatal(err)
	}
	if !check(got) {
		t.Fatalf("%T status did not survive the round trip: %+v", obj, got)
	}
}

func TestInfraObjectsAcceptStatus(t *testing.T) {
	ctx := ctxT(t)
	c := env.Management.Client
	ns := "harness-objects"
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	labels := map[string]string{"cluster.x-k8s.io/cluster-name": "alpha"}
	always := kubevirtv1.RunStrategyAlways

	t.Run("VirtualMachine", func(t *testing.T) {
		vm := &kubevirtv1.VirtualMachine{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "vm-1", Labels: labels},
			Spec: kubevirtv1.VirtualMachineSpec{RunStrategy: &always, Template: &kubevirtv1.VirtualMachineInstanceTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       kubevirtv1.VirtualMachineInstanceSpec{Domain: kubevirtv1.DomainSpec{Devices: kubevirtv1.Devices{}}},
			}},
		}
		statusRoundTrip(t, c, vm, func(v *kubevirtv1.VirtualMachine) {
			v.Status.Ready = true
			v.Status.PrintableStatus = kubevirtv1.VirtualMachineStatusRunning
		}, func(v *kubevirtv1.VirtualMachine) bool {
			return v.Status.Ready && v.Status.PrintableStatus == kubevirtv1.VirtualMachineStatusRunning
		})
	})
	t.Run("VirtualMachineInstance", func(t *testing.T) {
		vmi := &kubevirtv1.VirtualMachineInstance{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "vm-1", Labels: labels},
			Spec:       kubevirtv1.VirtualMachineInstanceSpec{Domain: kubevirtv1.DomainSpec{Devices: kubevirtv1.Devices{}}},
		}
		statusRoundTrip(t, c, vmi, func(v *kubevirtv1.VirtualMachineInstance) {
			v.Status.Phase = kubevirtv1.Running
			v.Status.NodeName = "infra-node-1"
			v.Status.Interfaces = []kubevirtv1.VirtualMachineInstanceNetworkInterface{{Name: "default", IP: "10.244.0.5", IPs: []string{"10.244.0.5", "fd00::5"}}}
			v.Status.VolumeStatus = []kubevirtv1.VolumeStatus{{Name: "pvc-1", Phase: kubevirtv1.VolumeReady, HotplugVolume: &kubevirtv1.HotplugVolumeStatus{}}}
		}, func(v *kubevirtv1.VirtualMachineInstance) bool {
			return v.Status.Phase == kubevirtv1.Running && len(v.Status.Interfaces) == 1 && len(v.Status.Interfaces[0].IPs) == 2 &&
				len(v.Status.VolumeStatus) == 1 && v.Status.VolumeStatus[0].Phase == kubevirtv1.VolumeReady
		})
	})
	t.Run("DataVolume", func(t *testing.T) {
		block := corev1.PersistentVolumeBlock
		sc := "linstor-replicated"
		dv := &cdiv1.DataVolume{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "dv-1", Labels: labels},
			Spec: cdiv1.DataVolumeSpec{
				Source: &cdiv1.DataVolumeSource{Blank: &cdiv1.DataVolumeBlankImage{}},
				Storage: &cdiv1.StorageSpec{
					AccessModes:      []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
					VolumeMode:       &block,
					StorageClassName: &sc,
					Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}},
				},
			},
		}
		statusRoundTrip(t, c, dv, func(d *cdiv1.DataVolume) {
			d.Status.Phase = cdiv1.Succeeded
			d.Status.Progress = "100.0%"
		}, func(d *cdiv1.DataVolume) bool {
			return d.Status.Phase == cdiv1.Succeeded && d.Status.Progress == "100.0%"
		})
	})
	t.Run("MachineDeployment", func(t *testing.T) {
		replicas := int32(2)
		sel := map[string]string{"cluster.x-k8s.io/deployment-name": "md-0"}
		md := &clusterv1.MachineDeployment{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "md-0", Labels: labels},
			Spec: clusterv1.MachineDeploymentSpec{
				ClusterName: "alpha",
				Replicas:    &replicas,
				Selector:    metav1.LabelSelector{MatchLabels: sel},
				Template: clusterv1.MachineTemplateSpec{
					ObjectMeta: clusterv1.ObjectMeta{Labels: sel},
					Spec: clusterv1.MachineSpec{
						ClusterName:       "alpha",
						Bootstrap:         clusterv1.Bootstrap{DataSecretName: ptr("bootstrap")},
						InfrastructureRef: clusterv1.ContractVersionedObjectReference{APIGroup: "infrastructure.cluster.x-k8s.io", Kind: "KubevirtMachineTemplate", Name: "md-0"},
					},
				},
			},
		}
		statusRoundTrip(t, c, md, func(m *clusterv1.MachineDeployment) {
			m.Status.Replicas = &replicas
			m.Status.Selector = "cluster.x-k8s.io/deployment-name=md-0"
		}, func(m *clusterv1.MachineDeployment) bool {
			return m.Status.Replicas != nil && *m.Status.Replicas == 2 && m.Status.Selector != ""
		})
		// The autoscaler provider changes replicas through /scale, so the CRD must serve it.
		scale := &unstructured.Unstructured{}
		scale.SetGroupVersionKind(clusterv1.GroupVersion.WithKind("Scale"))
		if err := c.SubResource("scale").Get(ctx, md, scale); err != nil {
			t.Fatalf("GET machinedeployments/scale: %v", err)
		}
		if got, _, _ := unstructured.NestedInt64(scale.Object, "spec", "replicas"); got != 2 {
			t.Fatalf("scale spec.replicas = %d, want 2", got)
		}
	})
	t.Run("IPAddressPool", func(t *testing.T) {
		pool := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
			"metadata": map[string]any{"namespace": ns, "name": "public"},
			"spec":     map[string]any{"addresses": []any{"192.0.2.0/28"}, "autoAssign": false},
		}}
		if err := c.Create(ctx, pool); err != nil {
			t.Fatalf("create IPAddressPool: %v", err)
		}
		got := &unstructured.Unstructured{}
		got.SetGroupVersionKind(pool.GroupVersionKind())
		if err := c.Get(ctx, client.ObjectKeyFromObject(pool), got); err != nil {
			t.Fatal(err)
		}
		if addrs, _, _ := unstructured.NestedStringSlice(got.Object, "spec", "addresses"); len(addrs) != 1 || addrs[0] != "192.0.2.0/28" {
			t.Fatalf("IPAddressPool addresses = %v", addrs)
		}
	})
}

func TestAddedUserHasNoRightsByDefault(t *testing.T) {
	u, err := env.Management.AddUser("system:serviceaccount:tenant-a:nobody")
	if err != nil {
		t.Fatal(err)
	}
	cl, err := client.New(u.Config, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	err = cl.List(ctxT(t), &corev1.SecretList{}, client.InNamespace("default"))
	if !apierrors.IsForbidden(err) {
		t.Fatalf("listing secrets as an unbound user: want Forbidden, got %v", err)
	}
}

func TestFrontProxyIsConfigured(t *testing.T) {
	var cm corev1.ConfigMap
	key := client.ObjectKey{Namespace: "kube-system", Name: "extension-apiserver-authentication"}
	err := wait.PollUntilContextTimeout(ctxT(t), 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		if err := env.Management.Client.Get(ctx, key, &cm); err != nil {
			return false, client.IgnoreNotFound(err)
		}
		return cm.Data["requestheader-client-ca-file"] != "", nil
	})
	if err != nil {
		t.Fatalf("aggregated API servers cannot learn the front-proxy CA: %v (data keys: %v)", err, keys(cm.Data))
	}
	if !strings.Contains(cm.Data["requestheader-allowed-names"], FrontProxyClientName) {
		t.Fatalf("requestheader-allowed-names = %q", cm.Data["requestheader-allowed-names"])
	}
}

func TestSchedulerBindsAndRefusesPods(t *testing.T) {
	ctx := ctxT(t)
	if _, err := env.StartScheduler(ctx); err != nil {
		t.Fatal(err)
	}
	c := env.Tenant.Client
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "worker-1"}}
	if err := c.Create(ctx, node); err != nil {
		t.Fatal(err)
	}
	capacity := corev1.ResourceList{
		corev1.ResourceCPU: resource.MustParse("2"), corev1.ResourceMemory: resource.MustParse("4Gi"), corev1.ResourcePods: resource.MustParse("110"),
	}
	node.Status = corev1.NodeStatus{
		Capacity: capacity, Allocatable: capacity,
		Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, LastHeartbeatTime: metav1.Now()}},
	}
	if err := c.Status().Update(ctx, node); err != nil {
		t.Fatal(err)
	}
	// Admission taints new Nodes not-ready; the node lifecycle controller, which the harness
	// does not run, lifts the taint once the Node reports Ready.
	node.Spec.Taints = nil
	if err := c.Update(ctx, node); err != nil {
		t.Fatal(err)
	}
	pod := func(name, cpu string) *corev1.Pod {
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "registry.invalid/pause",
				Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse(cpu)}}}}},
		}
	}
	fits, huge := pod("fits", "500m"), pod("huge", "64")
	for _, p := range []*corev1.Pod{fits, huge} {
		if err := c.Create(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		if err := c.Get(ctx, client.ObjectKeyFromObject(fits), fits); err != nil {
			return false, err
		}
		if err := c.Get(ctx, client.ObjectKeyFromObject(huge), huge); err != nil {
			return false, err
		}
		return fits.Spec.NodeName != "" && unschedulable(huge), nil
	})
	if err != nil {
		t.Fatalf("scheduler: fits bound to %q, huge conditions %+v: %v (log %s)", fits.Spec.NodeName, huge.Status.Conditions, err, env.schedulers[env.Tenant.Name].LogFile)
	}
	if fits.Spec.NodeName != "worker-1" || huge.Spec.NodeName != "" {
		t.Fatalf("fits on %q, huge on %q", fits.Spec.NodeName, huge.Spec.NodeName)
	}
	if msg := podScheduledMessage(huge); !strings.Contains(msg, "Insufficient cpu") {
		t.Fatalf("huge pod refused for the wrong reason: %q", msg)
	}
}

func unschedulable(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Reason == corev1.PodReasonUnschedulable {
			return true
		}
	}
	return false
}

func podScheduledMessage(p *corev1.Pod) string {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodScheduled {
			return c.Message
		}
	}
	return ""
}

func TestMissingAssetsSayWhatToDo(t *testing.T) {
	_, err := checkAssets(t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "run make bin") || !strings.Contains(err.Error(), "kube-apiserver") {
		t.Fatalf("want an error naming the missing binary and 'run make bin', got %v", err)
	}
}

func ptr[T any](v T) *T { return &v }

func keys(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

func TestControllerManagerCascadesAndSlices(t *testing.T) {
	ctx := ctxT(t)
	if _, err := env.StartControllerManager(ctx, env.Management, "garbagecollector", "endpointslice"); err != nil {
		t.Fatal(err)
	}
	c := env.Management.Client
	ns := "harness-kcm"
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	owner := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "owner"}}
	if err := c.Create(ctx, owner); err != nil {
		t.Fatal(err)
	}
	dependent := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "dependent",
		OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "ConfigMap", Name: owner.Name, UID: owner.UID}}}}
	if err := c.Create(ctx, dependent); err != nil {
		t.Fatal(err)
	}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web"}, Spec: corev1.ServiceSpec{
		Selector: map[string]string{"app": "web"}, Ports: []corev1.ServicePort{{Port: 80}}}}
	if err := c.Create(ctx, svc); err != nil {
		t.Fatal(err)
	}
	if err := c.Delete(ctx, owner); err != nil {
		t.Fatal(err)
	}
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		err := c.Get(ctx, client.ObjectKeyFromObject(dependent), &corev1.ConfigMap{})
		return apierrors.IsNotFound(err), client.IgnoreNotFound(err)
	})
	if err != nil {
		t.Fatalf("garbage collector did not delete the dependent: %v", err)
	}
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		var slices discoveryv1.EndpointSliceList
		if err := c.List(ctx, &slices, client.InNamespace(ns), client.MatchingLabels{discoveryv1.LabelServiceName: "web"}); err != nil {
			return false, err
		}
		return len(slices.Items) == 1, nil
	})
	if err != nil {
		t.Fatalf("endpointslice controller made no slice for the Service: %v", err)
	}
}

func TestAuditLogCountsRequests(t *testing.T) {
	ctx := ctxT(t)
	since := time.Now().Add(-time.Second)
	cfg := rest.CopyConfig(env.Tenant.Config)
	cfg.UserAgent = "audit-probe/1"
	cl, err := client.New(cfg, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := cl.List(ctx, &corev1.ConfigMapList{}, client.InNamespace("default")); err != nil {
			t.Fatal(err)
		}
	}
	if err := cl.Get(ctx, client.ObjectKey{Namespace: "default", Name: "absent"}, &corev1.ConfigMap{}); !apierrors.IsNotFound(err) {
		t.Fatalf("get absent: %v", err)
	}
	events, err := env.Tenant.AuditEvents(since, ByUserAgentPrefix("audit-probe/"))
	if err != nil {
		t.Fatal(err)
	}
	counts := CountByKey(events)
	resourceCalls := 0
	for _, e := range events {
		if e.ObjectRef != nil {
			resourceCalls++
		}
	}
	// The client's discovery (get /api, /apis) is real traffic and counted too, under its URI.
	if counts["list configmaps"] != 3 || counts["get configmaps"] != 1 || resourceCalls != 4 {
		t.Fatalf("audit counts = %s, want list configmaps=3, get configmaps=1 and no other resource calls", FormatCounts(counts))
	}
	if other, _ := env.Management.AuditEvents(since, ByUserAgentPrefix("audit-probe/")); len(other) != 0 {
		t.Fatalf("tenant requests appear in the management audit log: %d", len(other))
	}
}
