package outage

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	kubevirtv1 "kubevirt.io/api/core/v1"
	cdiv1 "kubevirt.io/containerized-data-importer-api/pkg/apis/core/v1beta1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcloud/tenantcloud/pkg/cloud/loadbalancer"
	"github.com/tenantcloud/tenantcloud/pkg/csi/controller"
	"github.com/tenantcloud/tenantcloud/pkg/infra"
	"github.com/tenantcloud/tenantcloud/test/fixture"
	"github.com/tenantcloud/tenantcloud/test/harness"
)

// Operations are followed from outside while the system is disturbed: a LoadBalancer until
// the tenant sees its address, a CSI call until it succeeds.

// op is one operation a test waits for.
type op struct {
	name     string
	started  time.Time
	finished time.Time
	attempts int
	err      error
}

// tracker runs operations concurrently and remembers when each finished.
type tracker struct {
	ctx context.Context
	mu  sync.Mutex
	ops []*op
	wg  sync.WaitGroup
}

func newTracker(ctx context.Context) *tracker { return &tracker{ctx: ctx} }

// track waits, in the background, until cond holds (errors are retried).
func (tr *tracker) track(name string, cond func(context.Context) (bool, error)) {
	o := tr.add(name)
	go func() {
		defer tr.wg.Done()
		err := harness.WaitFor(tr.ctx, waitTimeout, func(ctx context.Context) (bool, error) {
			tr.mu.Lock()
			o.attempts++
			tr.mu.Unlock()
			return cond(ctx)
		})
		tr.finish(o, err, nil)
	}()
}

// CSI sidecars bound each call (--timeout) and retry a failed one with a back-off; these are
// shorter than the sidecars' defaults so that convergence is measured, not the back-off.
const (
	callTimeout   = 10 * time.Second
	retryInterval = 500 * time.Millisecond
)

// call makes a CSI call until it succeeds, as a sidecar does.
func (tr *tracker) call(name string, call func(context.Context) error) {
	o := tr.add(name)
	go func() {
		defer tr.wg.Done()
		var last error
		err := wait.PollUntilContextTimeout(tr.ctx, retryInterval, waitTimeout, true, func(ctx context.Context) (bool, error) {
			tr.mu.Lock()
			o.attempts++
			tr.mu.Unlock()
			cctx, cancel := context.WithTimeout(ctx, callTimeout)
			defer cancel()
			last = call(cctx)
			return last == nil, nil
		})
		tr.finish(o, err, last)
	}()
}

func (tr *tracker) add(name string) *op {
	o := &op{name: name, started: time.Now()}
	tr.mu.Lock()
	tr.ops = append(tr.ops, o)
	tr.mu.Unlock()
	tr.wg.Add(1)
	return o
}

func (tr *tracker) finish(o *op, err, last error) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	o.finished = time.Now()
	switch {
	case err != nil && last != nil:
		o.err = fmt.Errorf("%w (last error: %v)", err, last)
	case err != nil:
		o.err = err
	}
}

// pending lists the operations not finished yet.
func (tr *tracker) pending() []string {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	var out []string
	for _, o := range tr.ops {
		if o.finished.IsZero() {
			out = append(out, o.name)
		}
	}
	sort.Strings(out)
	return out
}

// finishedBetween counts the operations that finished in (from, to].
func (tr *tracker) finishedBetween(from, to time.Time) int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	n := 0
	for _, o := range tr.ops {
		if o.finished.After(from) && !o.finished.After(to) {
			n++
		}
	}
	return n
}

func (tr *tracker) count() int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return len(tr.ops)
}

// wait waits for every operation, fails the test for those that never completed, and returns
// when the last one finished.
func (tr *tracker) wait(t testing.TB) time.Time {
	t.Helper()
	tr.wg.Wait()
	tr.mu.Lock()
	defer tr.mu.Unlock()
	var last time.Time
	for _, o := range tr.ops {
		if o.err != nil {
			t.Errorf("operation %s did not complete: %v", o.name, o.err)
		}
		if o.finished.After(last) {
			last = o.finished
		}
	}
	return last
}

// done returns the operations that finished, as they are now.
func (tr *tracker) done() []op {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	var out []op
	for _, o := range tr.ops {
		if !o.finished.IsZero() {
			out = append(out, *o)
		}
	}
	return out
}

// summarySince lists every operation with when it finished relative to t.
func (tr *tracker) summarySince(t time.Time) string {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	var b strings.Builder
	for _, o := range tr.ops {
		fmt.Fprintf(&b, "\n  %-36s %+9s  checks/calls=%d", o.name, o.finished.Sub(t).Round(time.Millisecond), o.attempts)
	}
	return b.String()
}

func (tr *tracker) summary() string {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	var b strings.Builder
	for _, o := range tr.ops {
		fmt.Fprintf(&b, "\n  %-28s %8s  checks/calls=%d", o.name, o.finished.Sub(o.started).Round(time.Millisecond), o.attempts)
	}
	return b.String()
}

// LoadBalancers.

func createLB(t testing.TB, ctx context.Context, ns, name string, annotations map[string]string) *corev1.Service {
	t.Helper()
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Annotations: annotations},
		Spec: corev1.ServiceSpec{
			Type:     corev1.ServiceTypeLoadBalancer,
			Selector: map[string]string{"app": name},
			Ports:    []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}},
		},
	}
	if err := env.Tenant.Client.Create(ctx, svc); err != nil {
		t.Fatalf("creating tenant Service %s/%s: %v", ns, name, err)
	}
	return svc
}

func infraKey(svc *corev1.Service) (client.ObjectKey, error) {
	name, err := loadbalancer.InfraServiceName(svc.UID)
	return client.ObjectKey{Namespace: infraNS, Name: name}, err
}

// lbReady: the tenant Service shows the address MetalLB gave its infra Service.
func lbReady(svc *corev1.Service) func(context.Context) (bool, error) {
	return func(ctx context.Context) (bool, error) {
		got := &corev1.Service{}
		if err := env.Tenant.Client.Get(ctx, client.ObjectKeyFromObject(svc), got); err != nil {
			return false, err
		}
		if len(got.Status.LoadBalancer.Ingress) == 0 {
			return false, nil
		}
		key, err := infraKey(svc)
		if err != nil {
			return false, err
		}
		in := &corev1.Service{}
		if err := env.Management.Client.Get(ctx, key, in); err != nil {
			return false, err
		}
		return len(in.Status.LoadBalancer.Ingress) > 0 && in.Status.LoadBalancer.Ingress[0].IP == got.Status.LoadBalancer.Ingress[0].IP, nil
	}
}

// lbGone: the tenant Service (held by the ccm's finalizer until the infra side is cleaned up)
// and its infra Service no longer exist.
func lbGone(svc *corev1.Service) func(context.Context) (bool, error) {
	return func(ctx context.Context) (bool, error) {
		err := env.Tenant.Client.Get(ctx, client.ObjectKeyFromObject(svc), &corev1.Service{})
		if !apierrors.IsNotFound(err) {
			return false, client.IgnoreNotFound(err)
		}
		key, err := infraKey(svc)
		if err != nil {
			return false, err
		}
		err = env.Management.Client.Get(ctx, key, &corev1.Service{})
		return apierrors.IsNotFound(err), client.IgnoreNotFound(err)
	}
}

// infraServicesOf counts the tenant's infra Services that stand for svc.
func infraServicesOf(ctx context.Context, svc *corev1.Service) (int, error) {
	var list corev1.ServiceList
	err := env.Management.Client.List(ctx, &list, client.InNamespace(infraNS), client.MatchingLabels{
		infra.LabelClusterName: cluster, infra.LabelComponent: loadbalancer.Component, loadbalancer.LabelServiceUID: string(svc.UID),
	})
	return len(list.Items), err
}

func deleteLB(t testing.TB, ctx context.Context, svc *corev1.Service) {
	t.Helper()
	if err := env.Tenant.Client.Delete(ctx, svc); client.IgnoreNotFound(err) != nil {
		t.Fatalf("deleting tenant Service %s: %v", svc.Name, err)
	}
}

// Volumes, through csi-controller as the CSI sidecars call it.

var rwo = &csi.VolumeCapability{
	AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
	AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}},
}

const volumeSize = 16 << 20

func scope() infra.Scope { return infra.Scope{Namespace: infraNS, ClusterName: cluster} }

func startController(t testing.TB) *fixture.Controller {
	t.Helper()
	c, err := fixture.StartController(env.Management.Config, scope(), fixture.Storage(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func createVolume(cc csi.ControllerClient, name string) func(context.Context) error {
	return func(ctx context.Context) error {
		_, err := cc.CreateVolume(ctx, &csi.CreateVolumeRequest{Name: name, VolumeCapabilities: []*csi.VolumeCapability{rwo},
			CapacityRange: &csi.CapacityRange{RequiredBytes: volumeSize}})
		return err
	}
}

func publish(cc csi.ControllerClient, volID string) func(context.Context) error {
	return func(ctx context.Context) error {
		_, err := cc.ControllerPublishVolume(ctx, &csi.ControllerPublishVolumeRequest{VolumeId: volID, NodeId: vmName, VolumeCapability: rwo})
		return err
	}
}

func unpublish(cc csi.ControllerClient, volID string) func(context.Context) error {
	return func(ctx context.Context) error {
		_, err := cc.ControllerUnpublishVolume(ctx, &csi.ControllerUnpublishVolumeRequest{VolumeId: volID, NodeId: vmName})
		return err
	}
}

func deleteVolume(cc csi.ControllerClient, volID string) func(context.Context) error {
	return func(ctx context.Context) error {
		_, err := cc.DeleteVolume(ctx, &csi.DeleteVolumeRequest{VolumeId: volID})
		return err
	}
}

func volID(name string) string { return controller.VolumeID(cluster, name) }

// dataVolumesFor counts the DataVolumes created for CSI volume name.
func dataVolumesFor(ctx context.Context, name string) (n int, phase cdiv1.DataVolumePhase, err error) {
	var list cdiv1.DataVolumeList
	if err := env.Management.Client.List(ctx, &list, client.InNamespace(infraNS)); err != nil {
		return 0, "", err
	}
	for _, dv := range list.Items {
		if dv.Annotations[controller.AnnVolumeName] == name {
			n++
			phase = dv.Status.Phase
		}
	}
	return n, phase, nil
}

// hotplugged counts how often volume id is in the worker VM's and its instance's specs, and
// returns its hot-plug phase on the instance.
func hotplugged(ctx context.Context, id string) (inVM, inVMI int, phase kubevirtv1.VolumePhase, err error) {
	key := client.ObjectKey{Namespace: infraNS, Name: vmName}
	vm := &kubevirtv1.VirtualMachine{}
	if err := env.Management.Client.Get(ctx, key, vm); err != nil {
		return 0, 0, "", err
	}
	vmi := &kubevirtv1.VirtualMachineInstance{}
	if err := env.Management.Client.Get(ctx, key, vmi); err != nil {
		return 0, 0, "", err
	}
	for _, v := range vm.Spec.Template.Spec.Volumes {
		if v.Name == id {
			inVM++
		}
	}
	for _, v := range vmi.Spec.Volumes {
		if v.Name == id {
			inVMI++
		}
	}
	for _, st := range vmi.Status.VolumeStatus {
		if st.Name == id {
			phase = st.Phase
		}
	}
	return inVM, inVMI, phase, nil
}

// Audit-log counts: requests the management apiserver answered with success.

func succeeded(e harness.AuditEvent) bool {
	return e.ResponseStatus != nil && e.ResponseStatus.Code >= 200 && e.ResponseStatus.Code < 300
}

// auditCounts counts the successful requests of the events' keys ("create services", …).
// Every caller counts writes the component made, so none at all means the log or the filter
// is wrong: that fails here instead of letting a "fewer than expected" branch pass on nothing.
func auditCounts(t testing.TB, since time.Time, keep func(harness.AuditEvent) bool) map[string]int {
	t.Helper()
	events, err := env.Management.AuditEvents(since, func(e harness.AuditEvent) bool { return keep(e) && succeeded(e) })
	if err != nil {
		t.Fatal(err)
	}
	if len(events) == 0 {
		t.Fatalf("audit log: no successful request of the component since %s", since.Format(time.RFC3339Nano))
	}
	return harness.CountByKey(events)
}
