package virtapi

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"maps"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

var apiServiceGVK = schema.GroupVersionKind{Group: "apiregistration.k8s.io", Version: "v1", Kind: "APIService"}

// Labels upstream's virt-operator puts on the APIService, plus one saying who made it here.
var registrationLabels = map[string]string{
	"kubevirt.io":                  "virt-api-aggregator",
	"app.kubernetes.io/managed-by": "tenantcloud-sim",
}

// register creates the kubevirt namespace, the Service and the APIService, then waits until
// kube-apiserver both marks the APIService Available and proxies a discovery request to us.
func (s *Server) register(ctx context.Context, mgmt *rest.Config, port int32) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: s.opts.Namespace}}
	if err := s.client.Create(ctx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating namespace %s: %w", s.opts.Namespace, err)
	}
	// ExternalName "localhost": kube-apiserver refuses ClusterIP Services whose endpoints are
	// loopback addresses, but resolves an ExternalName Service to <name>:<port> and still
	// verifies the serving certificate as <service>.<namespace>.svc.
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: s.opts.Namespace, Name: s.opts.ServiceName}}
	if err := s.upsert(ctx, svc, func() {
		svc.Labels = maps.Clone(registrationLabels)
		svc.Spec = corev1.ServiceSpec{
			Type:         corev1.ServiceTypeExternalName,
			ExternalName: "localhost",
			Ports:        []corev1.ServicePort{{Name: "https", Protocol: corev1.ProtocolTCP, Port: port, TargetPort: intstr.FromInt32(port)}},
		}
	}); err != nil {
		return fmt.Errorf("registering Service %s/%s: %w", s.opts.Namespace, s.opts.ServiceName, err)
	}
	apiSvc := &unstructured.Unstructured{}
	apiSvc.SetGroupVersionKind(apiServiceGVK)
	apiSvc.SetName(APIServiceName)
	if err := s.upsert(ctx, apiSvc, func() {
		apiSvc.SetLabels(maps.Clone(registrationLabels))
		apiSvc.Object["spec"] = map[string]any{
			"group":   Group,
			"version": Version,
			"service": map[string]any{"namespace": s.opts.Namespace, "name": s.opts.ServiceName, "port": int64(port)},
			// The CA is the only thing that lets kube-apiserver trust this server.
			"caBundle": base64.StdEncoding.EncodeToString(s.caPEM),
			// Upstream virt-operator's priorities.
			"groupPriorityMinimum": int64(1000),
			"versionPriority":      int64(15),
		}
	}); err != nil {
		return fmt.Errorf("registering APIService %s: %w", APIServiceName, err)
	}
	return s.waitServed(ctx, mgmt)
}

// upsert creates obj after mutate, or updates the existing object with mutate applied: a
// previous run may have left a registration pointing at a dead port.
func (s *Server) upsert(ctx context.Context, obj client.Object, mutate func()) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		err := s.client.Get(ctx, client.ObjectKeyFromObject(obj), obj)
		if apierrors.IsNotFound(err) {
			mutate()
			return s.client.Create(ctx, obj)
		}
		if err != nil {
			return err
		}
		mutate()
		return s.client.Update(ctx, obj)
	})
}

// waitServed waits for the Available condition and for a discovery request through
// kube-apiserver to succeed: Available alone does not prove the proxy route is installed.
func (s *Server) waitServed(ctx context.Context, mgmt *rest.Config) error {
	dc, err := discovery.NewDiscoveryClientForConfig(mgmt)
	if err != nil {
		return fmt.Errorf("building discovery client: %w", err)
	}
	var last error
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, s.opts.AvailableTimeout, true, func(ctx context.Context) (bool, error) {
		if last = s.apiServiceAvailable(ctx); last != nil {
			return false, nil
		}
		list, err := dc.ServerResourcesForGroupVersion(GroupVersion)
		if err != nil {
			last = fmt.Errorf("discovery through kube-apiserver: %w", err)
			return false, nil
		}
		if len(list.APIResources) != len(apiResources) {
			last = fmt.Errorf("discovery through kube-apiserver lists %d resources, want %d", len(list.APIResources), len(apiResources))
			return false, nil
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("APIService %s not served within %s: %w (last: %v)", APIServiceName, s.opts.AvailableTimeout, err, last)
	}
	return nil
}

func (s *Server) apiServiceAvailable(ctx context.Context) error {
	obj := &unstructured.Unstructured{}
	obj.SetGroupVersionKind(apiServiceGVK)
	if err := s.client.Get(ctx, client.ObjectKey{Name: APIServiceName}, obj); err != nil {
		return err
	}
	conds, _, _ := unstructured.NestedSlice(obj.Object, "status", "conditions")
	for _, c := range conds {
		cond, _ := c.(map[string]any)
		if cond["type"] == "Available" {
			if cond["status"] == "True" {
				return nil
			}
			return fmt.Errorf("APIService Available=%v: %v: %v", cond["status"], cond["reason"], cond["message"])
		}
	}
	return errors.New("APIService has no Available condition yet")
}

// deregister deletes the APIService and Service (not the namespace, which others may use).
func (s *Server) deregister(ctx context.Context) error {
	apiSvc := &unstructured.Unstructured{}
	apiSvc.SetGroupVersionKind(apiServiceGVK)
	apiSvc.SetName(APIServiceName)
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: s.opts.Namespace, Name: s.opts.ServiceName}}
	var errs []error
	for _, obj := range []client.Object{apiSvc, svc} {
		if err := s.client.Delete(ctx, obj); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("virt-api: deregistering %s: %w", obj.GetName(), err))
		}
	}
	return errors.Join(errs...)
}
