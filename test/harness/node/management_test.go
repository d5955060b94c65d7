package node_test

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcloud/tenantcloud/test/harness"
	"github.com/tenantcloud/tenantcloud/test/harness/node"
)

// TestManagementNode: a real node joins the management cluster (no cloud provider: it is
// Ready without a ccm), and a pod on it reaches what the management chart's pods need — the
// management apiserver through the kubernetes Service with its pod-bound ServiceAccount
// token, the same by the Service's DNS name (the node's cluster DNS), and the tenant
// apiserver at its advertised endpoint, the address a tenant kubeconfig Secret names,
// verified against the tenant CA.
func TestManagementNode(t *testing.T) {
	w := requireNodes(t)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("management kubelet:\n%s\nkube-proxy:\n%s", w.mgmt.Log("kubelet", 4000), w.mgmt.Log("kube-proxy", 2000))
		}
	})
	ctx := testCtx(t)
	t.Logf("management node Ready %s after start", w.mgmtReady.Round(time.Millisecond))
	n := &corev1.Node{}
	if err := env.Management.Client.Get(ctx, clientKey(mgmtNodeName), n); err != nil {
		t.Fatal(err)
	}
	if !node.Ready(n) || len(n.Spec.Taints) != 0 {
		t.Errorf("management Node: taints %v, conditions %v; want Ready and untainted", n.Spec.Taints, n.Status.Conditions)
	}
	if err := env.Tenant.Client.Get(ctx, clientKey(mgmtNodeName), &corev1.Node{}); client.IgnoreNotFound(err) != nil || err == nil {
		t.Errorf("the tenant has a Node %s (err %v); a management node joins the management cluster only", mgmtNodeName, err)
	}
	ns := createNamespaceIn(t, ctx, env.Management, "mgmt-probe")

	t.Run("management apiserver via the kubernetes Service", func(t *testing.T) {
		pod := runProbe(t, ctx, env.Management.Client, mgmtProbePod(ns, "via-service", nil))
		want := fmt.Sprintf("ok user=system:serviceaccount:%s:default pod-uid=%s via %s:443", ns, pod.UID, harness.ServiceIP)
		checkProbe(t, pod, want, w.mgmtCIDR)
	})
	t.Run("management apiserver via cluster DNS", func(t *testing.T) {
		const name = "kubernetes.default.svc." + node.ClusterDomain
		pod := runProbe(t, ctx, env.Management.Client, mgmtProbePod(ns, "via-dns", []corev1.EnvVar{
			{Name: "KUBERNETES_SERVICE_HOST", Value: name}, {Name: "KUBERNETES_SERVICE_PORT", Value: "443"},
		}))
		checkProbe(t, pod, fmt.Sprintf("ok user=system:serviceaccount:%s:default pod-uid=%s via %s:443", ns, pod.UID, name), w.mgmtCIDR)
	})
	t.Run("tenant apiserver at its advertised endpoint", func(t *testing.T) {
		endpoint := env.Tenant.AdvertisedEndpoint()
		if endpoint == "" {
			t.Fatal("the tenant apiserver has no advertised endpoint")
		}
		// A tenant ServiceAccount's token and the tenant CA, as a tenant kubeconfig Secret
		// carries them, mounted where the probe reads its credentials.
		sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "mgmt-probe"}}
		if err := env.Tenant.Client.Create(ctx, sa); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = env.Tenant.Client.Delete(context.Background(), sa) })
		tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](3600)}}
		if err := env.Tenant.Client.SubResource("token").Create(ctx, sa, tr); err != nil {
			t.Fatal(err)
		}
		secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "tenant-creds"},
			StringData: map[string]string{"token": tr.Status.Token, "ca.crt": string(env.Tenant.Config.CAData)}}
		if err := env.Management.Client.Create(ctx, secret); err != nil {
			t.Fatal(err)
		}
		host, port, _ := splitHostPort(t, endpoint)
		pod := mgmtProbePod(ns, "tenant", []corev1.EnvVar{{Name: "KUBERNETES_SERVICE_HOST", Value: host}, {Name: "KUBERNETES_SERVICE_PORT", Value: port}})
		pod.Spec.AutomountServiceAccountToken = ptr.To(false)
		pod.Spec.Volumes = []corev1.Volume{{Name: "tenant", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: secret.Name}}}}
		pod.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "tenant", MountPath: "/var/run/secrets/kubernetes.io/serviceaccount", ReadOnly: true}}
		pod = runProbe(t, ctx, env.Management.Client, pod)
		checkProbe(t, pod, "ok user=system:serviceaccount:default:mgmt-probe pod-uid= via "+endpoint, w.mgmtCIDR)
	})
}

func splitHostPort(t *testing.T, addr string) (string, string, error) {
	t.Helper()
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		t.Fatalf("endpoint %q: %v", addr, err)
	}
	return ap.Addr().String(), fmt.Sprint(ap.Port()), nil
}

func mgmtProbePod(ns, name string, env []corev1.EnvVar) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.PodSpec{
			RestartPolicy: corev1.RestartPolicyNever,
			// The simulator's infra Nodes (where its VMs "run") are schedulable too.
			NodeSelector: map[string]string{corev1.LabelHostname: mgmtNodeName},
			Containers:   []corev1.Container{{Name: "probe", Image: node.APIProbeImage, ImagePullPolicy: corev1.PullNever, Env: env}},
		},
	}
}

// runProbe creates pod and returns it once it finished.
func runProbe(t *testing.T, ctx context.Context, c client.Client, pod *corev1.Pod) *corev1.Pod {
	t.Helper()
	start := time.Now()
	if err := c.Create(ctx, pod); err != nil {
		t.Fatal(err)
	}
	err := harness.WaitFor(ctx, 2*time.Minute, func(ctx context.Context) (bool, error) {
		if err := c.Get(ctx, client.ObjectKeyFromObject(pod), pod); err != nil {
			return false, err
		}
		return pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed, nil
	})
	if err != nil {
		events := &corev1.EventList{}
		_ = c.List(ctx, events, client.InNamespace(pod.Namespace))
		var evs []string
		for _, e := range events.Items {
			if e.InvolvedObject.Name == pod.Name {
				evs = append(evs, e.Reason+": "+e.Message)
			}
		}
		t.Fatalf("probe pod %s to finish: %v\nnode %q, status %+v\nevents %v", pod.Name, err, pod.Spec.NodeName, pod.Status, evs)
	}
	t.Logf("probe pod %s: created → %s in %s", pod.Name, pod.Status.Phase, time.Since(start).Round(time.Millisecond))
	return pod
}

func checkProbe(t *testing.T, pod *corev1.Pod, want string, cidr netip.Prefix) {
	t.Helper()
	if pod.Spec.NodeName != mgmtNodeName {
		t.Errorf("pod ran on %q, want %s", pod.Spec.NodeName, mgmtNodeName)
	}
	if ip, err := netip.ParseAddr(pod.Status.PodIP); err != nil || !cidr.Contains(ip) {
		t.Errorf("pod IP %q not in the management node's pod network %s", pod.Status.PodIP, cidr)
	}
	if msg := terminationMessage(pod); pod.Status.Phase != corev1.PodSucceeded || msg != want {
		t.Errorf("probe: phase %s, message %q, want %q", pod.Status.Phase, msg, want)
	}
}

func createNamespaceIn(t *testing.T, ctx context.Context, c *harness.Cluster, prefix string) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: prefix + "-"}}
	if err := c.Client.Create(ctx, ns); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, ctx, time.Minute, "default ServiceAccount in "+ns.Name, func(ctx context.Context) (bool, error) {
		err := c.Client.Get(ctx, client.ObjectKey{Namespace: ns.Name, Name: "default"}, &corev1.ServiceAccount{})
		return err == nil, client.IgnoreNotFound(err)
	})
	t.Cleanup(func() { _ = c.Client.Delete(context.Background(), ns) })
	return ns.Name
}
