package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// writeLayout makes dir an OCI image layout holding exactly images: index.json is written
// anew, blobs already there are kept (that is the cache), and blobs no image uses any more are
// removed, so the layout does not grow with every version.
func writeLayout(dir string, images []built) error {
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return fmt.Errorf("OCI layout %s: %w", dir, err)
	}
	keep := map[string]bool{}
	for _, b := range images {
		err := p.AppendImage(b.img, layout.WithAnnotations(map[string]string{
			labelRefName:   b.ref,
			annotationName: b.name,
		}))
		if err != nil {
			return fmt.Errorf("writing %s to %s: %w", b.ref, dir, err)
		}
		hashes, err := blobs(b.img)
		if err != nil {
			return err
		}
		for _, h := range hashes {
			keep[h.Hex] = true
		}
	}
	old, err := filepath.Glob(filepath.Join(dir, "blobs", "sha256", "*"))
	if err != nil {
		return err
	}
	for _, f := range old {
		if !keep[filepath.Base(f)] {
			if err := os.Remove(f); err != nil {
				return fmt.Errorf("removing unused blob: %w", err)
			}
		}
	}
	return nil
}

// blobs are the manifest, config and layer digests of img.
func blobs(img v1.Image) ([]v1.Hash, error) {
	m, err := img.Manifest()
	if err != nil {
		return nil, err
	}
	d, err := img.Digest()
	if err != nil {
		return nil, err
	}
	hashes := []v1.Hash{d, m.Config.Digest}
	for _, l := range m.Layers {
		hashes = append(hashes, l.Digest)
	}
	return hashes, nil
}

// sizes are what a pull transfers (manifest, config, compressed layers) and what the image
// takes unpacked (the layers' tars).
func sizes(img v1.Image) (compressed, unpacked int64, err error) {
	m, err := img.Manifest()
	if err != nil {
		return 0, 0, err
	}
	raw, err := img.RawManifest()
	if err != nil {
		return 0, 0, err
	}
	compressed = int64(len(raw)) + m.Config.Size
	layers, err := img.Layers()
	if err != nil {
		return 0, 0, err
	}
	for _, l := range layers {
		n, err := l.Size()
		if err != nil {
			return 0, 0, err
		}
		compressed += n
		gz, ok := l.(*gzLayer)
		if !ok {
			return 0, 0, fmt.Errorf("layer of unknown type %T", l)
		}
		unpacked += gz.unpacked
	}
	return compressed, unpacked, nil
}

// writeSummary writes, beside the layout: images.txt (reference, digest and sizes of every
// image), csi-node-contents.txt (every file of its Debian layer) and values.yaml (the charts'
// images.* for exactly these images: helm install -f bin/images/values.yaml).
func writeSummary(out string, images []built) error {
	var summary, values strings.Builder
	values.WriteString("# Written by make images (hack/tools/imagebuild): the images it built, for helm -f.\nimages:\n")
	for _, b := range images {
		d, err := b.img.Digest()
		if err != nil {
			return err
		}
		c, u, err := sizes(b.img)
		if err != nil {
			return err
		}
		fmt.Fprintf(&summary, "%s\t%s\t%s\tcompressed %.1f MiB\tunpacked %.1f MiB\n", b.name, b.ref, d, mib(c), mib(u))
		repo, _, _ := strings.Cut(b.ref, ":"+b.tag)
		fmt.Fprintf(&values, "  %s: {repository: %s, tag: %q}\n", camel(b.name), repo, b.tag)
		if b.contents != nil {
			contents := "# file\tbytes\tDebian package\n" + strings.Join(b.contents, "\n") + "\n"
			if err := os.WriteFile(filepath.Join(out, b.name+"-contents.txt"), []byte(contents), 0o644); err != nil {
				return err
			}
		}
	}
	if err := os.WriteFile(filepath.Join(out, "images.txt"), []byte(summary.String()), 0o644); err != nil {
		return err
	}
	fmt.Print(summary.String())
	return os.WriteFile(filepath.Join(out, "values.yaml"), []byte(values.String()), 0o644)
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }

// camel is the charts' key of an image: csi-controller → csiController.
func camel(s string) string {
	parts := strings.Split(s, "-")
	for i := 1; i < len(parts); i++ {
		parts[i] = strings.ToUpper(parts[i][:1]) + parts[i][1:]
	}
	return strings.Join(parts, "")
}

func push(ctx context.Context, o options, images []built) error {
	for _, b := range images {
		if err := pushOne(ctx, o, b.ref, b.img); err != nil {
			return err
		}
	}
	return nil
}

func pushOne(ctx context.Context, o options, ref string, img v1.Image) error {
	var opts []name.Option
	if o.insecure {
		opts = append(opts, name.Insecure)
	}
	r, err := name.ParseReference(ref, opts...)
	if err != nil {
		return fmt.Errorf("image reference %q: %w", ref, err)
	}
	if err := remote.Write(r, img, remote.WithContext(ctx), remote.WithAuthFromKeychain(authn.DefaultKeychain)); err != nil {
		return fmt.Errorf("pushing %s: %w", ref, err)
	}
	d, err := img.Digest()
	if err != nil {
		return err
	}
	fmt.Printf("pushed %s@%s\n", ref, d)
	return nil
}

// pushLayout pushes every image of the layout in out/oci to <registry>/<name>:<tag>: the
// images make images built, under another registry's name (the e2e suite's loopback one).
func pushLayout(ctx context.Context, o options) error {
	dir := filepath.Join(o.out, "oci")
	p, err := layout.FromPath(dir)
	if err != nil {
		return fmt.Errorf("OCI layout %s (run make images): %w", dir, err)
	}
	idx, err := p.ImageIndex()
	if err != nil {
		return err
	}
	m, err := idx.IndexManifest()
	if err != nil {
		return err
	}
	if len(m.Manifests) == 0 {
		return fmt.Errorf("OCI layout %s holds no images", dir)
	}
	for _, desc := range m.Manifests {
		short := desc.Annotations[annotationName]
		ref := desc.Annotations[labelRefName]
		i := strings.LastIndex(ref, ":")
		if short == "" || i < 0 {
			return fmt.Errorf("%s: manifest %s has no %s/%s annotations", dir, desc.Digest, annotationName, labelRefName)
		}
		img, err := p.Image(desc.Digest)
		if err != nil {
			return err
		}
		if err := pushOne(ctx, o, o.registry+"/"+short+ref[i:], img); err != nil {
			return err
		}
	}
	return nil
}
