package kubevirt

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
	"k8s.io/apimachinery/pkg/watch"
	kubevirtv1 "kubevirt.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcloud/tenantcloud/test/harness"
	"github.com/tenantcloud/tenantcloud/test/sim/fault"
	"github.com/tenantcloud/tenantcloud/test/sim/simmgr"
)

var env *harness.Env

func TestMain(m *testing.M) { os.Exit(harness.Main(m, &env)) }

const testPhaseDelay = 30 * time.Millisecond

// sim is one running simulator (its own manager and fault injector) plus a fresh namespace.
// Tests run one at a time: the simulator acts on every namespace.
type sim struct {
	t      *testing.T
	ctx    context.Context
	c      client.Client
	faults *fault.Injector
	ns     string
	opts   Options
}

func startSim(t *testing.T, opts Options) *sim {
	t.Helper()
	// klog writes to stderr, which go test shows for failing packages.
	if opts.Faults == nil {
		opts.Faults = fault.New()
	}
	if opts.PhaseDelay == 0 {
		opts.PhaseDelay = testPhaseDelay
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	mgr, err := simmgr.New(env.Management.Config)
	if err != nil {
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

	s := &sim{t: t, ctx: ctx, c: env.Management.Client, faults: opts.Faults, opts: opts}
	s.ns = "kv-" + strings.ToLower(strings.ReplaceAll(t.Name(), "/", "-"))
	if len(s.ns) > 50 {
		s.ns = s.ns[:50]
	}
	s.ns += "-" + rand.String(4)
	if err := s.c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: s.ns}}); err != nil {
		t.Fatal(err)
	}
	// Registered after the manager's cleanup, so it runs first, with the simulator up:
	// there is no namespace controller or garbage collector to clean up after us.
	t.Cleanup(s.deleteAllVMs)
	return s
}

func (s *sim) deleteAllVMs() {
	// Faults a test armed must not keep its objects from going away.
	for _, p := range []string{FaultVMStart, FaultVMIScheduled, FaultVMIRunning, FaultVMISucceeded} {
		s.faults.Release(p)
	}
	var vms kubevirtv1.VirtualMachineList
	if err := s.c.List(s.ctx, &vms, client.InNamespace(s.ns)); err != nil {
		s.t.Errorf("cleanup: listing VMs: %v", err)
		return
	}
	for i := range vms.Items {
		if err := s.c.Delete(s.ctx, &vms.Items[i]); client.IgnoreNotFound(err) != nil {
			s.t.Errorf("cleanup: deleting VM %s: %v", vms.Items[i].Name, err)
		}
	}
	s.eventually("namespace "+s.ns+" empty", func() (bool, error) {
		var vms kubevirtv1.VirtualMachineList
		var vmis kubevirtv1.VirtualMachineInstanceList
		var pods corev1.PodList
		for _, l := range []client.ObjectList{&vms, &vmis, &pods} {
			if err := s.c.List(s.ctx, l, client.InNamespace(s.ns)); err != nil {
				return false, err
			}
		}
		return len(vms.Items)+len(vmis.Items)+len(pods.Items) == 0, nil
	})
}

// eventually polls cond until it holds, failing the test after a deadline.
func (s *sim) eventually(what string, cond func() (bool, error)) {
	s.t.Helper()
	harness.Eventually(s.t, s.ctx, 30*time.Second, what, func(context.Context) (bool, error) { return cond() })
}

// consistently checks cond on every poll for d; it is how a test shows something does NOT
// happen (a stalled phase holds) without sleeping.
func (s *sim) consistently(what string, d time.Duration, cond func() error) {
	s.t.Helper()
	harness.Consistently(s.t, s.ctx, d, what, func(context.Context) error { return cond() })
}

func (s *sim) get(name string, obj client.Object) error {
	return s.c.Get(s.ctx, client.ObjectKey{Namespace: s.ns, Name: name}, obj)
}

func (s *sim) vmi(name string) *kubevirtv1.VirtualMachineInstance {
	s.t.Helper()
	vmi := &kubevirtv1.VirtualMachineInstance{}
	if err := s.get(name, vmi); err != nil {
		s.t.Fatalf("reading VMI %s: %v", name, err)
	}
	return vmi
}

func (s *sim) waitVMIPhase(name string, phase kubevirtv1.VirtualMachineInstancePhase) *kubevirtv1.VirtualMachineInstance {
	s.t.Helper()
	vmi := &kubevirtv1.VirtualMachineInstance{}
	s.eventually(fmt.Sprintf("VMI %s in phase %s", name, phase), func() (bool, error) {
		if err := s.get(name, vmi); err != nil {
			return false, client.IgnoreNotFound(err)
		}
		return vmi.Status.Phase == phase, nil
	})
	return vmi
}

func (s *sim) waitGone(name string, obj client.Object) {
	s.t.Helper()
	s.eventually(fmt.Sprintf("%T %s gone", obj, name), func() (bool, error) {
		err := s.get(name, obj)
		if apierrors.IsNotFound(err) {
			return true, nil
		}
		return false, err
	})
}

// launcherPods lists the virt-launcher pods of the VMI name.
func (s *sim) launcherPods(name string) []corev1.Pod {
	s.t.Helper()
	var pods corev1.PodList
	if err := s.c.List(s.ctx, &pods, client.InNamespace(s.ns), client.MatchingLabels{kubevirtv1.AppLabel: launcherAppValue}); err != nil {
		s.t.Fatal(err)
	}
	var out []corev1.Pod
	for _, p := range pods.Items {
		if ref := metav1.GetControllerOf(&p); ref != nil && ref.Name == name {
			out = append(out, p)
		}
	}
	return out
}

// newVM returns a VM with a small domain, the CAPK-style labels on its VMI template and the
// given run strategy.
func (s *sim) newVM(name string, rs kubevirtv1.VirtualMachineRunStrategy) *kubevirtv1.VirtualMachine {
	return &kubevirtv1.VirtualMachine{
		ObjectMeta: metav1.ObjectMeta{Namespace: s.ns, Name: name, Labels: map[string]string{"cluster.x-k8s.io/cluster-name": "alpha"}},
		Spec: kubevirtv1.VirtualMachineSpec{
			RunStrategy: &rs,
			Template: &kubevirtv1.VirtualMachineInstanceTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{
					Labels:      map[string]string{"cluster.x-k8s.io/cluster-name": "alpha", "cluster.x-k8s.io/role": "worker", "kubevirt.io/vm": name},
					Annotations: map[string]string{"example.com/note": "from-template"},
				},
				Spec: kubevirtv1.VirtualMachineInstanceSpec{
					Domain: kubevirtv1.DomainSpec{
						CPU:       &kubevirtv1.CPU{Cores: 2},
						Resources: kubevirtv1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceMemory: resourceMust("1Gi")}},
					},
				},
			},
		},
	}
}

func (s *sim) create(obj client.Object) {
	s.t.Helper()
	if err := s.c.Create(s.ctx, obj); err != nil {
		s.t.Fatalf("creating %T %s: %v", obj, obj.GetName(), err)
	}
}

// setRunStrategy changes a VM's run strategy, retrying on conflicts with the simulator.
func (s *sim) setRunStrategy(name string, rs kubevirtv1.VirtualMachineRunStrategy) {
	s.t.Helper()
	s.eventually("run strategy of "+name+" set to "+string(rs), func() (bool, error) {
		vm := &kubevirtv1.VirtualMachine{}
		if err := s.get(name, vm); err != nil {
			return false, err
		}
		vm.Spec.RunStrategy = &rs
		vm.Spec.Running = nil
		return true, s.c.Update(s.ctx, vm)
	})
}

// phaseLog records every phase each VMI of a namespace passes through, from a watch: polling
// could miss a phase that lasts one PhaseDelay.
type phaseLog struct {
	mu     sync.Mutex
	phases map[string][]kubevirtv1.VirtualMachineInstancePhase
	reason map[string]string
}

func (s *sim) recordPhases() *phaseLog {
	s.t.Helper()
	wc, err := client.NewWithWatch(env.Management.Config, client.Options{Scheme: env.Management.Client.Scheme()})
	if err != nil {
		s.t.Fatal(err)
	}
	w, err := wc.Watch(s.ctx, &kubevirtv1.VirtualMachineInstanceList{}, client.InNamespace(s.ns))
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(w.Stop)
	l := &phaseLog{phases: map[string][]kubevirtv1.VirtualMachineInstancePhase{}, reason: map[string]string{}}
	go func() {
		for ev := range w.ResultChan() {
			vmi, ok := ev.Object.(*kubevirtv1.VirtualMachineInstance)
			if !ok || ev.Type == watch.Error {
				continue
			}
			l.mu.Lock()
			seen := l.phases[vmi.Name]
			if p := vmi.Status.Phase; p != "" && (len(seen) == 0 || seen[len(seen)-1] != p) {
				l.phases[vmi.Name] = append(seen, p)
			}
			if vmi.Status.Reason != "" {
				l.reason[vmi.Name] = vmi.Status.Reason
			}
			l.mu.Unlock()
		}
	}()
	return l
}

func (l *phaseLog) of(name string) []kubevirtv1.VirtualMachineInstancePhase {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]kubevirtv1.VirtualMachineInstancePhase(nil), l.phases[name]...)
}

func (l *phaseLog) has(name string, p kubevirtv1.VirtualMachineInstancePhase) bool {
	for _, q := range l.of(name) {
		if q == p {
			return true
		}
	}
	return false
}

// vmConditionLog records every (type, reason, message) of condition a namespace's VMs ever
// showed, from a watch, for conditions that may last only one pass.
type vmConditionLog struct {
	mu   sync.Mutex
	seen []kubevirtv1.VirtualMachineCondition
}

func (s *sim) recordVMConditions() *vmConditionLog {
	s.t.Helper()
	wc, err := client.NewWithWatch(env.Management.Config, client.Options{Scheme: env.Management.Client.Scheme()})
	if err != nil {
		s.t.Fatal(err)
	}
	w, err := wc.Watch(s.ctx, &kubevirtv1.VirtualMachineList{}, client.InNamespace(s.ns))
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(w.Stop)
	l := &vmConditionLog{}
	go func() {
		for ev := range w.ResultChan() {
			if vm, ok := ev.Object.(*kubevirtv1.VirtualMachine); ok {
				l.mu.Lock()
				l.seen = append(l.seen, vm.Status.Conditions...)
				l.mu.Unlock()
			}
		}
	}()
	return l
}

func (l *vmConditionLog) any(match func(kubevirtv1.VirtualMachineCondition) bool) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range l.seen {
		if match(c) {
			return true
		}
	}
	return false
}
