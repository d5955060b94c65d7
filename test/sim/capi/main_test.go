package capi

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"
	kubevirtv1 "kubevirt.io/api/core/v1"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcloud/tenantcloud/test/harness"
	"github.com/tenantcloud/tenantcloud/test/sim/fault"
	"github.com/tenantcloud/tenantcloud/test/sim/kubevirt"
	"github.com/tenantcloud/tenantcloud/test/sim/simmgr"
)

var env *harness.Env

func TestMain(m *testing.M) { os.Exit(harness.Main(m, &env)) }

const (
	testPhaseDelay = 20 * time.Millisecond
	templateName   = "worker"
	// The template's guest: 2 vCPUs, 3Gi.
	templateCores  = 2
	templateMemory = "3Gi"
)

// sim is one running simulator (KubeVirt + Cluster API/CAPK, own manager and fault injector)
// with a fresh namespace holding a Cluster and a KubevirtMachineTemplate. Each test gets its
// own cluster name, and the simulator only acts on that cluster.
type sim struct {
	t       *testing.T
	ctx     context.Context
	c       client.Client // management
	tenant  client.Client
	faults  *fault.Injector
	ns      string
	cluster string
}

func startSim(t *testing.T, opts Options) *sim {
	t.Helper()
	if opts.Faults == nil {
		opts.Faults = fault.New()
	}
	if opts.PhaseDelay == 0 {
		opts.PhaseDelay = testPhaseDelay
	}
	opts.Tenant = env.Tenant.Client
	id := strings.ToLower(rand.String(5))
	opts.ClusterName = "c-" + id

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Second)
	mgr, err := simmgr.New(env.Management.Config)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if err := kubevirt.Setup(ctx, mgr, kubevirt.Options{PhaseDelay: opts.PhaseDelay, Faults: opts.Faults}); err != nil {
		cancel()
		t.Fatal(err)
	}
	if err := Setup(ctx, mgr, opts); err != nil {
		cancel()
		t.Fatal(err)
	}
	mgrCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- mgr.Start(mgrCtx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("simulator manager: %v\ngoroutines still in simulator or controller-runtime code:\n%s", err, simmgr.StuckGoroutines())
		}
		cancel()
	})

	s := &sim{t: t, ctx: ctx, c: env.Management.Client, tenant: env.Tenant.Client, faults: opts.Faults, ns: "capi-" + id, cluster: opts.ClusterName}
	s.create(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: s.ns}})
	s.create(NewCluster(s.ns, s.cluster))
	s.create(NewKubevirtMachineTemplate(s.ns, templateName, s.cluster, templateCores, templateMemory))
	// Runs before the manager stops (cleanups are LIFO): without garbage collector or
	// namespace controller, only the simulator can take the machines down.
	t.Cleanup(s.teardown)
	return s
}

func (s *sim) teardown() {
	for _, p := range []string{FaultMachineProvision, FaultMachineNodeJoin, FaultMachineDelete,
		kubevirt.FaultVMStart, kubevirt.FaultVMIRunning, kubevirt.FaultVMIScheduled, kubevirt.FaultVMISucceeded} {
		s.faults.Release(p)
	}
	var mds clusterv1.MachineDeploymentList
	if err := s.c.List(s.ctx, &mds, client.InNamespace(s.ns)); err != nil {
		s.t.Errorf("cleanup: %v", err)
		return
	}
	for i := range mds.Items {
		// Unpause, or nothing would be deleted.
		md := &mds.Items[i]
		if hasKey(md.Annotations, clusterv1.PausedAnnotation) {
			delete(md.Annotations, clusterv1.PausedAnnotation)
			_ = s.c.Update(s.ctx, md)
		}
		if err := s.c.Delete(s.ctx, md); client.IgnoreNotFound(err) != nil {
			s.t.Errorf("cleanup: deleting %s: %v", md.Name, err)
		}
	}
	s.eventually("cluster "+s.cluster+" torn down", func() (bool, error) {
		n := 0
		for _, l := range []client.ObjectList{&clusterv1.MachineDeploymentList{}, &clusterv1.MachineSetList{},
			&clusterv1.MachineList{}, &kubevirtv1.VirtualMachineList{}, &kubevirtv1.VirtualMachineInstanceList{}} {
			if err := s.c.List(s.ctx, l, client.InNamespace(s.ns)); err != nil {
				return false, err
			}
			n += lenOf(l)
		}
		nodes, err := s.tenantNodes()
		return n+len(nodes) == 0, err
	})
}

func lenOf(l client.ObjectList) int {
	switch l := l.(type) {
	case *clusterv1.MachineDeploymentList:
		return len(l.Items)
	case *clusterv1.MachineSetList:
		return len(l.Items)
	case *clusterv1.MachineList:
		return len(l.Items)
	case *kubevirtv1.VirtualMachineList:
		return len(l.Items)
	case *kubevirtv1.VirtualMachineInstanceList:
		return len(l.Items)
	}
	panic(fmt.Sprintf("lenOf %T", l))
}

func (s *sim) create(obj client.Object) {
	s.t.Helper()
	if err := s.c.Create(s.ctx, obj); err != nil {
		s.t.Fatalf("creating %T %s: %v", obj, obj.GetName(), err)
	}
}

func (s *sim) eventually(what string, cond func() (bool, error)) {
	s.t.Helper()
	harness.Eventually(s.t, s.ctx, 45*time.Second, what, func(context.Context) (bool, error) { return cond() })
}

// consistently checks cond on every poll for d, to show something does not happen.
func (s *sim) consistently(what string, d time.Duration, cond func() error) {
	s.t.Helper()
	harness.Consistently(s.t, s.ctx, d, what, func(context.Context) error { return cond() })
}

func (s *sim) newMD(name string, replicas int32) *clusterv1.MachineDeployment {
	return NewMachineDeployment(s.ns, name, s.cluster, templateName, replicas)
}

// machines lists the Machines of a deployment, by the deployment-name label.
func (s *sim) machines(md string) []clusterv1.Machine {
	s.t.Helper()
	var list clusterv1.MachineList
	if err := s.c.List(s.ctx, &list, client.InNamespace(s.ns), client.MatchingLabels{clusterv1.MachineDeploymentNameLabel: md}); err != nil {
		s.t.Fatal(err)
	}
	return list.Items
}

// waitRunning waits until the deployment has exactly n Machines, all Running.
func (s *sim) waitRunning(md string, n int) []clusterv1.Machine {
	s.t.Helper()
	var ms []clusterv1.Machine
	s.eventually(fmt.Sprintf("%d Running machines in %s", n, md), func() (bool, error) {
		ms = s.machines(md)
		if len(ms) != n {
			return false, nil
		}
		for _, m := range ms {
			if m.Status.Phase != string(clusterv1.MachinePhaseRunning) || m.DeletionTimestamp != nil {
				return false, nil
			}
		}
		return true, nil
	})
	return ms
}

func (s *sim) tenantNodes() ([]corev1.Node, error) {
	var nodes corev1.NodeList
	if err := s.tenant.List(s.ctx, &nodes); err != nil {
		return nil, err
	}
	var out []corev1.Node
	for _, n := range nodes.Items {
		if strings.HasPrefix(n.Annotations[AnnotationSimVMI], s.ns+"/") {
			out = append(out, n)
		}
	}
	return out, nil
}

func (s *sim) waitGone(key client.ObjectKey, obj client.Object, c client.Client) {
	s.t.Helper()
	s.eventually(fmt.Sprintf("%T %s gone", obj, key), func() (bool, error) {
		err := c.Get(s.ctx, key, obj)
		if apierrors.IsNotFound(err) {
			return true, nil
		}
		return false, err
	})
}

// setReplicas changes spec.replicas, retrying on conflicts with the simulator.
func (s *sim) setReplicas(md string, n int32) {
	s.t.Helper()
	s.mutateMD(md, func(d *clusterv1.MachineDeployment) { d.Spec.Replicas = &n })
}

func (s *sim) mutateMD(name string, mutate func(*clusterv1.MachineDeployment)) {
	s.t.Helper()
	s.eventually("MachineDeployment "+name+" updated", func() (bool, error) {
		md := &clusterv1.MachineDeployment{}
		if err := s.c.Get(s.ctx, client.ObjectKey{Namespace: s.ns, Name: name}, md); err != nil {
			return false, err
		}
		mutate(md)
		return true, s.c.Update(s.ctx, md)
	})
}

// phaseLog records the phases each Machine of the namespace passes through, from a watch.
type phaseLog struct {
	mu     sync.Mutex
	phases map[string][]string
}

func (s *sim) recordMachinePhases() *phaseLog {
	s.t.Helper()
	wc, err := client.NewWithWatch(env.Management.Config, client.Options{Scheme: env.Management.Client.Scheme()})
	if err != nil {
		s.t.Fatal(err)
	}
	w, err := wc.Watch(s.ctx, &clusterv1.MachineList{}, client.InNamespace(s.ns))
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(w.Stop)
	l := &phaseLog{phases: map[string][]string{}}
	go func() {
		for ev := range w.ResultChan() {
			m, ok := ev.Object.(*clusterv1.Machine)
			if !ok {
				continue
			}
			l.mu.Lock()
			seen := l.phases[m.Name]
			if p := m.Status.Phase; p != "" && (len(seen) == 0 || seen[len(seen)-1] != p) {
				l.phases[m.Name] = append(seen, p)
			}
			l.mu.Unlock()
		}
	}()
	return l
}

func (l *phaseLog) of(name string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.phases[name]...)
}
