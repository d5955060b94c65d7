package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRun(t *testing.T) {
	cfg := writeConfig(t)
	missing := filepath.Join(t.TempDir(), "no-such.kubeconfig")
	withMissing := writeFile(t, "clusterName: c1\ninfraNamespace: tenant-ns\ninfraKubeconfig: "+missing+"\nstorage:\n  defaultStorageClass: fast\n")
	tests := []struct {
		args     []string
		wantCode int
		want     string
	}{
		{[]string{"--help"}, 0, `(default "unix:///csi/csi.sock")`},
		{[]string{"--help"}, 0, `--infra-api-qps`},
		{[]string{"--config", "x.yaml", "--endpoint="}, 2, "error: --endpoint must not be empty"},
		{[]string{"--config", "x.yaml", "--endpoint", "tcp://0.0.0.0:1"}, 2, "want unix:///path/to/csi.sock"},
		{[]string{"--config", "x.yaml", "--infra-api-qps", "0"}, 2, "must be positive"},
		// The infra credentials are read before anything is served.
		{[]string{"--config", withMissing}, 1, "infra API credentials"},
		{[]string{"--config", cfg, "--check-config"}, 0, "config OK: cluster=c1 namespace=tenant-ns"},
	}
	for _, tt := range tests {
		var out bytes.Buffer
		if code := run(tt.args, &out, &out); code != tt.wantCode || !strings.Contains(out.String(), tt.want) {
			t.Errorf("run(%q) = %d, output %q; want %d and %q", tt.args, code, &out, tt.wantCode, tt.want)
		}
	}
}

func writeConfig(t *testing.T) string {
	t.Helper()
	return writeFile(t, "clusterName: c1\ninfraNamespace: tenant-ns\nstorage:\n  defaultStorageClass: fast\n")
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
