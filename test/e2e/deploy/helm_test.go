package deploy_test

import (
	"context"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/tenantcloud/tenantcloud/test/chartrender"
	"github.com/tenantcloud/tenantcloud/test/harness"
)

// repoRoot is the repository root, found from this file's path.
func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "..")
}

func chartDir(name string) string { return chartrender.ChartDir(name) }

// helmBin returns bin/helm, or skips (fails where required: harness.Require) when it has not
// been built.
func helmBin(t *testing.T) string {
	t.Helper()
	return harness.Bin(t, "helm", "hack/bin-helm.sh")
}

// helm runs bin/helm with args and returns its stdout.
func helm(t *testing.T, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := chartrender.Helm(ctx, helmBin(t), args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Values the tests render the charts with.
const (
	release = "tc"
	cluster = "tenant-a"
)

// mgmtSets are the management chart's values for the tests: every optional object switched on
// that the harness has the APIs for (cert-manager is not installed there).
var mgmtSets = []string{
	"clusterName=" + cluster,
	"config.storage.defaultStorageClass=fast",
	"config.storage.allowedStorageClasses={replicated}",
	"config.storage.defaultSnapshotClass=snaps",
	"config.loadBalancer.allowedPools={public}",
	"config.loadBalancer.maxServices=5",
	"config.autoscaling.nodeGroupSelector.tenantcloud\\.io/autoscale=true",
	"ccm.nodeZones=true",
}

var tenantSets = []string{
	"clusterName=" + cluster,
	"infraNamespace=" + cluster,
	"storageClasses[0].name=tenantcloud",
	"storageClasses[0].default=true",
	"storageClasses[0].infraStorageClassName=replicated",
	"storageClasses[0].bus=virtio",
	"storageClasses[0].allowVolumeExpansion=true",
	"volumeSnapshotClass.infraSnapshotClassName=snaps",
}

// render runs helm template for chart into namespace ns and returns the objects.
func render(t *testing.T, chart, ns string, sets ...string) []*unstructured.Unstructured {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	objs, err := chartrender.Template(ctx, helmBin(t), chart, release, ns, sets...)
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

// find returns the rendered object of kind and name, or fails.
func find(t *testing.T, objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	t.Helper()
	o := chartrender.Find(objs, kind, name)
	if o == nil {
		t.Fatalf("no %s %s rendered", kind, name)
	}
	return o
}

// countKinds is "Kind=n" for each kind, for the log.
func countKinds(objs []*unstructured.Unstructured) map[string]int {
	n := map[string]int{}
	for _, o := range objs {
		n[o.GetKind()]++
	}
	return n
}

// dryRunAll creates every object on c with a server-side dry-run, placing namespaced ones in
// ns, and reports each rejection.
func dryRunAll(t *testing.T, ctx context.Context, c client.Client, ns string, objs []*unstructured.Unstructured) {
	t.Helper()
	for _, o := range objs {
		placed, namespaced, err := chartrender.Placed(c, ns, o)
		if err != nil {
			t.Errorf("the apiserver does not know the kind: %v", err)
			continue
		}
		if namespaced && o.GetNamespace() != "" && o.GetNamespace() != ns {
			t.Errorf("%s %s: rendered into namespace %q, want the release namespace", o.GetKind(), o.GetName(), o.GetNamespace())
		}
		if err := c.Create(ctx, placed, client.DryRunAll); err != nil {
			t.Errorf("dry-run create %s %s: %v", o.GetKind(), o.GetName(), err)
		}
	}
}

func createNamespace(t *testing.T, ctx context.Context, c client.Client, ns string) {
	t.Helper()
	err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}
