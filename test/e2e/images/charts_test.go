package images

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/tenantcloud/tenantcloud/test/chartrender"
	"github.com/tenantcloud/tenantcloud/test/harness"
)

// defaultRegistry is where the charts' default repositories point, and make images' default
// REGISTRY.
const defaultRegistry = "ghcr.io/tenantcloud"

// upstreamOnly are the images the charts take from upstream: the Go module proxy serves no
// version of node-driver-registrar or livenessprobe, so make images cannot build them.
var upstreamOnly = []string{
	"registry.k8s.io/sig-storage/csi-node-driver-registrar:",
	"registry.k8s.io/sig-storage/livenessprobe:",
}

var chartSets = map[string][]string{
	"tenantcloud": {
		"clusterName=tenant-a",
		"config.storage.defaultStorageClass=fast",
		"config.loadBalancer.allowedPools={public}",
	},
	"tenantcloud-tenant": {"clusterName=tenant-a", "infraNamespace=tenant-a"},
}

// TestChartsReferenceBuiltImages renders both charts and checks every image they run against
// the images make images built: with bin/images/values.yaml (what make images writes for
// helm -f) each is exactly a built image; with the charts' defaults each names a built image's
// repository under ghcr.io/tenantcloud with its tag (our programs: the chart's appVersion,
// which a release builds with VERSION=<appVersion>). Only node-driver-registrar and
// livenessprobe come from upstream.
func TestChartsReferenceBuiltImages(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	root := repoRoot(t)
	helm := harness.Bin(t, "helm", "make bin")
	images := builtImages(t, root)
	byRef := map[string]image{}
	byName := map[string]image{}
	for _, img := range images {
		byRef[img.Ref] = img
		byName[img.Name] = img
	}
	values := filepath.Join(root, "bin", "images", "values.yaml")

	used := map[string]bool{}
	for chart, sets := range chartSets {
		appVersion := chartAppVersion(t, chart)
		withValues := renderImages(ctx, t, helm, chart, append([]string{"-f", values}, setArgs(sets)...))
		for _, ref := range withValues {
			if isUpstreamOnly(ref) {
				continue
			}
			img, ok := byRef[ref]
			if !ok {
				t.Errorf("%s with %s runs %s, which make images did not build", chart, values, ref)
				continue
			}
			used[img.Name] = true
		}
		for _, ref := range renderImages(ctx, t, helm, chart, setArgs(sets)) {
			if isUpstreamOnly(ref) {
				continue
			}
			repo, tag, _ := strings.Cut(ref, "@")
			if i := strings.LastIndex(repo, ":"); i >= 0 {
				repo, tag = repo[:i], repo[i+1:]
			}
			name, ok := strings.CutPrefix(repo, defaultRegistry+"/")
			img, built := byName[name]
			if !ok || !built {
				t.Errorf("%s's default image %s is not one make images builds (%s/<name>)", chart, ref, defaultRegistry)
				continue
			}
			want := img.Tag
			if img.Config.Config.Labels["org.opencontainers.image.source"] == "https://github.com/tenantcloud/tenantcloud" {
				want = appVersion
			}
			if tag != want {
				t.Errorf("%s's default image %s: tag %q, want %q", chart, ref, tag, want)
			}
		}
	}
	for _, img := range images {
		if !used[img.Name] && img.Name != "snapshot-controller" {
			t.Errorf("no chart runs the %s image", img.Name)
		}
	}
}

func setArgs(sets []string) []string {
	var args []string
	for _, s := range sets {
		args = append(args, "--set", s)
	}
	return args
}

func isUpstreamOnly(ref string) bool {
	for _, p := range upstreamOnly {
		if strings.HasPrefix(ref, p) {
			return true
		}
	}
	return false
}

// renderImages renders chart with args and returns the image of every container and init
// container of its workloads.
func renderImages(ctx context.Context, t *testing.T, helm, chart string, args []string) []string {
	t.Helper()
	out, err := chartrender.Helm(ctx, helm, append([]string{"template", "tc", chartrender.ChartDir(chart), "--namespace", "tenant-a"}, args...)...)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := chartrender.Decode(out)
	if err != nil {
		t.Fatal(err)
	}
	var refs []string
	for _, o := range objs {
		for _, field := range []string{"containers", "initContainers"} {
			cs, _, _ := unstructured.NestedSlice(o.Object, "spec", "template", "spec", field)
			for _, c := range cs {
				if m, ok := c.(map[string]any); ok {
					if ref, ok := m["image"].(string); ok {
						refs = append(refs, ref)
					}
				}
			}
		}
	}
	if len(refs) == 0 {
		t.Fatalf("%s rendered no containers", chart)
	}
	return refs
}

func chartAppVersion(t *testing.T, chart string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(chartrender.ChartDir(chart), "Chart.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		AppVersion string `json:"appVersion"`
	}
	if err := sigsyaml.Unmarshal(data, &c); err != nil {
		t.Fatal(err)
	}
	return c.AppVersion
}
