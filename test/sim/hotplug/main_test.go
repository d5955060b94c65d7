package hotplug

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/retry"
	kubevirtv1 "kubevirt.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcloud/tenantcloud/test/harness"
	"github.com/tenantcloud/tenantcloud/test/sim/disks"
	"github.com/tenantcloud/tenantcloud/test/sim/fault"
	"github.com/tenantcloud/tenantcloud/test/sim/simmgr"
)

var env *harness.Env

func TestMain(m *testing.M) { os.Exit(harness.Main(m, &env)) }

var (
	kcOnce sync.Once
	kc     client.WithWatch
)

// k8s is an admin client for the management cluster without client-side rate limiting. With
// a limiter, a Get issued just before a poll's deadline fails at once ("would exceed context
// deadline") instead of running, which turns the end of a bounded hold into a spurious error.
func k8s(t *testing.T) client.WithWatch {
	t.Helper()
	var err error
	kcOnce.Do(func() {
		cfg := rest.CopyConfig(env.Management.Config)
		cfg.QPS, cfg.Burst = -1, 0
		kc, err = client.NewWithWatch(cfg, client.Options{Scheme: env.Management.Client.Scheme()})
	})
	if err != nil || kc == nil {
		t.Fatalf("building unthrottled client: %v", err)
	}
	return kc
}

const (
	mib        = int64(1) << 20
	phaseDelay = 100 * time.Millisecond
)

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// sim is one test's hotplug controller with its disks and faults.
type sim struct {
	disks  *disks.Manager
	faults *fault.Injector
}

// startSim runs the controller in a manager of its own for the test, with real loop-device
// disks; it skips where loop devices cannot be used. Cleanup stops the manager first, then
// releases every loop device, however the test ends.
func startSim(t *testing.T) *sim {
	t.Helper()
	harness.Require(t, harness.NeedDisks, disks.Supported())
	dm, err := disks.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	root := dm.Root()
	t.Cleanup(func() {
		if err := dm.Close(); err != nil {
			t.Errorf("closing disks: %v", err)
		}
		if out, err := exec.Command("losetup", "-a").Output(); err != nil {
			t.Errorf("losetup -a: %v", err)
		} else if strings.Contains(string(out), root) {
			t.Errorf("loop devices left on %s:\n%s", root, out)
		}
	})
	s := &sim{disks: dm, faults: fault.New()}
	mgr, err := simmgr.New(env.Management.Config)
	if err != nil {
		t.Fatal(err)
	}
	if err := Setup(mgr, Options{Disks: dm, PhaseDelay: phaseDelay, Faults: s.faults}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("manager: %v", err)
		}
	})
	return s
}

func namespace(t *testing.T) string {
	t.Helper()
	name := strings.Trim(strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name())), "-")
	if len(name) > 50 {
		name = strings.Trim(name[:50], "-")
	}
	if err := k8s(t).Create(ctxT(t), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}); err != nil {
		t.Fatalf("creating namespace %s: %v", name, err)
	}
	return name
}

// createPVC creates a block PVC and, when bound, marks it Bound with capacity = size, as the
// PV controller and CSI provisioner would.
func createPVC(t *testing.T, ns, name string, size int64, bound bool) *corev1.PersistentVolumeClaim {
	t.Helper()
	ctx := ctxT(t)
	block := corev1.PersistentVolumeBlock
	pvc := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			VolumeMode:  &block,
			Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: *resource.NewQuantity(size, resource.BinarySI)}},
		},
	}
	if err := k8s(t).Create(ctx, pvc); err != nil {
		t.Fatalf("creating PVC: %v", err)
	}
	if bound {
		setPVCStatus(t, ns, name, corev1.ClaimBound, size)
	}
	return pvc
}

func setPVCStatus(t *testing.T, ns, name string, phase corev1.PersistentVolumeClaimPhase, capacity int64) {
	t.Helper()
	ctx := ctxT(t)
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		pvc := &corev1.PersistentVolumeClaim{}
		if err := k8s(t).Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, pvc); err != nil {
			return err
		}
		pvc.Status.Phase = phase
		pvc.Status.AccessModes = pvc.Spec.AccessModes
		pvc.Status.Capacity = corev1.ResourceList{corev1.ResourceStorage: *resource.NewQuantity(capacity, resource.BinarySI)}
		return k8s(t).Status().Update(ctx, pvc)
	})
	if err != nil {
		t.Fatalf("setting PVC %s status: %v", name, err)
	}
}

// createRunningVMI creates a VMI with a boot disk and writes what virt-handler would have by
// the time it runs: phase Running, a node, interfaces and the boot volume's status entry.
func createRunningVMI(t *testing.T, ns, name string) {
	t.Helper()
	ctx := ctxT(t)
	vmi := &kubevirtv1.VirtualMachineInstance{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: kubevirtv1.VirtualMachineInstanceSpec{
			Domain: kubevirtv1.DomainSpec{Devices: kubevirtv1.Devices{Disks: []kubevirtv1.Disk{{
				Name: "rootdisk", DiskDevice: kubevirtv1.DiskDevice{Disk: &kubevirtv1.DiskTarget{Bus: kubevirtv1.DiskBusVirtio}},
			}}}},
			Volumes: []kubevirtv1.Volume{{Name: "rootdisk", VolumeSource: kubevirtv1.VolumeSource{
				ContainerDisk: &kubevirtv1.ContainerDiskSource{Image: "quay.io/containerdisks/ubuntu:24.04"},
			}}},
		},
	}
	if err := k8s(t).Create(ctx, vmi); err != nil {
		t.Fatalf("creating VMI: %v", err)
	}
	vmi.Status = kubevirtv1.VirtualMachineInstanceStatus{
		Phase:        kubevirtv1.Running,
		NodeName:     "infra-node-1",
		Interfaces:   []kubevirtv1.VirtualMachineInstanceNetworkInterface{{Name: "default", IP: "10.0.0.5", IPs: []string{"10.0.0.5", "fd00::5"}}},
		VolumeStatus: []kubevirtv1.VolumeStatus{{Name: "rootdisk", Target: "vda"}},
	}
	if err := k8s(t).Update(ctx, vmi); err != nil {
		t.Fatalf("setting VMI running: %v", err)
	}
}

// mutateVMI applies f to the VMI with conflict retries (the controller writes it too).
func mutateVMI(t *testing.T, ns, name string, f func(*kubevirtv1.VirtualMachineInstance)) {
	t.Helper()
	ctx := ctxT(t)
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		vmi := getVMI(t, ns, name)
		f(vmi)
		return k8s(t).Update(ctx, vmi)
	})
	if err != nil {
		t.Fatalf("updating VMI: %v", err)
	}
}

func mutatePVC(t *testing.T, ns, name string, f func(*corev1.PersistentVolumeClaim)) {
	t.Helper()
	ctx := ctxT(t)
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		pvc := &corev1.PersistentVolumeClaim{}
		if err := k8s(t).Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, pvc); err != nil {
			return err
		}
		f(pvc)
		return k8s(t).Update(ctx, pvc)
	})
	if err != nil {
		t.Fatalf("updating PVC %s: %v", name, err)
	}
}

func getVMI(t *testing.T, ns, name string) *kubevirtv1.VirtualMachineInstance {
	t.Helper()
	vmi := &kubevirtv1.VirtualMachineInstance{}
	if err := k8s(t).Get(ctxT(t), client.ObjectKey{Namespace: ns, Name: name}, vmi); err != nil {
		t.Fatal(err)
	}
	return vmi
}

// hotplug adds a hot-pluggable PVC volume and its disk to the VMI spec, what virt-api does.
func hotplug(t *testing.T, ns, vmi, volume, claim, serial string, bus kubevirtv1.DiskBus) {
	t.Helper()
	mutateVMI(t, ns, vmi, func(v *kubevirtv1.VirtualMachineInstance) {
		v.Spec.Volumes = append(v.Spec.Volumes, kubevirtv1.Volume{Name: volume, VolumeSource: kubevirtv1.VolumeSource{
			PersistentVolumeClaim: &kubevirtv1.PersistentVolumeClaimVolumeSource{
				PersistentVolumeClaimVolumeSource: corev1.PersistentVolumeClaimVolumeSource{ClaimName: claim},
				Hotpluggable:                      true,
			},
		}})
		v.Spec.Domain.Devices.Disks = append(v.Spec.Domain.Devices.Disks, kubevirtv1.Disk{
			Name: volume, Serial: serial, DiskDevice: kubevirtv1.DiskDevice{Disk: &kubevirtv1.DiskTarget{Bus: bus}},
		})
	})
}

func unplug(t *testing.T, ns, vmi, volume string) {
	t.Helper()
	mutateVMI(t, ns, vmi, func(v *kubevirtv1.VirtualMachineInstance) {
		v.Spec.Volumes = slices.DeleteFunc(v.Spec.Volumes, func(x kubevirtv1.Volume) bool { return x.Name == volume })
		v.Spec.Domain.Devices.Disks = slices.DeleteFunc(v.Spec.Domain.Devices.Disks, func(x kubevirtv1.Disk) bool { return x.Name == volume })
	})
}

func volumeStatus(vmi *kubevirtv1.VirtualMachineInstance, volume string) *kubevirtv1.VolumeStatus {
	for i := range vmi.Status.VolumeStatus {
		if vmi.Status.VolumeStatus[i].Name == volume {
			return &vmi.Status.VolumeStatus[i]
		}
	}
	return nil
}

// waitFor polls the VMI until cond holds for the volume's status entry (nil if absent).
func waitFor(t *testing.T, ns, vmi, volume, what string, cond func(*kubevirtv1.VolumeStatus) bool) *kubevirtv1.VirtualMachineInstance {
	t.Helper()
	var last *kubevirtv1.VirtualMachineInstance
	err := wait.PollUntilContextTimeout(ctxT(t), 20*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		last = &kubevirtv1.VirtualMachineInstance{}
		if err := k8s(t).Get(ctx, client.ObjectKey{Namespace: ns, Name: vmi}, last); err != nil {
			return false, err
		}
		return cond(volumeStatus(last, volume)), nil
	})
	if err != nil {
		t.Fatalf("waiting for volume %s %s: %v; status: %+v", volume, what, err, last.Status.VolumeStatus)
	}
	return last
}

func waitPhase(t *testing.T, ns, vmi, volume string, phase kubevirtv1.VolumePhase) *kubevirtv1.VolumeStatus {
	t.Helper()
	got := waitFor(t, ns, vmi, volume, "in phase "+string(phase), func(s *kubevirtv1.VolumeStatus) bool { return s != nil && s.Phase == phase })
	return volumeStatus(got, volume)
}

// holds checks that the volume stays in phase for d: a bounded negative check, polled.
func holds(t *testing.T, ns, vmi, volume string, phase kubevirtv1.VolumePhase, d time.Duration) {
	t.Helper()
	var st *kubevirtv1.VolumeStatus
	err := wait.PollUntilContextTimeout(ctxT(t), 50*time.Millisecond, d, true, func(ctx context.Context) (bool, error) {
		got := &kubevirtv1.VirtualMachineInstance{}
		if err := k8s(t).Get(ctx, client.ObjectKey{Namespace: ns, Name: vmi}, got); err != nil {
			if ctx.Err() != nil {
				return false, nil // the hold period is over
			}
			return false, err
		}
		st = volumeStatus(got, volume)
		return st == nil || st.Phase != phase, nil
	})
	if !wait.Interrupted(err) {
		t.Fatalf("volume %s left phase %s within %s: %+v (%v)", volume, phase, d, st, err)
	}
}

func waitGone(t *testing.T, ns, vmi, volume string) {
	t.Helper()
	waitFor(t, ns, vmi, volume, "gone", func(s *kubevirtv1.VolumeStatus) bool { return s == nil })
}

// phaseLog records, from a watch, every distinct phase the volume's entry goes through
// ("" when the entry disappears), so tests can check the order of the walk.
type phaseLog struct {
	mu     sync.Mutex
	phases []kubevirtv1.VolumePhase
	states []kubevirtv1.VolumeStatus // every entry version seen, for short-lived states
}

func watchPhases(t *testing.T, ns, vmi, volume string) *phaseLog {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w, err := k8s(t).Watch(ctx, &kubevirtv1.VirtualMachineInstanceList{}, client.InNamespace(ns))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	l := &phaseLog{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev := range w.ResultChan() {
			obj, ok := ev.Object.(*kubevirtv1.VirtualMachineInstance)
			if !ok || obj.Name != vmi || ev.Type == watch.Deleted {
				continue
			}
			phase := kubevirtv1.VolumePhase("")
			l.mu.Lock()
			if s := volumeStatus(obj, volume); s != nil {
				phase = s.Phase
				l.states = append(l.states, *s)
			}
			if n := len(l.phases); n == 0 || l.phases[n-1] != phase {
				l.phases = append(l.phases, phase)
			}
			l.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		w.Stop()
		cancel()
		<-done
	})
	return l
}

// saw reports whether any version of the entry the watch delivered satisfied cond.
func (l *phaseLog) saw(cond func(kubevirtv1.VolumeStatus) bool) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.ContainsFunc(l.states, cond)
}

// settled waits until the watch has delivered last as the latest phase (the watch may trail
// the Get that saw it) and returns the whole log.
func (l *phaseLog) settled(t *testing.T, last kubevirtv1.VolumePhase) []kubevirtv1.VolumePhase {
	t.Helper()
	var got []kubevirtv1.VolumePhase
	err := wait.PollUntilContextTimeout(ctxT(t), 10*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
		l.mu.Lock()
		got = slices.Clone(l.phases)
		l.mu.Unlock()
		return len(got) > 0 && got[len(got)-1] == last, nil
	})
	if err != nil {
		t.Fatalf("watch never saw phase %q: %v (log %v)", last, err, got)
	}
	return got
}

// loopBackingFile is the file the kernel says dev is attached to, "" if dev is free.
func loopBackingFile(t *testing.T, dev string) string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("/sys/block", filepath.Base(dev), "loop", "backing_file"))
	if errors.Is(err, os.ErrNotExist) {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(raw))
}

// pollDeviceSize waits for the block device to report size bytes.
func pollDeviceSize(t *testing.T, dev string, size int64) {
	t.Helper()
	var got int64
	err := wait.PollUntilContextTimeout(ctxT(t), 20*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		var err error
		got, err = disks.DeviceSize(dev)
		return got == size, err
	})
	if err != nil {
		t.Fatalf("device %s size %d, want %d: %v", dev, got, size, err)
	}
}

// pollNoDisks waits until nothing is plugged into vm and its device directory is empty.
func pollNoDisks(t *testing.T, s *sim, ns, vm string) {
	t.Helper()
	err := wait.PollUntilContextTimeout(ctxT(t), 20*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		entries, err := os.ReadDir(s.disks.DeviceDir(ns, vm))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return false, err
		}
		return len(s.disks.Disks(ns, vm)) == 0 && len(entries) == 0, nil
	})
	if err != nil {
		t.Fatalf("disks of %s still plugged: %v (%+v)", vm, err, s.disks.Disks(ns, vm))
	}
}
