package main

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/tenantcloud/tenantcloud/pkg/config"
)

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "tenant.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestRun(t *testing.T) {
	noTenant := writeConfig(t, "clusterName: c\ninfraNamespace: ns\nstorage: {defaultStorageClass: s}\n")
	tests := []struct {
		args     []string
		wantCode int
		want     string
	}{
		{[]string{"--help"}, 0, "--load-balancer-class"},
		{nil, 2, "error: --config is required"},
		{[]string{"--config", noTenant, "--load-balancer-class", "not a class!"}, 2, "--load-balancer-class"},
		{[]string{"--config", noTenant, "--leader-elect-lease-duration", "1s"}, 2, "retry period < renew deadline < lease duration"},
		{[]string{"--config", noTenant, "--secure-port", "70000"}, 2, "--secure-port"},
		{[]string{"--config", noTenant}, 1, "tenantKubeconfig: Required value"},
	}
	for _, tt := range tests {
		var out bytes.Buffer
		if code := run(tt.args, &out, &out); code != tt.wantCode || !strings.Contains(out.String(), tt.want) {
			t.Errorf("run(%q) = %d, output %q; want %d and %q", tt.args, code, &out, tt.wantCode, tt.want)
		}
	}
}

func TestFrameworkArgs(t *testing.T) {
	var out bytes.Buffer
	// Parse defaults into flags through a real run that stops at --check-config.
	cfgPath := writeConfig(t, "clusterName: c\ninfraNamespace: ns\ntenantKubeconfig: /t/kubeconfig\nstorage: {defaultStorageClass: s}\n")
	if code := run([]string{"--config", cfgPath, "--check-config"}, &out, &out); code != 0 {
		t.Fatalf("check-config: %d %s", code, &out)
	}
	cfg := &config.Config{ClusterName: "c", TenantKubeconfig: "/t/kubeconfig"}
	args := frameworkArgs(cfg, cfgPath)
	for _, want := range []string{
		"--cloud-provider=tenantcloud", "--cloud-config=" + cfgPath, "--kubeconfig=/t/kubeconfig", "--cluster-name=c",
		"--configure-cloud-routes=false", "--leader-elect=true", "--secure-port=0", "--leader-elect-resource-namespace=kube-system",
	} {
		if !slices.Contains(args, want) {
			t.Errorf("framework args %q lack %q", args, want)
		}
	}
	if !slices.Equal(controllers, []string{"cloud-node-controller", "cloud-node-lifecycle-controller", "service-lb-controller"}) {
		t.Errorf("controllers %v", controllers)
	}
}
