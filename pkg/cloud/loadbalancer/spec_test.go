package loadbalancer

import (
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

func tenantSvc(mut func(*corev1.Service)) *corev1.Service {
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web", UID: "0b6c3f2e-8d1a-4c4e-9f1e-2a3b4c5d6e7f"},
		Spec: corev1.ServiceSpec{
			Type:                  corev1.ServiceTypeLoadBalancer,
			Ports:                 []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP, NodePort: 30080}},
			ExternalTrafficPolicy: corev1.ServiceExternalTrafficPolicyCluster,
			IPFamilyPolicy:        ptr.To(corev1.IPFamilyPolicySingleStack),
			IPFamilies:            []corev1.IPFamily{corev1.IPv4Protocol},
			SessionAffinity:       corev1.ServiceAffinityNone,
		},
	}
	if mut != nil {
		mut(s)
	}
	return s
}

func TestDesiredService(t *testing.T) {
	p := testPolicy()
	t.Run("cluster traffic policy", func(t *testing.T) {
		got, err := DesiredService(tenantSvc(func(s *corev1.Service) {
			s.Spec.ExternalIPs = []string{"203.0.113.9"}
			s.Spec.HealthCheckNodePort = 31000
			s.Spec.LoadBalancerClass = nil
			s.Spec.LoadBalancerSourceRanges = []string{"198.51.100.0/24", "10.0.0.0/8"}
			s.Annotations = map[string]string{"foo": "bar", AnnAllowSharedIP: "k"}
		}), p)
		if err != nil {
			t.Fatal(err)
		}
		if got.Name != "tc-lb-0b6c3f2e8d1a4c4e9f1e2a3b4c5d6e7f" || got.Namespace != "tenant-a" {
			t.Fatalf("name %s/%s", got.Namespace, got.Name)
		}
		wantLabels := map[string]string{
			"cluster.x-k8s.io/cluster-name": "alpha", "app.kubernetes.io/managed-by": "tenantcloud", "tenantcloud.io/component": "ccm",
			LabelServiceNamespace: "shop", LabelServiceName: "web", LabelServiceUID: "0b6c3f2e-8d1a-4c4e-9f1e-2a3b4c5d6e7f",
		}
		if !reflect.DeepEqual(got.Labels, wantLabels) {
			t.Errorf("labels %v", got.Labels)
		}
		wantAnn := map[string]string{"tenantcloud.io/cluster": "alpha", AnnAddressPool: "public", AnnAllowSharedIP: "tenant-a.alpha.k"}
		if !reflect.DeepEqual(got.Annotations, wantAnn) {
			t.Errorf("annotations %v", got.Annotations)
		}
		if !p.Scope.Owns(got) {
			t.Error("desired Service does not pass Owns")
		}
		s := got.Spec
		if len(s.ExternalIPs) != 0 || s.HealthCheckNodePort != 0 || s.LoadBalancerIP != "" || s.LoadBalancerClass != nil {
			t.Errorf("copied forbidden fields: %+v", s)
		}
		if !reflect.DeepEqual(s.Selector, map[string]string{"cluster.x-k8s.io/cluster-name": "alpha", "cluster.x-k8s.io/role": "worker", "kubevirt.io": "virt-launcher"}) {
			t.Errorf("selector %v", s.Selector)
		}
		if s.ExternalTrafficPolicy != corev1.ServiceExternalTrafficPolicyCluster || ptr.Deref(s.AllocateLoadBalancerNodePorts, true) {
			t.Errorf("policy %s allocate %v", s.ExternalTrafficPolicy, s.AllocateLoadBalancerNodePorts)
		}
		if !reflect.DeepEqual(s.LoadBalancerSourceRanges, []string{"10.0.0.0/8", "198.51.100.0/24"}) {
			t.Errorf("source ranges %v", s.LoadBalancerSourceRanges)
		}
		if !reflect.DeepEqual(s.Ports, []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(30080)}}) {
			t.Errorf("ports %v", s.Ports)
		}
	})
	t.Run("local traffic policy is selectorless", func(t *testing.T) {
		got, err := DesiredService(tenantSvc(func(s *corev1.Service) {
			s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
			s.Spec.HealthCheckNodePort = 32000
		}), p)
		if err != nil {
			t.Fatal(err)
		}
		if got.Spec.Selector != nil || got.Spec.ExternalTrafficPolicy != corev1.ServiceExternalTrafficPolicyLocal || got.Spec.HealthCheckNodePort != 0 {
			t.Fatalf("spec %+v", got.Spec)
		}
	})
	t.Run("legacy source-range annotation", func(t *testing.T) {
		got, err := DesiredService(tenantSvc(func(s *corev1.Service) {
			s.Annotations = map[string]string{"service.beta.kubernetes.io/load-balancer-source-ranges": "192.168.0.0/16"}
		}), p)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got.Spec.LoadBalancerSourceRanges, []string{"192.168.0.0/16"}) {
			t.Fatalf("ranges %v", got.Spec.LoadBalancerSourceRanges)
		}
		if _, ok := got.Annotations["service.beta.kubernetes.io/load-balancer-source-ranges"]; ok {
			t.Fatal("annotation copied")
		}
	})
	t.Run("bad source range refused", func(t *testing.T) {
		_, err := DesiredService(tenantSvc(func(s *corev1.Service) { s.Spec.LoadBalancerSourceRanges = []string{"nope"} }), p)
		if _, ok := AsRefusal(err); !ok {
			t.Fatalf("want refusal, got %v", err)
		}
	})
	t.Run("session affinity", func(t *testing.T) {
		cfg := &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: ptr.To[int32](60)}}
		got, err := DesiredService(tenantSvc(func(s *corev1.Service) {
			s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
			s.Spec.SessionAffinityConfig = cfg
		}), p)
		if err != nil {
			t.Fatal(err)
		}
		if got.Spec.SessionAffinity != corev1.ServiceAffinityClientIP || !reflect.DeepEqual(got.Spec.SessionAffinityConfig, cfg) {
			t.Fatalf("affinity %v %v", got.Spec.SessionAffinity, got.Spec.SessionAffinityConfig)
		}
	})
}

func TestMerge(t *testing.T) {
	p := testPolicy()
	desired, err := DesiredService(tenantSvc(nil), p)
	if err != nil {
		t.Fatal(err)
	}
	existing := desired.DeepCopy()
	existing.UID = "infra-uid"
	existing.Spec.ClusterIP = "10.0.0.10"
	existing.Spec.ClusterIPs = []string{"10.0.0.10"}
	existing.Annotations["metallb.io/ip-allocated-from-pool"] = "public"
	existing.Labels["operator"] = "keep"
	existing.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "192.0.2.1"}}

	if _, changed := Merge(existing, desired); changed {
		t.Fatal("no-op merge reported a change")
	}

	// A full re-sync: ports, traffic policy, affinity, ranges and annotations all follow.
	upd, err := DesiredService(tenantSvc(func(s *corev1.Service) {
		s.Spec.Ports = append(s.Spec.Ports, corev1.ServicePort{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP, NodePort: 30053})
		s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
		s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
		s.Spec.LoadBalancerSourceRanges = []string{"10.0.0.0/8"}
		s.Annotations = map[string]string{AnnAddressPool: "internal"}
	}), p)
	if err != nil {
		t.Fatal(err)
	}
	existing.Annotations[AnnLoadBalancerIPs] = "192.0.2.1" // from an earlier request, now withdrawn
	got, changed := Merge(existing, upd)
	if !changed {
		t.Fatal("change not detected")
	}
	if got.Spec.ClusterIP != "10.0.0.10" || got.Status.LoadBalancer.Ingress[0].IP != "192.0.2.1" {
		t.Error("server-owned fields lost")
	}
	if got.Annotations["metallb.io/ip-allocated-from-pool"] != "public" || got.Labels["operator"] != "keep" {
		t.Error("foreign metadata lost")
	}
	if got.Annotations[AnnAddressPool] != "internal" {
		t.Errorf("pool %q", got.Annotations[AnnAddressPool])
	}
	if _, ok := got.Annotations[AnnLoadBalancerIPs]; ok {
		t.Error("withdrawn loadBalancerIPs annotation kept")
	}
	if len(got.Spec.Ports) != 2 || got.Spec.Selector != nil || got.Spec.ExternalTrafficPolicy != corev1.ServiceExternalTrafficPolicyLocal ||
		got.Spec.SessionAffinity != corev1.ServiceAffinityClientIP || !reflect.DeepEqual(got.Spec.LoadBalancerSourceRanges, []string{"10.0.0.0/8"}) {
		t.Errorf("spec not re-synced: %+v", got.Spec)
	}

	// Back to Cluster: the infra health-check node port must be released.
	got.Spec.HealthCheckNodePort = 31111
	back, _ := Merge(got, desired)
	if back.Spec.HealthCheckNodePort != 0 || back.Spec.Selector == nil {
		t.Errorf("ETP Cluster: hc %d selector %v", back.Spec.HealthCheckNodePort, back.Spec.Selector)
	}
}

func TestMergeKeepsInfraNodePorts(t *testing.T) {
	existing := []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP, NodePort: 31234, TargetPort: intstr.FromInt32(30080)}}
	desired := []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(30081)}}
	got := mergePorts(existing, desired)
	if got[0].NodePort != 31234 || got[0].TargetPort.IntVal != 30081 {
		t.Fatalf("got %+v", got)
	}
}
