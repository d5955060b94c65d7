package cli

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"github.com/tenantcloud/tenantcloud/pkg/config"
	"github.com/tenantcloud/tenantcloud/pkg/version"
)

// validConfig satisfies every component: tenantKubeconfig for ccm/autoscaler, no
// infraKubeconfig for csi-node.
const validConfig = `
clusterName: c1
infraNamespace: tenant-ns
tenantKubeconfig: /etc/tenant/kubeconfig
storage:
  defaultStorageClass: fast
`

func writeFile(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestRun(t *testing.T) {
	good := writeFile(t, validConfig)
	bad := writeFile(t, "storage: {diskBus: ide}\n")
	noTenant := writeFile(t, strings.Replace(validConfig, "tenantKubeconfig:", "infraKubeconfig:", 1))
	missing := filepath.Join(t.TempDir(), "missing.yaml")

	var served *config.Config
	var servedOpts Options
	serveOK := func(_ context.Context, cfg *config.Config, o Options) error {
		served, servedOpts = cfg, o
		return nil
	}
	serveErr := func(context.Context, *config.Config, Options) error { return errors.New("boom") }
	var extra int

	tests := []struct {
		name       string
		args       []string
		serve      func(context.Context, *config.Config, Options) error
		wantCode   int
		wantStdout []string
		wantStderr []string
	}{
		{
			name:       "help",
			args:       []string{"--help"},
			wantCode:   ExitOK,
			wantStdout: []string{"ccm - test program", "Usage:", "--config", "--check-config", "--metrics-bind-address", "--extra", "--version", "Logging flags:", "--v Level"},
		},
		{name: "short help wins over missing config", args: []string{"-h"}, wantCode: ExitOK, wantStdout: []string{"--config"}},
		{name: "version", args: []string{"--version"}, wantCode: ExitOK, wantStdout: []string{version.String("ccm")}},
		{name: "missing config", args: nil, wantCode: ExitUsage, wantStderr: []string{"error: --config is required"}},
		{name: "unknown flag", args: []string{"--config", good, "--nope"}, wantCode: ExitUsage, wantStderr: []string{"error: unknown flag: --nope", "ccm --help"}},
		{name: "positional argument", args: []string{"--config", good, "serve"}, wantCode: ExitUsage, wantStderr: []string{`unexpected arguments: ["serve"]`}},
		{name: "program flag check", args: []string{"--config", good, "--extra", "-1"}, wantCode: ExitUsage, wantStderr: []string{"error: --extra must not be negative"}},
		{
			name:       "invalid config",
			args:       []string{"--config", bad},
			wantCode:   ExitError,
			wantStderr: []string{"error: loading config " + bad + ": ", "storage.diskBus: Unsupported value"},
		},
		{name: "unreadable config", args: []string{"--config", missing}, wantCode: ExitError, wantStderr: []string{"error: loading config " + missing + ": no such file"}},
		{
			name:       "config invalid for this component",
			args:       []string{"--config", noTenant, "--check-config"},
			wantCode:   ExitError,
			wantStderr: []string{"error: loading config " + noTenant + ": ", "tenantKubeconfig: Required value"},
		},
		{name: "check config", args: []string{"--config=" + good, "--check-config"}, wantCode: ExitOK, wantStdout: []string{"config OK: cluster=c1 namespace=tenant-ns\n"}},
		{name: "serve error", args: []string{"--config", good, "--metrics-bind-address", "127.0.0.1:0"}, serve: serveErr, wantCode: ExitError, wantStderr: []string{"error: ccm: boom"}},
		{name: "serve", args: []string{"--config", good, "--metrics-bind-address", "0"}, serve: serveOK, wantCode: ExitOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := Program{
				Component:   config.CCM,
				Description: "test program",
				AddFlags: func(fs *pflag.FlagSet) {
					fs.IntVar(&extra, "extra", 0, "a program-specific flag")
				},
				CheckFlags: func() error {
					if extra < 0 {
						return errors.New("--extra must not be negative")
					}
					return nil
				},
				Serve: tt.serve,
			}
			var stdout, stderr bytes.Buffer
			code := p.Run(tt.args, &stdout, &stderr)
			if code != tt.wantCode {
				t.Errorf("exit code %d, want %d\nstdout: %s\nstderr: %s", code, tt.wantCode, &stdout, &stderr)
			}
			for _, w := range tt.wantStdout {
				if !strings.Contains(stdout.String(), w) {
					t.Errorf("stdout %q does not contain %q", &stdout, w)
				}
			}
			for _, w := range tt.wantStderr {
				if !strings.Contains(stderr.String(), w) {
					t.Errorf("stderr %q does not contain %q", &stderr, w)
				}
			}
			if tt.wantCode == ExitOK && stderr.Len() > 0 {
				t.Errorf("unexpected stderr on success: %q", &stderr)
			}
		})
	}

	if served == nil || served.ClusterName != "c1" || servedOpts.MetricsBindAddress != "0" || servedOpts.ConfigPath != good {
		t.Errorf("Serve got cfg=%+v opts=%+v", served, servedOpts)
	}
}
