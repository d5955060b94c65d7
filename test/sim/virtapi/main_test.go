package virtapi

import (
	"context"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	kubevirtv1 "kubevirt.io/api/core/v1"
	"kubevirt.io/client-go/kubevirt"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcloud/tenantcloud/test/harness"
	"github.com/tenantcloud/tenantcloud/test/sim/fault"
	"github.com/tenantcloud/tenantcloud/test/sim/featuregate"
)

var env *harness.Env

func TestMain(m *testing.M) { os.Exit(harness.Main(m, &env)) }

// One virt-api per test binary: the APIService name is fixed, so tests share it (and its fault
// injector; tests that arm faults disarm them).
var (
	srvOnce sync.Once
	srv     *Server
	srvErr  error
	faults  = fault.New()
	// gates are KubeVirt's feature gates; tests that change them restore HotplugVolumes.
	gates = featuregate.New(featuregate.HotplugVolumes)
)

func server(t *testing.T) *Server {
	t.Helper()
	srvOnce.Do(func() {
		// Lives until the harness stops: the apiserver goes away with it.
		srv, srvErr = Start(context.Background(), env.Management.Config, Options{Faults: faults, Gates: gates})
	})
	if srvErr != nil {
		t.Fatalf("starting virt-api: %v", srvErr)
	}
	return srv
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// namespace creates a namespace named after the test.
func namespace(t *testing.T) string {
	t.Helper()
	name := strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name()))
	if len(name) > 50 {
		name = name[:50]
	}
	name = strings.Trim(name, "-")
	if err := env.Management.Client.Create(ctxT(t), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}); err != nil {
		t.Fatalf("creating namespace %s: %v", name, err)
	}
	return name
}

func kubevirtClient(t *testing.T, cfg *rest.Config) kubevirt.Interface {
	t.Helper()
	c, err := kubevirt.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// createVM creates a VM with one container disk and, when running, its VMI in phase Running,
// written as virt-handler would (the VMI CRD has no status subresource).
func createVM(t *testing.T, ns, name string, running bool) (*kubevirtv1.VirtualMachine, *kubevirtv1.VirtualMachineInstance) {
	t.Helper()
	ctx := ctxT(t)
	c := env.Management.Client
	always := kubevirtv1.RunStrategyAlways
	spec := kubevirtv1.VirtualMachineInstanceSpec{
		Domain: kubevirtv1.DomainSpec{Devices: kubevirtv1.Devices{Disks: []kubevirtv1.Disk{{
			Name: "rootdisk", DiskDevice: kubevirtv1.DiskDevice{Disk: &kubevirtv1.DiskTarget{Bus: kubevirtv1.DiskBusVirtio}},
		}}}},
		Volumes: []kubevirtv1.Volume{{Name: "rootdisk", VolumeSource: kubevirtv1.VolumeSource{
			ContainerDisk: &kubevirtv1.ContainerDiskSource{Image: "quay.io/containerdisks/ubuntu:24.04"},
		}}},
	}
	vm := &kubevirtv1.VirtualMachine{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: kubevirtv1.VirtualMachineSpec{RunStrategy: &always, Template: &kubevirtv1.VirtualMachineInstanceTemplateSpec{
			Spec: *spec.DeepCopy(),
		}},
	}
	if err := c.Create(ctx, vm); err != nil {
		t.Fatalf("creating VM: %v", err)
	}
	if !running {
		return vm, nil
	}
	vmi := &kubevirtv1.VirtualMachineInstance{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, OwnerReferences: []metav1.OwnerReference{
			*metav1.NewControllerRef(vm, kubevirtv1.VirtualMachineGroupVersionKind),
		}},
		Spec: spec,
	}
	if err := c.Create(ctx, vmi); err != nil {
		t.Fatalf("creating VMI: %v", err)
	}
	vmi.Status.Phase = kubevirtv1.Running
	vmi.Status.NodeName = "infra-node-1"
	if err := c.Update(ctx, vmi); err != nil {
		t.Fatalf("setting VMI Running: %v", err)
	}
	return vm, vmi
}

func createPVC(t *testing.T, ns, name string) {
	t.Helper()
	block := corev1.PersistentVolumeBlock
	pvc := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany},
			VolumeMode:  &block,
			Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}},
		},
	}
	if err := env.Management.Client.Create(ctxT(t), pvc); err != nil {
		t.Fatalf("creating PVC: %v", err)
	}
}

func getVM(t *testing.T, ns, name string) *kubevirtv1.VirtualMachine {
	t.Helper()
	vm := &kubevirtv1.VirtualMachine{}
	if err := env.Management.Client.Get(ctxT(t), client.ObjectKey{Namespace: ns, Name: name}, vm); err != nil {
		t.Fatal(err)
	}
	return vm
}

func getVMI(t *testing.T, ns, name string) *kubevirtv1.VirtualMachineInstance {
	t.Helper()
	vmi := &kubevirtv1.VirtualMachineInstance{}
	if err := env.Management.Client.Get(ctxT(t), client.ObjectKey{Namespace: ns, Name: name}, vmi); err != nil {
		t.Fatal(err)
	}
	return vmi
}

func pvcOptions(volume, claim, serial string, bus kubevirtv1.DiskBus) *kubevirtv1.AddVolumeOptions {
	return &kubevirtv1.AddVolumeOptions{
		Name: volume,
		Disk: &kubevirtv1.Disk{Serial: serial, DiskDevice: kubevirtv1.DiskDevice{Disk: &kubevirtv1.DiskTarget{Bus: bus}}},
		VolumeSource: &kubevirtv1.HotplugVolumeSource{PersistentVolumeClaim: &kubevirtv1.PersistentVolumeClaimVolumeSource{
			PersistentVolumeClaimVolumeSource: corev1.PersistentVolumeClaimVolumeSource{ClaimName: claim},
		}},
	}
}

func findVolume(spec kubevirtv1.VirtualMachineInstanceSpec, name string) (*kubevirtv1.Volume, *kubevirtv1.Disk) {
	var vol *kubevirtv1.Volume
	var disk *kubevirtv1.Disk
	for i := range spec.Volumes {
		if spec.Volumes[i].Name == name {
			vol = &spec.Volumes[i]
		}
	}
	for i := range spec.Domain.Devices.Disks {
		if spec.Domain.Devices.Disks[i].Name == name {
			disk = &spec.Domain.Devices.Disks[i]
		}
	}
	return vol, disk
}
