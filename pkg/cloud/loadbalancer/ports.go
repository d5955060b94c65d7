package loadbalancer

import (
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

// InfraPorts maps the tenant Service's ports onto the infra Service: the infra port is the
// tenant port (what clients connect to on the LB address) and the target port is the tenant
// NodePort (what every tenant node, i.e. every VM, listens on). Names and protocols (TCP, UDP,
// SCTP) are kept; appProtocol and the tenant's own node ports are tenant-cluster details and
// are not copied. A port without a NodePort (allocateLoadBalancerNodePorts=false) cannot be
// reached through a VM and is refused.
func InfraPorts(svc *corev1.Service) ([]corev1.ServicePort, error) {
	if len(svc.Spec.Ports) == 0 {
		return nil, refuse(ReasonInvalidRequest, "the Service has no ports")
	}
	out := make([]corev1.ServicePort, 0, len(svc.Spec.Ports))
	for _, p := range svc.Spec.Ports {
		if p.NodePort == 0 {
			return nil, refuse(ReasonInvalidRequest,
				"port %d/%s has no node port; load balancers reach the cluster through node ports (allocateLoadBalancerNodePorts must not be false)", p.Port, protocol(p))
		}
		out = append(out, corev1.ServicePort{
			Name:       p.Name,
			Protocol:   protocol(p),
			Port:       p.Port,
			TargetPort: intstr.FromInt32(p.NodePort),
		})
	}
	return out, nil
}

// EndpointPorts are the ports of the infra EndpointSlices of a selectorless (ETP=Local) infra
// Service: by service port name, the tenant NodePort on the VM.
func EndpointPorts(svc *corev1.Service) []discoveryv1.EndpointPort {
	out := make([]discoveryv1.EndpointPort, 0, len(svc.Spec.Ports))
	for _, p := range svc.Spec.Ports {
		if p.NodePort == 0 {
			continue
		}
		out = append(out, discoveryv1.EndpointPort{
			Name:     ptr.To(p.Name),
			Protocol: ptr.To(protocol(p)),
			Port:     ptr.To(p.NodePort),
		})
	}
	return out
}

// protocol defaults an empty protocol to TCP as the apiserver does.
func protocol(p corev1.ServicePort) corev1.Protocol {
	if p.Protocol == "" {
		return corev1.ProtocolTCP
	}
	return p.Protocol
}
