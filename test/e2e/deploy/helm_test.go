package deploy_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"
	sigsyaml "sigs.k8s.io/yaml"
)

// repoRoot is the repository root, found from this file's path.
func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "..")
}

func chartDir(name string) string { return filepath.Join(repoRoot(), "deploy", "charts", name) }

// helmBin returns bin/helm, or skips the test when it has not been built.
func helmBin(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(repoRoot(), "bin", "helm")
	if _, err := os.Stat(bin); err != nil {
		t.Skipf("bin/helm not built (run hack/bin-helm.sh): %v", err)
	}
	return bin
}

// helm runs bin/helm with args and returns its stdout; stderr goes into the failure.
func helm(t *testing.T, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, helmBin(t), args...)
	// Keep helm away from the user's helm config and caches.
	home := t.TempDir()
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+home+"/cache", "HELM_CONFIG_HOME="+home+"/config",
		"HELM_DATA_HOME="+home+"/data")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("helm %s: %v\n%s%s", strings.Join(args, " "), err, stderr.String(), stdout.String())
	}
	return stdout.Bytes()
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
	args := []string{"template", release, chartDir(chart), "--namespace", ns}
	for _, s := range sets {
		args = append(args, "--set", s)
	}
	objs, err := decode(helm(t, args...))
	if err != nil {
		t.Fatalf("decoding helm template %s: %v", chart, err)
	}
	if len(objs) == 0 {
		t.Fatalf("helm template %s rendered nothing", chart)
	}
	return objs
}

func decode(out []byte) ([]*unstructured.Unstructured, error) {
	var objs []*unstructured.Unstructured
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(out)))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return objs, nil
		}
		if err != nil {
			return nil, err
		}
		var m map[string]any
		if err := sigsyaml.Unmarshal(doc, &m); err != nil {
			return nil, fmt.Errorf("%w in:\n%s", err, doc)
		}
		if len(m) == 0 {
			continue // an empty document (comments only)
		}
		objs = append(objs, &unstructured.Unstructured{Object: m})
	}
}

// find returns the rendered object of kind and name, or fails.
func find(t *testing.T, objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	t.Helper()
	for _, o := range objs {
		if o.GetKind() == kind && o.GetName() == name {
			return o
		}
	}
	t.Fatalf("no %s %s rendered", kind, name)
	return nil
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
		o = o.DeepCopy()
		namespaced, err := c.IsObjectNamespaced(o)
		if err != nil {
			t.Errorf("%s %s: the apiserver does not know the kind: %v", o.GetKind(), o.GetName(), err)
			continue
		}
		if namespaced {
			if o.GetNamespace() != "" && o.GetNamespace() != ns {
				t.Errorf("%s %s: rendered into namespace %q, want the release namespace", o.GetKind(), o.GetName(), o.GetNamespace())
			}
			o.SetNamespace(ns)
		}
		if err := c.Create(ctx, o, client.DryRunAll); err != nil {
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
