package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestReferenceUpToDate fails when docs/config.md differs from what pkg/config generates:
// change a config field or its comment, then run `go run ./hack/configdoc`.
func TestReferenceUpToDate(t *testing.T) {
	root := filepath.Join("..", "..")
	want, err := Generate(filepath.Join(root, "pkg", "config"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(root, "docs", "config.md"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("docs/config.md is stale: run `go run ./hack/configdoc` from the repository root")
	}
}

// TestEveryKeyDocumented: the reference names every key of the example file's sections, so a
// field added to pkg/config without a doc comment (Generate refuses it) or a renamed JSON key
// shows up here.
func TestEveryKeyDocumented(t *testing.T) {
	doc, err := Generate(filepath.Join("..", "..", "pkg", "config"))
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"clusterName", "infraNamespace", "infraKubeconfig", "tenantKubeconfig",
		"loadBalancer.allowedPools", "storage.defaultStorageClass", "storage.diskBus", "autoscaling.nodeGroupSelector"} {
		if !strings.Contains(string(doc), "| `"+key+"` |") {
			t.Errorf("reference has no row for %s", key)
		}
	}
	if !strings.Contains(string(doc), "`scsi`, `virtio`") {
		t.Errorf("storage.diskBus does not list its values:\n%s", doc)
	}
}

func TestDescribe(t *testing.T) {
	for _, tt := range []struct{ name, in, want string }{
		{"MaxVolumes", "MaxVolumes caps the number of volumes; 0 = unlimited.", "Caps the number of volumes; 0 = unlimited."},
		{"ClusterName", "ClusterName is the Cluster API cluster name.\n\nA note for Go readers.", "The Cluster API cluster name."},
		{"AllowedPools", "AllowedPools are the pool\nnames.", "The pool names."},
		{"X", "Something else entirely.", "Something else entirely."},
	} {
		if got := describe(tt.name, commentGroup(tt.in)); got != tt.want {
			t.Errorf("describe(%s, %q) = %q, want %q", tt.name, tt.in, got, tt.want)
		}
	}
}
