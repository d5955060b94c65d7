package cli

import (
	"bytes"
	"errors"
	"maps"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/tenantcloud/tenantcloud/test/harness"
)

// TestBinaries builds the real mains and runs them, to catch what calling Program.Run cannot:
// main wiring, os.Exit codes and the linker-set version.
func TestBinaries(t *testing.T) {
	if testing.Short() {
		t.Skip("builds four binaries; skipped with -short")
	}
	_, err := exec.LookPath("go")
	harness.Require(t, harness.NeedTool, err)

	const module = "github.com/tenantcloud/tenantcloud"
	const testVersion = "v0.0.0-binarytest"
	programs := map[string]string{ // name → a flag its --help must list
		"ccm":                 "--metrics-bind-address",
		"csi-controller":      "--endpoint",
		"csi-node":            "--max-volumes-per-node",
		"autoscaler-provider": "--tls-ca",
	}
	bin := t.TempDir()
	if err := harness.BuildPrograms(t.Context(), bin, []string{"-ldflags", "-X " + module + "/pkg/version.Version=" + testVersion},
		slices.Collect(maps.Keys(programs))...); err != nil {
		t.Fatal(err)
	}

	good := writeFile(t, validConfig)
	bad := writeFile(t, "storage: {diskBus: ide}\n")
	withInfra := writeFile(t, validConfig+"infraKubeconfig: /etc/infra/kubeconfig\n")

	type binCase struct {
		args       []string
		wantCode   int
		wantOutput []string // searched in stdout+stderr
	}
	for name, ownFlag := range programs {
		tests := []binCase{
			{[]string{"--help"}, 0, []string{"Usage:", "--config", ownFlag}},
			{[]string{"--version"}, 0, []string{name + " " + testVersion + " (go"}},
			{nil, 2, []string{"error: --config is required"}},
			{[]string{"--config", bad}, 1, []string{"error: loading config " + bad, "storage.diskBus"}},
			{[]string{"--config", good, "--check-config"}, 0, []string{"config OK: cluster=c1 namespace=tenant-ns"}},
		}
		if name == "csi-node" {
			tests = append(tests, binCase{[]string{"--config", withInfra, "--check-config"}, 1,
				[]string{"infraKubeconfig: Forbidden: csi-node runs inside the tenant"}})
		}
		for _, tt := range tests {
			t.Run(name+" "+strings.Join(tt.args, " "), func(t *testing.T) {
				cmd := exec.Command(filepath.Join(bin, name), tt.args...)
				var out bytes.Buffer
				cmd.Stdout, cmd.Stderr = &out, &out
				err := cmd.Run()
				code := 0
				var exitErr *exec.ExitError
				if errors.As(err, &exitErr) {
					code = exitErr.ExitCode()
				} else if err != nil {
					t.Fatalf("running %s: %v", name, err)
				}
				if code != tt.wantCode {
					t.Errorf("exit code %d, want %d; output:\n%s", code, tt.wantCode, &out)
				}
				for _, w := range tt.wantOutput {
					if !strings.Contains(out.String(), w) {
						t.Errorf("output does not contain %q:\n%s", w, &out)
					}
				}
			})
		}
	}
}
