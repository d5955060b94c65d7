package harness

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// EnvBinDir overrides where the harness looks for its binaries and CRDs.
const EnvBinDir = "TENANTCLOUD_BIN_DIR"

const modulePath = "github.com/tenantcloud/tenantcloud"

// Binaries the harness needs in the bin directory.
var requiredBinaries = []string{"kube-apiserver", "etcd", "kube-scheduler", "kube-controller-manager"}

// Assets locates the harness's binaries and CRDs.
type Assets struct {
	BinDir string // holds kube-apiserver, etcd, kube-scheduler, kube-controller-manager, metallb-controller
	CRDDir string // holds the CRD YAML files
}

// FindAssets returns the bin directory (TENANTCLOUD_BIN_DIR or <repo>/bin) after checking that
// every binary and the CRDs are there, with an error that says how to fix it if not.
func FindAssets() (Assets, error) {
	dir, err := binDir()
	if err != nil {
		return Assets{}, err
	}
	return checkAssets(dir)
}

// binDir is TENANTCLOUD_BIN_DIR or <repo>/bin.
func binDir() (string, error) {
	if dir := os.Getenv(EnvBinDir); dir != "" {
		return dir, nil
	}
	root, err := repoRoot()
	if err != nil {
		return "", err
	}
	return filepath.Join(root, "bin"), nil
}

// Bin returns the path of the binary name in the bin directory, which build (a command)
// makes; a missing one skips t, or fails it where the environment demands NeedBin (Require).
func Bin(t testing.TB, name, build string) string {
	t.Helper()
	dir, err := binDir()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name)
	if fi, err := os.Stat(path); err != nil || fi.Mode()&0o111 == 0 {
		Require(t, NeedBin, fmt.Errorf("%s not built (run %s): %v", path, build, err))
	}
	return path
}

func checkAssets(dir string) (Assets, error) {
	a := Assets{BinDir: dir, CRDDir: filepath.Join(dir, "crds")}
	var missing []string
	for _, b := range requiredBinaries {
		if fi, err := os.Stat(filepath.Join(dir, b)); err != nil || fi.Mode()&0o111 == 0 {
			missing = append(missing, b)
		}
	}
	if crds, _ := filepath.Glob(filepath.Join(a.CRDDir, "*.yaml")); len(crds) == 0 {
		missing = append(missing, "crds/*.yaml")
	}
	if len(missing) > 0 {
		return Assets{}, fmt.Errorf("harness assets missing in %s: %v: run make bin", dir, missing)
	}
	return a, nil
}

// repoRoot walks up from the working directory (go test runs in the package directory) to
// this module's go.mod.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("finding repository root: %w", err)
	}
	for {
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.HasPrefix(data, []byte("module "+modulePath+"\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("repository root (go.mod of " + modulePath + ") not found above the working directory; set " + EnvBinDir)
		}
		dir = parent
	}
}
