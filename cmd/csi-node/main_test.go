package main

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRun(t *testing.T) {
	t.Setenv(nodeNameEnv, "")
	cfg := writeConfig(t)
	tests := []struct {
		args     []string
		wantCode int
		want     string
	}{
		{[]string{"--help"}, 0, `(default "unix:///csi/csi.sock")`},
		{[]string{"--help"}, 0, `--node-id`},
		{[]string{"--help"}, 0, `--node-name`},
		{[]string{"--help"}, 0, `(default "/dev/disk/by-id")`},
		{[]string{"--help"}, 0, `(default "/var/lib/kubelet")`},
		{[]string{"--help"}, 0, `(default 16)`},
		{[]string{"--help"}, 0, `--device-wait-timeout duration`},
		{[]string{"--config", "x.yaml", "--max-volumes-per-node", "0"}, 2, "--max-volumes-per-node must be at least 1, got 0"},
		{[]string{"--config", "x.yaml", "--device-dir", ""}, 2, "--device-dir must not be empty"},
		{[]string{"--config", "x.yaml", "--endpoint", "tcp://0.0.0.0:10000"}, 2, "want unix:///path/to/csi.sock"},
		{[]string{"--config", "x.yaml", "--device-wait-timeout", "0s"}, 2, "--device-wait-timeout must be positive"},
		{[]string{"--help"}, 0, `--driver-name string`},
		{[]string{"--config", "x.yaml", "--driver-name", "csi.example.com"}, 2, `--driver-name must be csi.tenantcloud.io or csi.kubevirt.io, got "csi.example.com"`},
		// Without --node-id, --node-name or $NODE_NAME there is no way to learn the VM name.
		{[]string{"--config", cfg}, 1, "cannot tell which VM this is: set --node-id, or --node-name"},
		{[]string{"--config", cfg, "--node-id", "kubevirt://vm-1", "--kubelet-dir", t.TempDir()}, 1, `node ID "kubevirt://vm-1" is not a VM name`},
		{[]string{"--help"}, 0, `--require-zone`},
		// The zone comes from the tenant Node, so --node-id alone cannot serve topology.
		{[]string{"--config", cfg, "--node-id", "vm-1", "--require-zone"}, 1, "--require-zone reads the zone from the tenant Node: set --node-name"},
	}
	for _, tt := range tests {
		var out bytes.Buffer
		if code := run(tt.args, &out, &out); code != tt.wantCode || !strings.Contains(out.String(), tt.want) {
			t.Errorf("run(%q) = %d, output %q; want %d and %q", tt.args, code, &out, tt.wantCode, tt.want)
		}
	}
}

func TestUnixSocketPath(t *testing.T) {
	tests := []struct {
		endpoint, want string
		ok             bool
	}{
		{"unix:///csi/csi.sock", "/csi/csi.sock", true},
		{"unix:/csi/csi.sock", "/csi/csi.sock", true},
		{"unix:///var/lib/kubelet/plugins/csi.tenantcloud.io//csi.sock", "/var/lib/kubelet/plugins/csi.tenantcloud.io/csi.sock", true},
		{"unix://csi/csi.sock", "", false}, // "csi" would be a host
		{"unix:csi.sock", "", false},
		{"/csi/csi.sock", "", false},
		{"tcp://127.0.0.1:1234", "", false},
		{"", "", false},
	}
	for _, tt := range tests {
		got, err := unixSocketPath(tt.endpoint)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("unixSocketPath(%q) = %q, %v; want %q ok=%v", tt.endpoint, got, err, tt.want, tt.ok)
		}
	}
}

func TestRemoveStaleSocket(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "csi.sock")
	staleSocket(t, sock)
	if err := removeStaleSocket(sock); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(sock); !os.IsNotExist(err) {
		t.Errorf("stale socket still there: %v", err)
	}
	if err := removeStaleSocket(sock); err != nil {
		t.Errorf("no socket at all: %v", err)
	}
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := removeStaleSocket(file); err == nil || !strings.Contains(err.Error(), "is not a socket") {
		t.Errorf("removeStaleSocket(regular file) = %v, want refusal", err)
	}
	if _, err := os.Stat(file); err != nil {
		t.Errorf("regular file was removed: %v", err)
	}
}

// staleSocket leaves a socket file at path with nobody listening, as a killed plugin does.
func staleSocket(t testing.TB, path string) {
	t.Helper()
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
}

func writeConfig(t testing.TB) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config.yaml")
	const cfg = "clusterName: c1\ninfraNamespace: tenant-ns\nstorage:\n  defaultStorageClass: fast\n"
	if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
