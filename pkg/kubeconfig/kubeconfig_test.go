package kubeconfig

import (
	"os"
	"path/filepath"
	"testing"
)

func TestRESTConfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kubeconfig")
	data := `apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://192.0.2.1:6443"}}]
users: [{name: u, user: {token: t0k}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := RESTConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Host != "https://192.0.2.1:6443" || cfg.BearerToken != "t0k" {
		t.Fatalf("got host %q token %q", cfg.Host, cfg.BearerToken)
	}
	if _, err := RESTConfig(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Fatal("a missing kubeconfig file gave no error")
	}
	// Outside a pod there is no ServiceAccount: the empty path must say so, not guess.
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	if _, err := RESTConfig(""); err == nil {
		t.Fatal("in-cluster config outside a cluster gave no error")
	}
}
