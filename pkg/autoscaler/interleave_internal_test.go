package autoscaler

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
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

var interleavings = flag.Int("interleavings", 8, "random DeleteNodes interleavings TestDeleteNodesInterleavings tries")

// capiModel is one MachineDeployment (one MachineSet) whose /scale subresource, MachineSet
// controller and status writer act at random points between the provider's requests: the
// MachineSet controller deletes the surplus in Cluster API's order (deleting Machines first,
// then delete-machine ones, ties by name) and creates Machines up to replicas; the
// MachineDeployment controller's status writes move the resourceVersion, so a /scale write
// loses a race. Everything lives in one fake client that two provider replicas share.
type capiModel struct {
	mu       sync.Mutex
	rng      *rand.Rand
	base     client.WithWatch
	scope    infra.Scope
	ms       *clusterv1.MachineSet
	replicas int32
	rv       int
	created  int
	crashed  atomic.Bool
	// conflict is the chance a /scale write finds a status write before it; act the chance
	// the MachineSet controller reconciles (and a deleting Machine goes) at any request.
	conflict, act float64
}

const modelFinalizer = "test.tenantcloud.io/vm"

func newCapiModel(t *testing.T, seed int64, machines int) *capiModel {
	t.Helper()
	scope := infra.Scope{Namespace: "tenant-a", ClusterName: "alpha"}
	scheme, err := infra.NewScheme()
	if err != nil {
		t.Fatal(err)
	}
	lbl := map[string]string{infra.LabelClusterName: scope.ClusterName}
	md := &clusterv1.MachineDeployment{ObjectMeta: metav1.ObjectMeta{Namespace: scope.Namespace, Name: "workers", UID: "md-uid",
		Labels: lbl, Annotations: map[string]string{AnnotationMinSize: "0", AnnotationMaxSize: "50"}}}
	md.Spec.ClusterName, md.Spec.Replicas = scope.ClusterName, ptrTo(int32(machines))
	ms := &clusterv1.MachineSet{ObjectMeta: metav1.ObjectMeta{Namespace: scope.Namespace, Name: "workers-abc", UID: "ms-uid",
		Labels: lbl, OwnerReferences: modelOwner("MachineDeployment", md.Name, md.UID)}}
	ms.Spec.ClusterName = scope.ClusterName
	b := fake.NewClientBuilder().WithScheme(scheme).WithObjects(md, ms)
	if err := registerInfraIndexes(context.Background(), builderIndexer{b}); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewSource(seed))
	m := &capiModel{rng: rng, base: b.Build(), scope: scope, ms: ms, replicas: int32(machines), rv: 1,
		conflict: 0.05 + 0.35*rng.Float64(), act: 0.05 + 0.4*rng.Float64()}
	for i := range machines {
		if err := m.createMachine(fmt.Sprintf("m%02d", i)); err != nil {
			t.Fatal(err)
		}
	}
	return m
}

func modelOwner(kind, name string, uid types.UID) []metav1.OwnerReference {
	return []metav1.OwnerReference{{APIVersion: clusterv1.GroupVersion.String(), Kind: kind, Name: name, UID: uid, Controller: ptrTo(true)}}
}

func (m *capiModel) createMachine(name string) error {
	mc := &clusterv1.Machine{ObjectMeta: metav1.ObjectMeta{Namespace: m.scope.Namespace, Name: name, UID: types.UID("uid-" + name),
		Labels: map[string]string{infra.LabelClusterName: m.scope.ClusterName}, Finalizers: []string{modelFinalizer},
		OwnerReferences: modelOwner("MachineSet", m.ms.Name, m.ms.UID)}}
	mc.Spec.ClusterName, mc.Spec.ProviderID = m.scope.ClusterName, "kubevirt://"+name
	return m.base.Create(context.Background(), mc)
}

func (m *capiModel) machines(ctx context.Context) ([]*clusterv1.Machine, error) {
	var list clusterv1.MachineList
	if err := m.base.List(ctx, &list, client.InNamespace(m.scope.Namespace)); err != nil {
		return nil, err
	}
	out := make([]*clusterv1.Machine, len(list.Items))
	for i := range list.Items {
		out[i] = &list.Items[i]
	}
	return out, nil
}

// reconcile is one MachineSet controller pass; the caller holds mu.
func (m *capiModel) reconcile(ctx context.Context) error {
	machines, err := m.machines(ctx)
	if err != nil {
		return err
	}
	diff := len(machines) - int(m.replicas)
	for ; diff < 0; diff++ {
		m.created++
		if err := m.createMachine(fmt.Sprintf("new%02d", m.created)); err != nil {
			return err
		}
	}
	prio := func(mc *clusterv1.Machine) int {
		switch _, marked := mc.Annotations[AnnotationDeleteMachine]; {
		case !mc.DeletionTimestamp.IsZero():
			return 2
		case marked:
			return 1
		}
		return 0
	}
	sort.SliceStable(machines, func(i, j int) bool {
		if pi, pj := prio(machines[i]), prio(machines[j]); pi != pj {
			return pi > pj
		}
		return machines[i].Name < machines[j].Name
	})
	for _, mc := range machines[:max(0, diff)] {
		if mc.DeletionTimestamp.IsZero() {
			if err := m.base.Delete(ctx, mc); err != nil {
				return err
			}
		}
	}
	return nil
}

// finishOne lets one deleting Machine go (its VM is gone); the caller holds mu.
func (m *capiModel) finishOne(ctx context.Context) error {
	machines, err := m.machines(ctx)
	if err != nil {
		return err
	}
	for _, mc := range machines {
		if !mc.DeletionTimestamp.IsZero() {
			mc.Finalizers = nil
			return client.IgnoreNotFound(m.base.Update(ctx, mc))
		}
	}
	return nil
}

// maybeAct runs the controllers with probability act.
func (m *capiModel) maybeAct(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.rng.Float64() < m.act {
		if err := m.reconcile(ctx); err != nil {
			return err
		}
	}
	if m.rng.Float64() < m.act {
		return m.finishOne(ctx)
	}
	return nil
}

// settle runs the controllers until nothing is left to do.
func (m *capiModel) settle(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for range 100 {
		if err := m.reconcile(ctx); err != nil {
			return err
		}
		if err := m.finishOne(ctx); err != nil {
			return err
		}
	}
	return nil
}

// allGone reports whether none of the named Machines exists any more.
func (m *capiModel) allGone(ctx context.Context, names []string) bool {
	for _, n := range names {
		err := m.base.Get(ctx, client.ObjectKey{Namespace: m.scope.Namespace, Name: n}, &clusterv1.Machine{})
		if !apierrors.IsNotFound(err) {
			return false
		}
	}
	return true
}

var errCrashed = errors.New("provider process crashed")

// replica is one provider process over the model. crashAtScale makes it die at its next
// /scale write: that write and every later one fails, so nothing is rolled back.
type replica struct {
	p            *Provider
	dead         atomic.Bool
	crashAtScale atomic.Bool
}

func (m *capiModel) newReplica() *replica {
	r := &replica{}
	act := func(ctx context.Context) error { return m.maybeAct(ctx) }
	c := interceptor.NewClient(m.base, interceptor.Funcs{
		Get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object, opts ...client.GetOption) error {
			if err := act(ctx); err != nil {
				return err
			}
			return c.Get(ctx, key, obj, opts...)
		},
		List: func(ctx context.Context, c client.WithWatch, list client.ObjectList, opts ...client.ListOption) error {
			if err := act(ctx); err != nil {
				return err
			}
			return c.List(ctx, list, opts...)
		},
		Patch: func(ctx context.Context, c client.WithWatch, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
			if r.dead.Load() {
				return errCrashed
			}
			if err := c.Patch(ctx, obj, patch, opts...); err != nil {
				return err
			}
			return act(ctx)
		},
		SubResourceGet: func(ctx context.Context, _ client.Client, _ string, _ client.Object, sub client.Object, _ ...client.SubResourceGetOption) error {
			if err := act(ctx); err != nil {
				return err
			}
			m.mu.Lock()
			defer m.mu.Unlock()
			sc := sub.(*autoscalingv1.Scale)
			sc.ResourceVersion, sc.Spec.Replicas = strconv.Itoa(m.rv), m.replicas
			return nil
		},
		SubResourceUpdate: func(ctx context.Context, c client.Client, _ string, obj client.Object, opts ...client.SubResourceUpdateOption) error {
			if r.dead.Load() || r.crashAtScale.Load() {
				r.dead.Store(true)
				m.crashed.Store(true)
				return errCrashed
			}
			if err := m.writeScale(ctx, obj, opts...); err != nil {
				return err
			}
			return act(ctx)
		},
	})
	r.p = &Provider{scope: m.scope, infra: readerInfra(m.scope, c), view: newView(m.scope, nil, c, nil), cacheWait: time.Millisecond}
	return r
}

func (m *capiModel) writeScale(ctx context.Context, obj client.Object, opts ...client.SubResourceUpdateOption) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.rng.Float64() < m.conflict {
		m.rv++ // the MachineDeployment controller wrote status just before
	}
	o := &client.SubResourceUpdateOptions{}
	o.ApplyOptions(opts)
	sc := o.SubResourceBody.(*autoscalingv1.Scale)
	if sc.ResourceVersion != strconv.Itoa(m.rv) {
		return apierrors.NewConflict(schema.GroupResource{Group: "cluster.x-k8s.io", Resource: "machinedeployments"}, obj.GetName(), nil)
	}
	m.replicas, m.rv = sc.Spec.Replicas, m.rv+1
	md := &clusterv1.MachineDeployment{}
	if err := m.base.Get(ctx, client.ObjectKeyFromObject(obj), md); err != nil {
		return err
	}
	md.Spec.Replicas = ptrTo(m.replicas)
	return m.base.Update(ctx, md)
}

// TestDeleteNodesInterleavings is the scale-down invariant under random interleavings: two
// provider replicas get one DeleteNodes per node (20 of 22, some sent twice, some to both
// replicas at once), /scale writes lose races to status writes, the MachineSet controller acts
// between any two requests, and a replica may crash between its marks and its /scale write and
// be restarted; failed calls are retried as cluster-autoscaler would. Once every call has
// returned successfully, replicas equal 22 minus the distinct Machines named, exactly the
// named Machines are gone, and no Machine keeps a mark.
func TestDeleteNodesInterleavings(t *testing.T) {
	const machines, named = 22, 20
	var broken []int64
	for seed := range int64(*interleavings) {
		if !deleteInterleaving(t, seed, machines, named) {
			broken = append(broken, seed)
		}
	}
	if len(broken) > 0 {
		t.Fatalf("%d of %d interleavings broke the invariant: seeds %v", len(broken), *interleavings, broken)
	}
}

func deleteInterleaving(t *testing.T, seed int64, machines, named int) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m := newCapiModel(t, seed, machines)
	var (
		mu       sync.Mutex
		replicas = []*replica{m.newReplica(), m.newReplica()}
	)
	m.mu.Lock()
	order := m.rng.Perm(machines)[:named]
	crashes := m.rng.Intn(3)
	var reqs [][]string
	for _, i := range order {
		reqs = append(reqs, []string{fmt.Sprintf("m%02d", i)})
		if m.rng.Float64() < 0.2 { // a duplicate: a retry racing the original, or a failover
			reqs = append(reqs, []string{fmt.Sprintf("m%02d", i)})
		}
	}
	m.rng.Shuffle(len(reqs), func(i, j int) { reqs[i], reqs[j] = reqs[j], reqs[i] })
	m.mu.Unlock()

	// pick returns a live replica, restarting a crashed one; crash arms one for a crash.
	pick := func(k int) *replica {
		mu.Lock()
		defer mu.Unlock()
		i := k % len(replicas)
		if replicas[i].dead.Load() {
			replicas[i] = m.newReplica()
		}
		if crashes > 0 && k%7 == 3 {
			crashes--
			replicas[i].crashAtScale.Store(true)
		}
		return replicas[i]
	}
	var wg sync.WaitGroup
	failures := make(chan error, len(reqs))
	for k, names := range reqs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			nodes := make([]*protos.ExternalGrpcNode, len(names))
			for i, n := range names {
				nodes[i] = &protos.ExternalGrpcNode{Name: n, ProviderID: "kubevirt://" + n}
			}
			var err error
			for attempt := range 20 {
				_, err = pick(k+attempt).p.NodeGroupDeleteNodes(ctx, &protos.NodeGroupDeleteNodesRequest{
					Id: GroupID(m.scope.Namespace, "workers"), Nodes: nodes})
				if err == nil || (status.Code(err) == codes.InvalidArgument && m.allGone(ctx, names)) {
					// cluster-autoscaler does not ask again for nodes that are gone.
					return
				}
			}
			failures <- fmt.Errorf("DeleteNodes %v: %w", names, err)
		}()
	}
	wg.Wait()
	close(failures)
	for err := range failures {
		t.Errorf("seed %d: %v", seed, err)
	}
	if err := m.settle(ctx); err != nil {
		t.Fatal(err)
	}
	if m.crashed.Load() {
		// A crash can leave a mark that nothing names again (see OrphanedMarks): the next
		// autoscaler loop after orphanAfter takes its replica off.
		late := m.newReplica()
		late.p.now = func() time.Time { return time.Now().Add(orphanAfter) }
		if _, err := late.p.Refresh(ctx, &protos.RefreshRequest{}); err != nil {
			t.Fatal(err)
		}
		if err := m.settle(ctx); err != nil {
			t.Fatal(err)
		}
	}

	left, err := m.machines(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{}
	for i := range machines {
		want[fmt.Sprintf("m%02d", i)] = true
	}
	for _, i := range order {
		delete(want, fmt.Sprintf("m%02d", i))
	}
	ok := !t.Failed()
	var got []string
	for _, mc := range left {
		got = append(got, mc.Name)
		if _, marked := mc.Annotations[AnnotationDeleteMachine]; marked || MarkedByUs(mc) {
			t.Errorf("seed %d: Machine %s still marked", seed, mc.Name)
			ok = false
		}
		if !want[mc.Name] {
			ok = false
		}
	}
	if int(m.replicas) != machines-named || len(left) != len(want) || !ok {
		t.Errorf("seed %d (conflict %.2f, act %.2f): replicas %d, Machines left %v; want %d replicas and %d Machines nobody named",
			seed, m.conflict, m.act, m.replicas, got, machines-named, len(want))
		return false
	}
	return true
}
