package loadbalancer

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	servicehelper "k8s.io/cloud-provider/service/helpers"
	"k8s.io/klog/v2"
)

// statusSync copies the infra Service's load-balancer status to the tenant Service as soon as
// the infra informer delivers it (see the package documentation). It never lists or polls:
// its inputs are the infra Service informer and the tenant Service informer, its only API call
// a PATCH of the tenant Service's status subresource when the two differ.
type statusSync struct {
	b *Balancer
	q *queue
}

func newStatusSync(b *Balancer) *statusSync {
	s := &statusSync{b: b}
	s.q = newQueue("lb-status", s.sync)
	return s
}

func (s *statusSync) run(ctx context.Context, workers int) { s.q.run(ctx, workers) }

// infraServiceHandler enqueues the tenant Service behind an owned infra Service whenever the
// infra Service appears, its status changes, or it goes away.
func (s *statusSync) infraServiceHandler() toolscache.ResourceEventHandler {
	return toolscache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			if o := objectOf(obj); o != nil {
				s.b.observed(o.GetName())
				if key, ok := s.b.tenantKey(o); ok {
					s.q.add(key)
				}
			}
		},
		UpdateFunc: func(oldObj, newObj any) {
			o, ok1 := oldObj.(*corev1.Service)
			n, ok2 := newObj.(*corev1.Service)
			if !ok1 || !ok2 || servicehelper.LoadBalancerStatusEqual(&o.Status.LoadBalancer, &n.Status.LoadBalancer) {
				return
			}
			if key, ok := s.b.tenantKey(n); ok {
				s.q.add(key)
			}
		},
		DeleteFunc: func(obj any) {
			if o := objectOf(obj); o != nil {
				s.b.observed(o.GetName())
				s.b.released()
				if key, ok := s.b.tenantKey(o); ok {
					s.q.add(key)
				}
			}
		},
	}
}

// tenantServiceHandler re-checks a tenant Service when it appears (so a restart repairs any
// status that drifted while the CCM was down) or when its status is changed by someone else.
func (s *statusSync) tenantServiceHandler() toolscache.ResourceEventHandler {
	return toolscache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			if svc, ok := obj.(*corev1.Service); ok && s.b.Wants(svc) {
				s.q.add(keyOf(svc))
			}
		},
		UpdateFunc: func(oldObj, newObj any) {
			o, ok1 := oldObj.(*corev1.Service)
			n, ok2 := newObj.(*corev1.Service)
			if !ok1 || !ok2 || !s.b.Wants(n) {
				return
			}
			if !servicehelper.LoadBalancerStatusEqual(&o.Status.LoadBalancer, &n.Status.LoadBalancer) || o.UID != n.UID {
				s.q.add(keyOf(n))
			}
		},
	}
}

func (s *statusSync) sync(ctx context.Context, key types.NamespacedName) error {
	t := s.b.tenantView()
	svc, err := t.services.Services(key.Namespace).Get(key.Name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if !s.b.Wants(svc) || svc.DeletionTimestamp != nil {
		return nil // the deletion path clears the status
	}
	infraSvc, err := s.b.infraService(ctx, svc)
	if apierrors.IsNotFound(err) {
		return nil // not created yet, or refused: nothing to report
	}
	if err != nil {
		return err
	}
	want := Ingress(infraSvc.Status.LoadBalancer, svc)
	if servicehelper.LoadBalancerStatusEqual(&svc.Status.LoadBalancer, &want) {
		return nil
	}
	if err := patchStatus(ctx, t, svc, want); err != nil {
		return err
	}
	klog.FromContext(ctx).V(2).Info("Tenant load-balancer status updated from infra", "service", key, "ingress", want.Ingress)
	if len(want.Ingress) > 0 {
		// The upstream controller's EnsuredLoadBalancer Event comes before MetalLB has chosen an
		// address; this one tells the tenant which address the Service got and when.
		t.recorder.Eventf(svc, corev1.EventTypeNormal, ReasonIPAssigned, "load balancer address %s assigned", ingressIPs(want))
	}
	return nil
}

// ReasonIPAssigned is the Event reason on a tenant Service whose address arrived from the
// infra cluster.
const ReasonIPAssigned = "IPAssigned"

func ingressIPs(st corev1.LoadBalancerStatus) string {
	ips := make([]string, 0, len(st.Ingress))
	for _, in := range st.Ingress {
		if in.IP != "" {
			ips = append(ips, in.IP)
		} else {
			ips = append(ips, in.Hostname)
		}
	}
	return strings.Join(ips, ", ")
}

// patchStatus sets status.loadBalancer of svc with a merge patch on the status subresource.
// The UID in the patch makes the apiserver refuse it for a re-created Service of the same
// name; an explicit null clears the ingress list.
func patchStatus(ctx context.Context, t *tenantView, svc *corev1.Service, st corev1.LoadBalancerStatus) error {
	var ingress any
	if len(st.Ingress) > 0 {
		ingress = st.Ingress
	}
	body, err := json.Marshal(map[string]any{
		"metadata": map[string]any{"uid": svc.UID},
		"status":   map[string]any{"loadBalancer": map[string]any{"ingress": ingress}},
	})
	if err != nil {
		return fmt.Errorf("encoding status patch: %w", err)
	}
	_, err = t.client.CoreV1().Services(svc.Namespace).Patch(ctx, svc.Name, types.MergePatchType, body, metav1.PatchOptions{}, "status")
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("patching status of tenant Service %s/%s: %w", svc.Namespace, svc.Name, err)
	}
	return nil
}
