package loadbalancer

import (
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

func TestInfraPorts(t *testing.T) {
	tests := []struct {
		name       string
		ports      []corev1.ServicePort
		want       []corev1.ServicePort
		wantReason string
	}{
		{
			name: "protocols and names kept, targetPort is the NodePort",
			ports: []corev1.ServicePort{
				{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP, NodePort: 30080, TargetPort: intstr.FromString("web"), AppProtocol: ptr.To("http")},
				{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP, NodePort: 30053, TargetPort: intstr.FromInt32(5353)},
				{Name: "sig", Port: 3868, Protocol: corev1.ProtocolSCTP, NodePort: 31868},
			},
			want: []corev1.ServicePort{
				{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(30080)},
				{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP, TargetPort: intstr.FromInt32(30053)},
				{Name: "sig", Port: 3868, Protocol: corev1.ProtocolSCTP, TargetPort: intstr.FromInt32(31868)},
			},
		},
		{
			name:  "same port on TCP and UDP",
			ports: []corev1.ServicePort{{Name: "a", Port: 53, Protocol: corev1.ProtocolTCP, NodePort: 30001}, {Name: "b", Port: 53, Protocol: corev1.ProtocolUDP, NodePort: 30002}},
			want: []corev1.ServicePort{
				{Name: "a", Port: 53, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(30001)},
				{Name: "b", Port: 53, Protocol: corev1.ProtocolUDP, TargetPort: intstr.FromInt32(30002)},
			},
		},
		{name: "empty protocol is TCP", ports: []corev1.ServicePort{{Port: 80, NodePort: 30080}},
			want: []corev1.ServicePort{{Port: 80, Protocol: corev1.ProtocolTCP, TargetPort: intstr.FromInt32(30080)}}},
		{name: "no node port refused", ports: []corev1.ServicePort{{Port: 80, Protocol: corev1.ProtocolTCP}}, wantReason: ReasonInvalidRequest},
		{name: "no ports refused", wantReason: ReasonInvalidRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			svc := &corev1.Service{Spec: corev1.ServiceSpec{Ports: tt.ports}}
			got, err := InfraPorts(svc)
			if tt.wantReason != "" {
				if r, ok := AsRefusal(err); !ok || r.Reason != tt.wantReason {
					t.Fatalf("want refusal %s, got %v", tt.wantReason, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestEndpointPorts(t *testing.T) {
	svc := &corev1.Service{Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{
		{Name: "http", Port: 80, NodePort: 30080},
		{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP, NodePort: 30053},
	}}}
	want := []discoveryv1.EndpointPort{
		{Name: ptr.To("http"), Protocol: ptr.To(corev1.ProtocolTCP), Port: ptr.To[int32](30080)},
		{Name: ptr.To("dns"), Protocol: ptr.To(corev1.ProtocolUDP), Port: ptr.To[int32](30053)},
	}
	if got := EndpointPorts(svc); !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
}
