// Package images runs the images `make images` built as a cluster would: pushed to a registry,
// pulled from it by reference by containerd, and run by runc.
package images

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tenantcloud/tenantcloud/test/harness"
)

// repoRoot is the repository root; go test runs in this package's directory.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", "..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// builtImages reads the images make images wrote into bin/images/oci; without them t skips,
// or fails where the environment demands bin/ (CI runs make images first).
func builtImages(t *testing.T, root string) []image {
	t.Helper()
	images, err := readLayout(filepath.Join(root, "bin", "images", "oci"))
	if err != nil {
		harness.Require(t, harness.NeedBin, fmt.Errorf("bin/images: run make images: %w", err))
	}
	return images
}

// image is one image of the OCI layout make images wrote (bin/images/oci).
type image struct {
	Name, Ref, Tag string
	Digest         string // of the manifest
	Config         imageConfig
}

type imageConfig struct {
	Created string `json:"created"`
	Config  struct {
		Entrypoint []string          `json:"Entrypoint"`
		User       string            `json:"User"`
		Labels     map[string]string `json:"Labels"`
	} `json:"config"`
}

// readLayout reads the images of the OCI layout at dir with nothing but encoding/json: the
// product module does not depend on an image library for one test.
func readLayout(dir string) ([]image, error) {
	var index struct {
		Manifests []struct {
			Digest      string            `json:"digest"`
			Annotations map[string]string `json:"annotations"`
		} `json:"manifests"`
	}
	if err := readJSON(filepath.Join(dir, "index.json"), &index); err != nil {
		return nil, err
	}
	if len(index.Manifests) == 0 {
		return nil, fmt.Errorf("%s holds no images", dir)
	}
	var images []image
	for _, m := range index.Manifests {
		var manifest struct {
			Config struct {
				Digest string `json:"digest"`
			} `json:"config"`
		}
		if err := readJSON(blobPath(dir, m.Digest), &manifest); err != nil {
			return nil, err
		}
		img := image{Name: m.Annotations["io.tenantcloud.image.name"], Ref: m.Annotations["org.opencontainers.image.ref.name"], Digest: m.Digest}
		i := strings.LastIndex(img.Ref, ":")
		if img.Name == "" || i < 0 {
			return nil, fmt.Errorf("%s: manifest %s lacks its name annotations", dir, m.Digest)
		}
		img.Tag = img.Ref[i+1:]
		if err := readJSON(blobPath(dir, manifest.Config.Digest), &img.Config); err != nil {
			return nil, err
		}
		images = append(images, img)
	}
	return images, nil
}

func blobPath(dir, digest string) string {
	return filepath.Join(dir, "blobs", strings.Replace(digest, ":", "/", 1))
}

func readJSON(path string, v any) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// containerd is a containerd of the test's own (root, state, sockets in a temp dir) driven
// with ctr: the CRI plugin is off, as nothing here is a kubelet, and ctr keeps the product
// go.mod free of the containerd client.
type containerd struct {
	sock, namespace string
	proc            *harness.Process
}

// startContainerd runs containerd with everything under dir and waits until ctr reaches it.
func startContainerd(ctx context.Context, t *testing.T, dir string) *containerd {
	t.Helper()
	for _, bin := range []string{"containerd", "ctr", "runc", "containerd-shim-runc-v2"} {
		if _, err := exec.LookPath(bin); err != nil {
			harness.Require(t, harness.NeedTool, fmt.Errorf("%s (Debian packages containerd and runc): %w", bin, err))
		}
	}
	if os.Geteuid() != 0 {
		harness.Require(t, harness.NeedDisks, errors.New("containerd needs root"))
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	c := &containerd{sock: filepath.Join(dir, "containerd.sock"), namespace: "tenantcloud-e2e"}
	config := fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = %[3]q
[ttrpc]
  address = "%[3]s.ttrpc"
[debug]
  address = "%[3]s.debug"
[plugins."io.containerd.internal.v1.opt"]
  path = %[4]q
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), c.sock, filepath.Join(dir, "opt"))
	configPath := filepath.Join(dir, "containerd.toml")
	if err := os.WriteFile(configPath, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	path, _ := exec.LookPath("containerd")
	proc, err := harness.StartBinary("containerd", path, filepath.Join(dir, "containerd.log"), "--config", configPath)
	if err != nil {
		t.Fatal(err)
	}
	c.proc = proc
	t.Cleanup(func() {
		if err := proc.Stop(); err != nil {
			t.Errorf("stopping containerd: %v", err)
		}
	})
	err = harness.WaitFor(ctx, 30*time.Second, func(ctx context.Context) (bool, error) {
		select {
		case <-proc.Done():
			return false, fmt.Errorf("containerd exited: %s", proc.Log(2000))
		default:
		}
		_, err := c.ctr(ctx, "version")
		return err == nil, err
	})
	if err != nil {
		t.Fatalf("containerd did not start: %v; log: %s", err, proc.Log(4000))
	}
	return c
}

// ctr runs ctr against this containerd and returns its stdout; the error carries stderr.
func (c *containerd) ctr(ctx context.Context, args ...string) (string, error) {
	args = append([]string{"--address", c.sock, "--namespace", c.namespace}, args...)
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "ctr", args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("ctr %s: %w\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.String(), nil
}

// run runs a container with ctr run and returns what it printed on stdout and stderr, and
// the error of a non-zero exit.
func (c *containerd) run(ctx context.Context, args ...string) (string, error) {
	args = append([]string{"--address", c.sock, "--namespace", c.namespace, "run"}, args...)
	out, err := exec.CommandContext(ctx, "ctr", args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("ctr %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// pull pulls ref from a plain-HTTP registry and returns the digest containerd recorded for it.
func (c *containerd) pull(ctx context.Context, ref string) (string, error) {
	if _, err := c.ctr(ctx, "images", "pull", "--plain-http", ref); err != nil {
		return "", err
	}
	out, err := c.ctr(ctx, "images", "list")
	if err != nil {
		return "", err
	}
	// REF TYPE DIGEST SIZE PLATFORMS LABELS
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) >= 3 && f[0] == ref {
			return f[2], nil
		}
	}
	return "", fmt.Errorf("ctr images list does not show %s:\n%s", ref, out)
}
