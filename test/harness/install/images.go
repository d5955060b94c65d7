package install

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/tenantcloud/tenantcloud/test/harness"
)

// Images are the images `make images` built, pushed to a loopback registry.
type Images struct {
	Registry *harness.Registry
	// Refs maps an image's name (ccm, csi-node, csi-provisioner, …) to its reference in the
	// registry, <addr>/tenantcloud/<name>:<tag>.
	Refs map[string]string
	// Digests maps an image's name to its manifest digest (sha256:…), as images.txt lists it.
	Digests map[string]string
}

// PushImages starts a registry on a loopback port (storage under dir) and pushes bin/images
// to it with `imagebuild push`, as `make images REGISTRY=… PUSH=1` does. Stop ends the
// registry.
func PushImages(ctx context.Context, env *harness.Env, dir string) (*Images, error) {
	out := filepath.Join(env.Assets.BinDir, "images")
	built, err := readImagesTxt(filepath.Join(out, "images.txt"))
	if err != nil {
		return nil, err
	}
	tool := filepath.Join(env.Assets.BinDir, "imagebuild")
	if _, err := os.Stat(tool); err != nil {
		return nil, fmt.Errorf("bin/imagebuild: run make bin: %w", err)
	}
	regDir := filepath.Join(dir, "registry")
	if err := os.MkdirAll(regDir, 0o755); err != nil {
		return nil, err
	}
	reg, err := harness.StartRegistry(ctx, regDir)
	if err != nil {
		return nil, err
	}
	prefix := reg.Addr + "/tenantcloud"
	if b, err := exec.CommandContext(ctx, tool, "push", "--out", out, "--registry", prefix).CombinedOutput(); err != nil {
		return nil, errors.Join(fmt.Errorf("pushing bin/images to %s: %w\n%s", prefix, err, b), reg.Stop())
	}
	im := &Images{Registry: reg, Refs: map[string]string{}, Digests: map[string]string{}}
	for _, b := range built {
		im.Refs[b.name] = prefix + "/" + b.name + ":" + b.tag
		im.Digests[b.name] = b.digest
	}
	return im, nil
}

// Stop ends the registry.
func (im *Images) Stop() error { return im.Registry.Stop() }

// repoTag splits a reference into repository and tag, for a chart's images.* values.
func repoTag(ref string) (string, string) {
	i := strings.LastIndex(ref, ":")
	return ref[:i], ref[i+1:]
}

type builtImage struct{ name, tag, digest string }

// readImagesTxt reads bin/images/images.txt: name, reference, digest, sizes, tab-separated.
func readImagesTxt(path string) ([]builtImage, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("bin/images: run make images: %w", err)
	}
	defer f.Close()
	var out []builtImage
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Split(s.Text(), "\t")
		if len(fields) < 3 || !strings.HasPrefix(fields[2], "sha256:") || !strings.Contains(fields[1], ":") {
			return nil, fmt.Errorf("%s: unexpected line %q", path, s.Text())
		}
		_, tag := repoTag(fields[1])
		out = append(out, builtImage{name: fields[0], tag: tag, digest: fields[2]})
	}
	if err := s.Err(); err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s lists no image: run make images", path)
	}
	return out, nil
}
