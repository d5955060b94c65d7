package node

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/tenantcloud/tenantcloud/test/harness"
)

// Images every real node has before any pod starts: the pause image containerd's CRI plugin
// runs as each pod's sandbox, and apiprobe, a pod's program that reaches the apiserver through
// the kubernetes Service. Both are this module's static Go programs (cmd/pause, cmd/apiprobe),
// packaged as OCI images here and imported into each node's containerd, so no node pulls
// from a registry it cannot reach.
const (
	PauseImage    = "localhost/tenantcloud-harness/pause:v1"
	APIProbeImage = "localhost/tenantcloud-harness/apiprobe:v1"
	// VolProbeImage writes and reads back a pod's volume (cmd/volprobe).
	VolProbeImage = "localhost/tenantcloud-harness/volprobe:v1"
)

// imageProgram is one single-binary image: the program at /<name>, its entrypoint.
type imageProgram struct {
	ref, pkg, name string
}

var harnessImages = []imageProgram{
	{PauseImage, "github.com/tenantcloud/tenantcloud/test/harness/node/cmd/pause", "pause"},
	{APIProbeImage, "github.com/tenantcloud/tenantcloud/test/harness/node/cmd/apiprobe", "apiprobe"},
	{VolProbeImage, "github.com/tenantcloud/tenantcloud/test/harness/node/cmd/volprobe", "volprobe"},
}

// BuildImages builds the harness images into an OCI image archive under dir (what `ctr images
// import` reads) and returns its path. Static binaries (CGO_ENABLED=0) need nothing else in
// the image.
func BuildImages(ctx context.Context, dir string) (string, error) {
	var blobs []blob
	var manifests []ociDescriptor
	for _, p := range harnessImages {
		bin := filepath.Join(dir, p.name)
		if err := harness.GoBuild(ctx, bin, []string{"CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64"},
			[]string{"-trimpath", "-ldflags=-s -w"}, p.pkg); err != nil {
			return "", fmt.Errorf("building %s: %w", p.pkg, err)
		}
		b, m, err := singleBinaryImage(p, bin)
		if err != nil {
			return "", err
		}
		blobs = append(blobs, b...)
		manifests = append(manifests, m)
	}
	archive := filepath.Join(dir, "harness-images.tar")
	if err := writeOCIArchive(archive, blobs, manifests); err != nil {
		return "", err
	}
	return archive, nil
}

type blob struct {
	digest string
	data   []byte
}

func newBlob(data []byte) blob {
	sum := sha256.Sum256(data)
	return blob{digest: "sha256:" + hex.EncodeToString(sum[:]), data: data}
}

type ociDescriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int               `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// singleBinaryImage returns the layer, config and manifest blobs of an image holding only the
// binary, and the manifest's descriptor named for containerd's importer.
func singleBinaryImage(p imageProgram, bin string) ([]blob, ociDescriptor, error) {
	data, err := os.ReadFile(bin)
	if err != nil {
		return nil, ociDescriptor{}, fmt.Errorf("reading %s: %w", bin, err)
	}
	var layerTar bytes.Buffer
	tw := tar.NewWriter(&layerTar)
	// A fixed time keeps the digests stable across builds of the same binary.
	epoch := time.Unix(0, 0)
	if err := tw.WriteHeader(&tar.Header{Name: p.name, Mode: 0o755, Size: int64(len(data)), ModTime: epoch, Typeflag: tar.TypeReg}); err != nil {
		return nil, ociDescriptor{}, err
	}
	if _, err := tw.Write(data); err != nil {
		return nil, ociDescriptor{}, err
	}
	if err := tw.Close(); err != nil {
		return nil, ociDescriptor{}, err
	}
	layer := newBlob(layerTar.Bytes())
	cfg, err := json.Marshal(map[string]any{
		"architecture": "amd64", "os": "linux",
		"config": map[string]any{"Entrypoint": []string{"/" + p.name}, "User": "0"},
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{layer.digest}},
	})
	if err != nil {
		return nil, ociDescriptor{}, err
	}
	config := newBlob(cfg)
	man, err := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.manifest.v1+json",
		"config":        ociDescriptor{MediaType: "application/vnd.oci.image.config.v1+json", Digest: config.digest, Size: len(config.data)},
		"layers":        []ociDescriptor{{MediaType: "application/vnd.oci.image.layer.v1.tar", Digest: layer.digest, Size: len(layer.data)}},
	})
	if err != nil {
		return nil, ociDescriptor{}, err
	}
	manifest := newBlob(man)
	// containerd's importer names the image from io.containerd.image.name; it would prefix an
	// org.opencontainers.image.ref.name with "import-<date>", which the CRI plugin then lists
	// as a second, unexpected tag.
	desc := ociDescriptor{MediaType: "application/vnd.oci.image.manifest.v1+json", Digest: manifest.digest,
		Size: len(manifest.data), Annotations: map[string]string{"io.containerd.image.name": p.ref}}
	return []blob{layer, config, manifest}, desc, nil
}

// writeOCIArchive writes an OCI image layout (oci-layout, index.json, blobs/) as a tar file.
func writeOCIArchive(file string, blobs []blob, manifests []ociDescriptor) error {
	index, err := json.Marshal(map[string]any{"schemaVersion": 2, "manifests": manifests})
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	add := func(name string, data []byte) error {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), ModTime: time.Unix(0, 0), Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	if err := add("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)); err != nil {
		return err
	}
	if err := add("index.json", index); err != nil {
		return err
	}
	for _, b := range blobs {
		if err := add(path.Join("blobs", "sha256", strings.TrimPrefix(b.digest, "sha256:")), b.data); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if err := os.WriteFile(file, buf.Bytes(), 0o644); err != nil {
		return fmt.Errorf("writing image archive: %w", err)
	}
	return nil
}
