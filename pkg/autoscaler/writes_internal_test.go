package autoscaler

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"

	autoscalingv1 "k8s.io/api/autoscaling/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/autoscaler/cluster-autoscaler/cloudprovider/externalgrpc/protos"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/tenantcloud/tenantcloud/pkg/infra"
)

// scaleServer plays the /scale subresource of one MachineDeployment with resourceVersion
// preconditions, and lets a test change replicas behind the provider's back.
type scaleServer struct {
	mu       sync.Mutex
	replicas int32
	rv       int
	updates  int
	// interfere runs before the first update is applied, as a concurrent writer would.
	interfere func(s *scaleServer)
}

func (s *scaleServer) get(_ context.Context, _ client.Client, _ string, _ client.Object, sub client.Object, _ ...client.SubResourceGetOption) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	sc := sub.(*autoscalingv1.Scale)
	sc.ResourceVersion = strconv.Itoa(s.rv)
	sc.Spec.Replicas = s.replicas
	return nil
}

func (s *scaleServer) update(ctx context.Context, c client.Client, _ string, obj client.Object, opts ...client.SubResourceUpdateOption) error {
	s.mu.Lock()
	if s.updates == 0 && s.interfere != nil {
		s.interfere(s)
	}
	s.updates++
	o := &client.SubResourceUpdateOptions{}
	o.ApplyOptions(opts)
	sc := o.SubResourceBody.(*autoscalingv1.Scale)
	if sc.ResourceVersion != strconv.Itoa(s.rv) {
		s.mu.Unlock()
		return apierrors.NewConflict(schema.GroupResource{Group: "cluster.x-k8s.io", Resource: "machinedeployments"}, obj.GetName(), nil)
	}
	s.replicas, s.rv = sc.Spec.Replicas, s.rv+1
	replicas := s.replicas
	s.mu.Unlock()
	// Mirror the write into the object the "cache" serves.
	md := &clusterv1.MachineDeployment{}
	if err := c.Get(ctx, client.ObjectKeyFromObject(obj), md); err != nil {
		return err
	}
	md.Spec.Replicas = &replicas
	return c.Update(ctx, md)
}

func newScaleProvider(t *testing.T, s *scaleServer) (*Provider, *clusterv1.MachineDeployment) {
	t.Helper()
	scheme, err := infra.NewScheme()
	if err != nil {
		t.Fatal(err)
	}
	scope := infra.Scope{Namespace: "tenant-a", ClusterName: "alpha"}
	md := &clusterv1.MachineDeployment{ObjectMeta: metav1.ObjectMeta{Namespace: scope.Namespace, Name: "workers",
		Labels: map[string]string{infra.LabelClusterName: scope.ClusterName}}}
	md.Spec.Replicas = &s.replicas
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(md.DeepCopy()).
		WithInterceptorFuncs(interceptor.Funcs{SubResourceGet: s.get, SubResourceUpdate: s.update}).Build()
	p := &Provider{scope: scope, infra: readerInfra(scope, c), view: &view{infra: c}, cacheWait: 5 * time.Second}
	return p, md
}

// TestUpdateScaleRetriesOnConflict: a write that lost a race re-reads and decides again from
// the new value instead of overwriting it.
func TestUpdateScaleRetriesOnConflict(t *testing.T) {
	s := &scaleServer{replicas: 5, rv: 1, interfere: func(s *scaleServer) { s.replicas, s.rv = 8, s.rv+1 }}
	p, md := newScaleProvider(t, s)
	from, to, err := p.updateScale(context.Background(), md, nil, func(cur int32) (int32, error) { return cur - 2, nil })
	if err != nil {
		t.Fatal(err)
	}
	if from != 8 || to != 6 || s.replicas != 6 || s.updates != 2 {
		t.Fatalf("from %d to %d, server replicas %d after %d updates; want 8 → 6 after 2", from, to, s.replicas, s.updates)
	}
}

// TestUpdateScaleUsesFreshReadOnce: the caller's own fresh read is used for the first attempt
// only; after a conflict the value is read again.
func TestUpdateScaleUsesFreshReadOnce(t *testing.T) {
	s := &scaleServer{replicas: 5, rv: 1, interfere: func(s *scaleServer) { s.replicas, s.rv = 4, s.rv+1 }}
	p, md := newScaleProvider(t, s)
	fresh := &autoscalingv1.Scale{ObjectMeta: metav1.ObjectMeta{ResourceVersion: "1"}, Spec: autoscalingv1.ScaleSpec{Replicas: 5}}
	var seen []int32
	_, to, err := p.updateScale(context.Background(), md, fresh, func(cur int32) (int32, error) {
		seen = append(seen, cur)
		return cur + 1, nil
	})
	if err != nil || to != 5 || len(seen) != 2 || seen[0] != 5 || seen[1] != 4 {
		t.Fatalf("to %d, decided on %v, %v; want 5 from [5 4]", to, seen, err)
	}
}

// TestUpdateScaleRefusalWritesNothing: decide's error aborts before any write.
func TestUpdateScaleRefusalWritesNothing(t *testing.T) {
	s := &scaleServer{replicas: 3, rv: 1}
	p, md := newScaleProvider(t, s)
	b := Bounds{Min: 3, Max: 5}
	if _, _, err := p.updateScale(context.Background(), md, nil, func(cur int32) (int32, error) {
		return b.DeleteTarget(cur, 1)
	}); err == nil || s.updates != 0 {
		t.Fatalf("err %v after %d updates; want a refusal and no write", err, s.updates)
	}
}

// builderIndexer registers the provider's indexes on a fake client builder.
type builderIndexer struct{ b *fake.ClientBuilder }

func (i builderIndexer) IndexField(_ context.Context, obj client.Object, field string, extract client.IndexerFunc) error {
	i.b.WithIndex(obj, field, extract)
	return nil
}

// TestDeleteNodesRollsBackMarks: when the /scale write fails after the Machines were marked,
// the marks are taken off again, so a retry is not mistaken for a repeat and skipped.
func TestDeleteNodesRollsBackMarks(t *testing.T) {
	scope := infra.Scope{Namespace: "tenant-a", ClusterName: "alpha"}
	scheme, err := infra.NewScheme()
	if err != nil {
		t.Fatal(err)
	}
	lbl := map[string]string{infra.LabelClusterName: "alpha"}
	md := &clusterv1.MachineDeployment{ObjectMeta: metav1.ObjectMeta{Namespace: scope.Namespace, Name: "workers", UID: "md-uid",
		Labels: lbl, Annotations: map[string]string{AnnotationMinSize: "0", AnnotationMaxSize: "5"}}}
	md.Spec.ClusterName, md.Spec.Replicas = "alpha", ptrTo(int32(2))
	ctrl := func(kind, name, uid string) []metav1.OwnerReference {
		return []metav1.OwnerReference{{APIVersion: clusterv1.GroupVersion.String(), Kind: kind, Name: name,
			UID: types.UID(uid), Controller: ptrTo(true)}}
	}
	ms := &clusterv1.MachineSet{ObjectMeta: metav1.ObjectMeta{Namespace: scope.Namespace, Name: "workers-abc", UID: "ms-uid",
		Labels: lbl, OwnerReferences: ctrl("MachineDeployment", "workers", "md-uid")}}
	ms.Spec.ClusterName = "alpha"
	m := &clusterv1.Machine{ObjectMeta: metav1.ObjectMeta{Namespace: scope.Namespace, Name: "m1", UID: "m1-uid",
		Labels: lbl, OwnerReferences: ctrl("MachineSet", "workers-abc", "ms-uid")}}
	m.Spec.ClusterName, m.Spec.ProviderID = "alpha", "kubevirt://vm-1"

	b := fake.NewClientBuilder().WithScheme(scheme).WithObjects(md, ms, m)
	if err := registerInfraIndexes(context.Background(), builderIndexer{b}); err != nil {
		t.Fatal(err)
	}
	s := &scaleServer{replicas: 2, rv: 1}
	c := b.WithInterceptorFuncs(interceptor.Funcs{
		SubResourceGet: s.get,
		SubResourceUpdate: func(context.Context, client.Client, string, client.Object, ...client.SubResourceUpdateOption) error {
			return apierrors.NewInternalError(errors.New("etcd is unhappy"))
		},
	}).Build()
	p := &Provider{scope: scope, infra: readerInfra(scope, c), view: newView(scope, nil, c, nil), cacheWait: time.Second}

	_, err = p.NodeGroupDeleteNodes(context.Background(), &protos.NodeGroupDeleteNodesRequest{Id: GroupID(scope.Namespace, "workers"),
		Nodes: []*protos.ExternalGrpcNode{{ProviderID: "kubevirt://vm-1", Name: "vm-1"}}})
	if err == nil {
		t.Fatal("want the scale failure")
	}
	cur := &clusterv1.Machine{}
	if err := c.Get(context.Background(), client.ObjectKeyFromObject(m), cur); err != nil {
		t.Fatal(err)
	}
	if len(cur.Annotations) != 0 || p.marked(cur) {
		t.Fatalf("marks left after a failed scale write: %v", cur.Annotations)
	}
}

// readerInfra is an infra client over c (reads and writes), as the unit tests give the
// provider; c must hold only the scope's objects or the lookups' own checks are the guard.
func readerInfra(scope infra.Scope, c client.Client) *infra.Client {
	ic, err := infra.NewWithReader(scope, c, c)
	if err != nil {
		panic(err) // a test's scope is valid
	}
	return ic
}
