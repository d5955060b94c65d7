package cdi

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	cdiv1 "kubevirt.io/containerized-data-importer-api/pkg/apis/core/v1beta1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcloud/tenantcloud/test/harness"
)

// waitTimeout bounds every wait on the simulator; steps take a few hundred milliseconds.
const waitTimeout = 30 * time.Second

var (
	block = corev1.PersistentVolumeBlock
	fs    = corev1.PersistentVolumeFilesystem
	rwo   = corev1.ReadWriteOnce
	rwx   = corev1.ReadWriteMany
)

func kube() client.Client { return env.Management.Client }

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func namespace(t *testing.T, name string) string {
	t.Helper()
	err := kube().Create(testCtx(t), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	return name
}

type classOpt func(*storagev1.StorageClass)

func expandable(sc *storagev1.StorageClass) { t := true; sc.AllowVolumeExpansion = &t }
func defaultClass(sc *storagev1.StorageClass) {
	sc.Annotations = map[string]string{annDefaultClass: "true"}
}

// storageClass creates a LINSTOR class (removed when the test ends, as classes are global).
func storageClass(t *testing.T, name string, opts ...classOpt) *storagev1.StorageClass {
	t.Helper()
	sc := &storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: name}, Provisioner: Driver,
		Parameters: map[string]string{"linstor.csi.linbit.com/placementCount": "2"}}
	for _, o := range opts {
		o(sc)
	}
	if err := kube().Create(testCtx(t), sc); err != nil {
		t.Fatalf("creating StorageClass %s: %v", name, err)
	}
	t.Cleanup(func() { _ = kube().Delete(context.Background(), sc) })
	return sc
}

// snapshotClass creates a VolumeSnapshotClass for the LINSTOR driver (removed at test end:
// its mere existence switches CDI's PVC clones to the snapshot strategy).
func snapshotClass(t *testing.T, name string) {
	t.Helper()
	c := newUnstructured(snapshotClassGVK)
	c.SetName(name)
	c.Object["driver"] = Driver
	c.Object["deletionPolicy"] = "Delete"
	if err := kube().Create(testCtx(t), c); err != nil {
		t.Fatalf("creating VolumeSnapshotClass %s: %v", name, err)
	}
	t.Cleanup(func() { _ = kube().Delete(context.Background(), c) })
}

// dvSpec describes a DataVolume for newDV.
type dvSpec struct {
	class  *string
	size   string // empty: no size (clones take the source's)
	mode   *corev1.PersistentVolumeMode
	access []corev1.PersistentVolumeAccessMode
	source cdiv1.DataVolumeSource
	labels map[string]string
}

func ptr[T any](v T) *T { return &v }

func blank() cdiv1.DataVolumeSource {
	return cdiv1.DataVolumeSource{Blank: &cdiv1.DataVolumeBlankImage{}}
}

func newDV(t *testing.T, ns, name string, s dvSpec) *cdiv1.DataVolume {
	t.Helper()
	src := s.source
	dv := &cdiv1.DataVolume{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: s.labels},
		Spec: cdiv1.DataVolumeSpec{
			Source:  &src,
			Storage: &cdiv1.StorageSpec{StorageClassName: s.class, VolumeMode: s.mode, AccessModes: s.access},
		},
	}
	if s.size != "" {
		dv.Spec.Storage.Resources.Requests = corev1.ResourceList{corev1.ResourceStorage: resource.MustParse(s.size)}
	}
	if err := kube().Create(testCtx(t), dv); err != nil {
		t.Fatalf("creating DataVolume %s/%s: %v", ns, name, err)
	}
	return dv
}

// phaseWatch records every phase a DataVolume's status goes through, from a watch, so short
// phases are never missed.
type phaseWatch struct {
	w      watch.Interface
	phases chan cdiv1.DataVolumePhase
}

func watchPhases(t *testing.T, ns, name string) *phaseWatch {
	t.Helper()
	wc, err := client.NewWithWatch(env.Management.Config, client.Options{Scheme: kube().Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	w, err := wc.Watch(testCtx(t), &cdiv1.DataVolumeList{}, client.InNamespace(ns),
		client.MatchingFieldsSelector{Selector: fields.OneTermEqualSelector("metadata.name", name)})
	if err != nil {
		t.Fatalf("watching DataVolume %s/%s: %v", ns, name, err)
	}
	pw := &phaseWatch{w: w, phases: make(chan cdiv1.DataVolumePhase, 64)}
	go func() {
		defer close(pw.phases)
		last := cdiv1.DataVolumePhase("-")
		for ev := range w.ResultChan() {
			dv, ok := ev.Object.(*cdiv1.DataVolume)
			if !ok || dv.Status.Phase == last {
				continue
			}
			last = dv.Status.Phase
			pw.phases <- last
		}
	}()
	t.Cleanup(w.Stop)
	return pw
}

// until collects phases until final appears and returns them in order.
func (pw *phaseWatch) until(t *testing.T, final cdiv1.DataVolumePhase) []cdiv1.DataVolumePhase {
	t.Helper()
	var seen []cdiv1.DataVolumePhase
	deadline := time.After(waitTimeout)
	for {
		select {
		case p, ok := <-pw.phases:
			if !ok {
				t.Fatalf("watch ended; phases so far %v", seen)
			}
			if p != "" {
				seen = append(seen, p)
			}
			if p == final {
				return seen
			}
		case <-deadline:
			t.Fatalf("DataVolume did not reach %s within %s; phases %v", final, waitTimeout, seen)
		}
	}
}

func assertPhases(t *testing.T, got []cdiv1.DataVolumePhase, want ...cdiv1.DataVolumePhase) {
	t.Helper()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("phases = %v, want %v", got, want)
	}
}

// eventually polls cond until it holds or waitTimeout passes.
func eventually(t *testing.T, what string, cond func(ctx context.Context) (bool, error)) {
	t.Helper()
	harness.Eventually(t, testCtx(t), waitTimeout, what, cond)
}

// stays checks that cond keeps holding for d (a deliberate hold, e.g. a stalled fault point).
func stays(t *testing.T, what string, d time.Duration, cond func(ctx context.Context) (bool, error)) {
	t.Helper()
	// cond gets the test's context, not the poll's: a request started just before the
	// poll's deadline must not fail the check.
	ctx := testCtx(t)
	err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, d, true, func(context.Context) (bool, error) {
		ok, err := cond(ctx)
		if err != nil {
			return false, err
		}
		if !ok {
			return false, fmt.Errorf("no longer %s", what)
		}
		return false, nil
	})
	if !wait.Interrupted(err) {
		t.Fatalf("expected %s for %s: %v", what, d, err)
	}
}

func getDV(t *testing.T, key types.NamespacedName) *cdiv1.DataVolume {
	t.Helper()
	dv := &cdiv1.DataVolume{}
	if err := kube().Get(testCtx(t), key, dv); err != nil {
		t.Fatal(err)
	}
	return dv
}

func waitDVPhase(t *testing.T, key types.NamespacedName, phase cdiv1.DataVolumePhase) *cdiv1.DataVolume {
	t.Helper()
	dv := &cdiv1.DataVolume{}
	eventually(t, fmt.Sprintf("DataVolume %s in phase %s", key, phase), func(ctx context.Context) (bool, error) {
		if err := kube().Get(ctx, key, dv); err != nil {
			return false, err
		}
		return dv.Status.Phase == phase, nil
	})
	return dv
}

func getPVC(t *testing.T, key types.NamespacedName) *corev1.PersistentVolumeClaim {
	t.Helper()
	pvc := &corev1.PersistentVolumeClaim{}
	if err := kube().Get(testCtx(t), key, pvc); err != nil {
		t.Fatal(err)
	}
	return pvc
}

func waitPVC(t *testing.T, key types.NamespacedName, what string, cond func(*corev1.PersistentVolumeClaim) bool) *corev1.PersistentVolumeClaim {
	t.Helper()
	pvc := &corev1.PersistentVolumeClaim{}
	eventually(t, fmt.Sprintf("PVC %s %s", key, what), func(ctx context.Context) (bool, error) {
		if err := kube().Get(ctx, key, pvc); err != nil {
			return false, client.IgnoreNotFound(err)
		}
		return cond(pvc), nil
	})
	return pvc
}

func getPV(t *testing.T, name string) *corev1.PersistentVolume {
	t.Helper()
	pv := &corev1.PersistentVolume{}
	if err := kube().Get(testCtx(t), client.ObjectKey{Name: name}, pv); err != nil {
		t.Fatal(err)
	}
	return pv
}

func plainClaim(t *testing.T, ns, name, class, size string, mode corev1.PersistentVolumeMode) *corev1.PersistentVolumeClaim {
	t.Helper()
	pvc := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.PersistentVolumeClaimSpec{
			StorageClassName: &class, VolumeMode: &mode, AccessModes: []corev1.PersistentVolumeAccessMode{rwo},
			Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse(size)}},
		},
	}
	if err := kube().Create(testCtx(t), pvc); err != nil {
		t.Fatalf("creating PVC %s/%s: %v", ns, name, err)
	}
	return pvc
}

// waitEvent waits for an Event with reason on the named object and returns its message.
func waitEvent(t *testing.T, ns, kind, name, reason string) string {
	t.Helper()
	var msg string
	eventually(t, fmt.Sprintf("%s event on %s %s/%s", reason, kind, ns, name), func(ctx context.Context) (bool, error) {
		var list corev1.EventList
		if err := kube().List(ctx, &list, client.InNamespace(ns),
			client.MatchingFields{"involvedObject.name": name, "involvedObject.kind": kind}); err != nil {
			return false, err
		}
		for _, e := range list.Items {
			if e.Reason == reason {
				msg = e.Message
				return true, nil
			}
		}
		return false, nil
	})
	return msg
}

func condition(dv *cdiv1.DataVolume, typ cdiv1.DataVolumeConditionType) cdiv1.DataVolumeCondition {
	if c := findCondition(dv.Status.Conditions, typ); c != nil {
		return *c
	}
	return cdiv1.DataVolumeCondition{}
}

func storage(rl corev1.ResourceList) int64 { q := rl[corev1.ResourceStorage]; return q.Value() }

func mustContain(t *testing.T, what, got, want string) {
	t.Helper()
	if !strings.Contains(got, want) {
		t.Fatalf("%s = %q, want it to contain %q", what, got, want)
	}
}

func getSnapshot(t *testing.T, key types.NamespacedName) *unstructured.Unstructured {
	t.Helper()
	u := newSnapshot()
	if err := kube().Get(testCtx(t), key, u); err != nil {
		t.Fatal(err)
	}
	return u
}

func newVolumeSnapshot(t *testing.T, ns, name, claim, class string) *unstructured.Unstructured {
	t.Helper()
	vs := newSnapshot()
	vs.SetNamespace(ns)
	vs.SetName(name)
	spec := map[string]any{"source": map[string]any{"persistentVolumeClaimName": claim}}
	if class != "" {
		spec["volumeSnapshotClassName"] = class
	}
	vs.Object["spec"] = spec
	if err := kube().Create(testCtx(t), vs); err != nil {
		t.Fatalf("creating VolumeSnapshot %s/%s: %v", ns, name, err)
	}
	return vs
}

func waitSnapshotReady(t *testing.T, key types.NamespacedName) volumeSnapshot {
	t.Helper()
	u := newSnapshot()
	eventually(t, fmt.Sprintf("VolumeSnapshot %s readyToUse", key), func(ctx context.Context) (bool, error) {
		if err := kube().Get(ctx, key, u); err != nil {
			return false, err
		}
		return volumeSnapshot{u}.readyToUse(), nil
	})
	return volumeSnapshot{u}
}

func key(ns, name string) types.NamespacedName {
	return types.NamespacedName{Namespace: ns, Name: name}
}
