package metallb

import (
	"context"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// waitTimeout bounds every wait for the controller; it normally answers in milliseconds.
const waitTimeout = 30 * time.Second

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// pool creates a metallb.io/v1beta1 IPAddressPool in the controller's namespace.
func pool(t *testing.T, name string, autoAssign bool, addresses ...string) {
	t.Helper()
	addrs := make([]any, len(addresses))
	for i, a := range addresses {
		addrs[i] = a
	}
	p := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
		"metadata": map[string]any{"namespace": DefaultNamespace, "name": name},
		"spec":     map[string]any{"addresses": addrs, "autoAssign": autoAssign},
	}}
	if err := env.Management.Client.Create(testCtx(t), p); err != nil {
		t.Fatalf("creating IPAddressPool %s: %v", name, err)
	}
}

func namespace(t *testing.T, name string) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := env.Management.Client.Create(testCtx(t), ns); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	return name
}

// lbService creates a Service of type LoadBalancer with one TCP port per entry of ports.
func lbService(t *testing.T, ns, name string, annotations map[string]string, ports ...int32) *corev1.Service {
	t.Helper()
	if len(ports) == 0 {
		ports = []int32{80}
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Annotations: annotations},
		Spec: corev1.ServiceSpec{
			Type:     corev1.ServiceTypeLoadBalancer,
			Selector: map[string]string{"app": name},
		},
	}
	for _, p := range ports {
		svc.Spec.Ports = append(svc.Spec.Ports, corev1.ServicePort{
			Name: "p" + strconv.Itoa(int(p)), Port: p, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(p),
		})
	}
	if err := env.Management.Client.Create(testCtx(t), svc); err != nil {
		t.Fatalf("creating Service %s/%s: %v", ns, name, err)
	}
	return svc
}

// waitForIP waits until the Service has a load-balancer IP and returns it with the time it
// took since the call.
func waitForIP(t *testing.T, svc *corev1.Service) (netip.Addr, time.Duration) {
	t.Helper()
	start := time.Now()
	var ip netip.Addr
	err := wait.PollUntilContextTimeout(testCtx(t), 20*time.Millisecond, waitTimeout, true, func(ctx context.Context) (bool, error) {
		got := &corev1.Service{}
		if err := env.Management.Client.Get(ctx, client.ObjectKeyFromObject(svc), got); err != nil {
			return false, err
		}
		for _, ing := range got.Status.LoadBalancer.Ingress {
			if a, err := netip.ParseAddr(ing.IP); err == nil {
				ip = a
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("Service %s/%s got no load-balancer IP: %v\n%s", svc.Namespace, svc.Name, err, eventsOf(t, svc))
	}
	return ip, time.Since(start)
}

// waitForEvent waits for an Event of reason on the Service and returns its message.
func waitForEvent(t *testing.T, svc *corev1.Service, reason string) string {
	t.Helper()
	var msg string
	err := wait.PollUntilContextTimeout(testCtx(t), 50*time.Millisecond, waitTimeout, true, func(ctx context.Context) (bool, error) {
		for _, e := range listEvents(ctx, t, svc) {
			if e.Reason == reason {
				msg = e.Message
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("no %s event on Service %s/%s: %v\n%s", reason, svc.Namespace, svc.Name, err, eventsOf(t, svc))
	}
	return msg
}

func listEvents(ctx context.Context, t *testing.T, svc *corev1.Service) []corev1.Event {
	t.Helper()
	var list corev1.EventList
	if err := env.Management.Client.List(ctx, &list, client.InNamespace(svc.Namespace),
		client.MatchingFields{"involvedObject.name": svc.Name, "involvedObject.kind": "Service"}); err != nil {
		t.Fatalf("listing events: %v", err)
	}
	return list.Items
}

func eventsOf(t *testing.T, svc *corev1.Service) string {
	var b strings.Builder
	for _, e := range listEvents(context.Background(), t, svc) {
		b.WriteString("  event " + e.Type + " " + e.Reason + ": " + e.Message + "\n")
	}
	return b.String()
}

// currentIngress reads the Service's status now.
func currentIngress(t *testing.T, svc *corev1.Service) []corev1.LoadBalancerIngress {
	t.Helper()
	got := &corev1.Service{}
	if err := env.Management.Client.Get(testCtx(t), client.ObjectKeyFromObject(svc), got); err != nil {
		t.Fatal(err)
	}
	return got.Status.LoadBalancer.Ingress
}

func annotation(t *testing.T, svc *corev1.Service, key string) string {
	t.Helper()
	got := &corev1.Service{}
	if err := env.Management.Client.Get(testCtx(t), client.ObjectKeyFromObject(svc), got); err != nil {
		t.Fatal(err)
	}
	return got.Annotations[key]
}

func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }

// dumpLogOnFailure prints the controller's log tail when the test failed.
func dumpLogOnFailure(t *testing.T, c *Controller) {
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("metallb-controller log (tail):\n%s", tail(c.LogFile(), 6000))
		}
	})
}
