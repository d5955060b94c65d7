package harness

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"
)

// RegistryBinary is Debian's docker-registry (the CNCF distribution registry, 2.8), which
// .ci/run installs.
const RegistryBinary = "docker-registry"

// Registry is an OCI registry on a loopback port with its storage in a temp dir: what images
// are pushed to and pulled from by reference, as a cluster would from its registry. Loopback
// registries are spoken to over plain HTTP by go-containerregistry and by ctr --plain-http.
type Registry struct {
	// Addr is host:port, e.g. 127.0.0.1:43127; image references start with it.
	Addr string
	proc *Process
}

// StartRegistry runs docker-registry on a free loopback port, storing blobs under dir (and
// logging to dir/registry.log), and waits until it answers the distribution API's base
// endpoint. Stop ends it.
func StartRegistry(ctx context.Context, dir string) (*Registry, error) {
	path, err := exec.LookPath(RegistryBinary)
	if err != nil {
		return nil, fmt.Errorf("the registry needs Debian's docker-registry package: %w", err)
	}
	port, err := freeLoopbackPort()
	if err != nil {
		return nil, err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	storage := filepath.Join(dir, "storage")
	if err := os.MkdirAll(storage, 0o755); err != nil {
		return nil, fmt.Errorf("registry storage: %w", err)
	}
	// The debug server and the startup upload purger (whose first run is a goroutine racing
	// the test's pushes) are off; nothing here is reached from off the machine.
	config := fmt.Sprintf(`version: 0.1
log:
  level: info
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: %s
`, storage, addr)
	configPath := filepath.Join(dir, "registry.yaml")
	if err := os.WriteFile(configPath, []byte(config), 0o644); err != nil {
		return nil, fmt.Errorf("registry config: %w", err)
	}
	proc, err := StartBinary("registry", path, filepath.Join(dir, "registry.log"), "serve", configPath)
	if err != nil {
		return nil, err
	}
	r := &Registry{Addr: addr, proc: proc}
	client := &http.Client{Timeout: 2 * time.Second}
	err = WaitFor(ctx, 30*time.Second, func(ctx context.Context) (bool, error) {
		select {
		case <-proc.Done():
			return false, fmt.Errorf("docker-registry exited: %s", proc.Log(2000))
		default:
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/v2/", nil)
		if err != nil {
			return false, err
		}
		rsp, err := client.Do(req)
		if err != nil {
			return false, err
		}
		_ = rsp.Body.Close()
		return rsp.StatusCode == http.StatusOK, nil
	})
	if err != nil {
		_ = proc.Stop()
		return nil, fmt.Errorf("registry on %s did not become ready: %w; log: %s", addr, err, proc.Log(2000))
	}
	return r, nil
}

// Stop ends the registry.
func (r *Registry) Stop() error { return r.proc.Stop() }

// Log returns the last n bytes of the registry's log.
func (r *Registry) Log(n int) string { return r.proc.Log(n) }

// freeLoopbackPort asks the kernel for a port that is free now. Another process could take it
// before the registry binds it; StartRegistry then fails with the registry's own bind error.
func freeLoopbackPort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
