package main

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/buildinfo"
	"debug/elf"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"sort"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// spec is one image: a static binary at /<name> on the base layer, as the upstream images
// and the charts' commands expect (cluster-autoscaler's chart runs /cluster-autoscaler).
type spec struct {
	name string
	// ours: built from this repository by make images (bin/static/<name>); otherwise an
	// upstream binary from hack/bin.sh (bin/<name>), whose version is read from its build info.
	ours bool
	// module is the upstream Go module the binary was built from; source its repository.
	module, source, description string
	// root: run as root (csi-node mounts); every other image runs as 65532.
	root bool
	// debian: the Debian tools layer (csi-node).
	debian bool
}

const (
	nonRoot = 65532
	// Label keys of the OCI image spec (annotations.md, "Pre-Defined Annotation Keys").
	labelSource      = "org.opencontainers.image.source"
	labelVersion     = "org.opencontainers.image.version"
	labelRevision    = "org.opencontainers.image.revision"
	labelTitle       = "org.opencontainers.image.title"
	labelDescription = "org.opencontainers.image.description"
	labelRefName     = "org.opencontainers.image.ref.name"
	// labelDebian lists the Debian packages (name=version) the csi-node image's tools came from.
	labelDebian = "io.tenantcloud.debian-packages"
	// labelGo is the Go toolchain that built the binary.
	labelGo = "io.tenantcloud.go-version"
	// annotationName is the image's short name in the layout (its repository's last element).
	annotationName = "io.tenantcloud.image.name"
)

var specs = []spec{
	{name: "ccm", ours: true, description: "tenantcloud cloud controller manager"},
	{name: "csi-controller", ours: true, description: "tenantcloud CSI controller"},
	{name: "csi-node", ours: true, root: true, debian: true, description: "tenantcloud CSI node plugin with its mount and filesystem tools from Debian"},
	{name: "autoscaler-provider", ours: true, description: "tenantcloud cluster-autoscaler externalgrpc provider"},
	{name: "csi-provisioner", module: "github.com/kubernetes-csi/external-provisioner/v5", source: "https://github.com/kubernetes-csi/external-provisioner", description: "CSI external-provisioner sidecar"},
	{name: "csi-attacher", module: "github.com/kubernetes-csi/external-attacher/v4", source: "https://github.com/kubernetes-csi/external-attacher", description: "CSI external-attacher sidecar"},
	{name: "csi-resizer", module: "github.com/kubernetes-csi/external-resizer", source: "https://github.com/kubernetes-csi/external-resizer", description: "CSI external-resizer sidecar"},
	{name: "csi-snapshotter", module: "github.com/kubernetes-csi/external-snapshotter/v8", source: "https://github.com/kubernetes-csi/external-snapshotter", description: "CSI external-snapshotter sidecar"},
	{name: "snapshot-controller", module: "github.com/kubernetes-csi/external-snapshotter/v8", source: "https://github.com/kubernetes-csi/external-snapshotter", description: "VolumeSnapshot controller"},
	{name: "cluster-autoscaler", module: "k8s.io/autoscaler/cluster-autoscaler", source: "https://github.com/kubernetes/autoscaler", description: "cluster-autoscaler (externalgrpc cloud provider only)"},
}

// built is one image of a build, for the layout, the push and the summary.
type built struct {
	spec
	ref, tag string
	img      v1.Image
	// contents lists the Debian-derived files (csi-node only).
	contents []string
}

func build(ctx context.Context, o options) error {
	start := time.Now()
	mtime := time.Unix(o.epoch, 0).UTC()
	cache := &layerCache{dir: filepath.Join(o.out, "layers")}
	if o.noCache {
		cache.dir = ""
	}
	todo := specs
	if len(o.only) > 0 {
		todo = nil
		for _, s := range specs {
			if slices.Contains(o.only, s.name) {
				todo = append(todo, s)
			}
		}
		if len(todo) != len(o.only) {
			return fmt.Errorf("--only %v names an unknown image", o.only)
		}
	}

	// Every binary first, so a missing one fails the build before seconds of compression.
	bins := map[string][]byte{}
	var missing []string
	for _, s := range todo {
		file := filepath.Join(o.bin, s.name)
		if s.ours {
			file = filepath.Join(o.static, s.name)
		}
		b, err := os.ReadFile(file)
		if err != nil {
			missing = append(missing, fmt.Sprintf("%s (%v)", s.name, err))
			continue
		}
		if err := checkStatic(file, b); err != nil {
			return err
		}
		bins[s.name] = b
	}
	if len(missing) > 0 {
		return fmt.Errorf("binaries missing, run make bin (upstream) and make images (ours) first: %s", strings.Join(missing, "; "))
	}

	base, basePkgs, err := baseLayer(ctx, o.debs, mtime, cache)
	if err != nil {
		return err
	}
	var images []built
	for _, s := range todo {
		b, err := buildOne(ctx, o, s, bins[s.name], base, basePkgs, mtime, cache)
		if err != nil {
			return fmt.Errorf("image %s: %w", s.name, err)
		}
		images = append(images, b)
	}
	if err := writeLayout(filepath.Join(o.out, "oci"), images); err != nil {
		return err
	}
	if err := writeSummary(o.out, images); err != nil {
		return err
	}
	if len(o.only) == 0 {
		if err := cache.prune(); err != nil {
			return err
		}
	}
	fmt.Fprintf(os.Stderr, "imagebuild: %d images in %s (%d layers compressed, %d from cache) in %.1fs\n",
		len(images), filepath.Join(o.out, "oci"), cache.created, cache.hits, time.Since(start).Seconds())
	if o.push {
		return push(ctx, o, images)
	}
	return nil
}

// checkStatic refuses a dynamically linked binary: the images have no C library (csi-node's
// has Debian's, but for its tools, not for Go programs built with cgo by accident).
func checkStatic(file string, b []byte) error {
	f, err := elf.NewFile(bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("%s: not an ELF binary: %w", file, err)
	}
	defer f.Close()
	if f.Machine != elf.EM_X86_64 {
		return fmt.Errorf("%s is built for %s; the images are linux/amd64", file, f.Machine)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("%s is dynamically linked; build it with CGO_ENABLED=0", file)
		}
	}
	return nil
}

func buildOne(ctx context.Context, o options, s spec, bin []byte, base v1.Layer, basePkgs []debPackage, mtime time.Time, cache *layerCache) (built, error) {
	b := built{spec: s}
	labels := map[string]string{
		labelTitle:       s.name,
		labelDescription: s.description,
	}
	info, err := buildinfo.Read(bytes.NewReader(bin))
	if err != nil {
		return b, fmt.Errorf("reading the Go build info of %s: %w", s.name, err)
	}
	labels[labelGo] = info.GoVersion
	if s.ours {
		b.tag = o.version
		labels[labelSource] = o.source
		labels[labelVersion] = o.version
		if o.revision != "" {
			labels[labelRevision] = o.revision
		}
	} else {
		v, err := moduleVersion(info, s.module)
		if err != nil {
			return b, fmt.Errorf("bin/%s: %w", s.name, err)
		}
		b.tag = v
		labels[labelSource] = s.source
		labels[labelVersion] = v
		if rev := pseudoRevision(v); rev != "" {
			labels[labelRevision] = rev
		}
	}
	b.ref = fmt.Sprintf("%s/%s:%s", o.registry, s.name, b.tag)

	layers := []v1.Layer{base}
	history := []v1.History{{Created: v1.Time{Time: mtime}, CreatedBy: "imagebuild: base (CA certificates from Debian " + pkgList(basePkgs) + ", passwd, group, /tmp)"}}
	if s.debian {
		l, pkgs, contents, err := csiNodeToolsLayer(ctx, o.debs, mtime, cache)
		if err != nil {
			return b, err
		}
		layers = append(layers, l)
		history = append(history, v1.History{Created: v1.Time{Time: mtime}, CreatedBy: "imagebuild: Debian tools " + pkgList(pkgs)})
		labels[labelDebian] = pkgList(pkgs)
		b.contents = contents
	}
	t := tree{}
	t.file("/"+s.name, 0o755, bin)
	l, err := cache.layer(t, mtime)
	if err != nil {
		return b, err
	}
	layers = append(layers, l)
	history = append(history, v1.History{Created: v1.Time{Time: mtime}, CreatedBy: "imagebuild: /" + s.name})

	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	adds := make([]mutate.Addendum, len(layers))
	for i := range layers {
		adds[i] = mutate.Addendum{Layer: layers[i], History: history[i], MediaType: types.OCILayer}
	}
	img, err = mutate.Append(img, adds...)
	if err != nil {
		return b, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return b, err
	}
	cf = cf.DeepCopy()
	cf.Architecture, cf.OS = "amd64", "linux"
	cf.Created = v1.Time{Time: mtime}
	user := fmt.Sprintf("%d:%d", nonRoot, nonRoot)
	if s.root {
		user = "0:0"
	}
	cf.Config = v1.Config{
		Entrypoint: []string{"/" + s.name},
		User:       user,
		WorkingDir: "/",
		Env: []string{
			"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
			"SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
		},
		Labels: labels,
	}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return b, err
	}
	b.img = mutate.Annotations(img, labels).(v1.Image)
	return b, nil
}

// moduleVersion is the version of module the binary was built from: its main module or one of
// its dependencies (the tools modules under hack/tools require the upstream module).
func moduleVersion(info *buildinfo.BuildInfo, module string) (string, error) {
	mods := append([]*debug.Module{&info.Main}, info.Deps...)
	for _, m := range mods {
		if m.Path != module {
			continue
		}
		if m.Replace != nil && m.Replace.Version != "" {
			return m.Replace.Version, nil
		}
		return m.Version, nil
	}
	return "", fmt.Errorf("its build info names no module %s (was it built from another source?)", module)
}

// pseudoRevision is the commit of a pseudo-version (v0.0.0-20250613073258-1959f5f61f6c), or ""
// for a release version, whose tag names the source well enough.
func pseudoRevision(v string) string {
	parts := strings.Split(v, "-")
	if len(parts) < 3 {
		return ""
	}
	last := parts[len(parts)-1]
	if len(last) == 12 && strings.Trim(last, "0123456789abcdef") == "" {
		return last
	}
	return ""
}

func pkgList(pkgs []debPackage) string {
	s := make([]string, len(pkgs))
	for i, p := range pkgs {
		s[i] = p.String()
	}
	return strings.Join(s, " ")
}

// baseLayer is the distroless-like base every image shares: CA certificates, a passwd and
// group naming root and nonroot (65532), /tmp and nonroot's home. The certificates are the
// Mozilla set of Debian's ca-certificates package, concatenated in name order, which is what
// update-ca-certificates writes for the default configuration.
func baseLayer(ctx context.Context, debs string, mtime time.Time, cache *layerCache) (v1.Layer, []debPackage, error) {
	pkgs, fsys, err := loadPackages(ctx, debs, []string{"ca-certificates"})
	if err != nil {
		return nil, nil, err
	}
	var certs []string
	for p, e := range fsys.entries {
		if strings.HasPrefix(p, "/usr/share/ca-certificates/mozilla/") && strings.HasSuffix(p, ".crt") && e.typ == tar.TypeReg {
			certs = append(certs, p)
		}
	}
	if len(certs) < 50 {
		return nil, nil, fmt.Errorf("ca-certificates %s holds only %d Mozilla certificates", pkgs[0].Version, len(certs))
	}
	sort.Strings(certs)
	var bundle bytes.Buffer
	for _, c := range certs {
		data := fsys.entries[c].data
		bundle.Write(data)
		if !bytes.HasSuffix(data, []byte("\n")) {
			bundle.WriteByte('\n')
		}
	}
	t := tree{}
	t.file("/etc/ssl/certs/ca-certificates.crt", 0o644, bundle.Bytes())
	t.file("/etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"))
	t.file("/etc/group", 0o644, []byte("root:x:0:\nnonroot:x:65532:\n"))
	// Go's resolver reads it to decide between /etc/hosts and DNS.
	t.file("/etc/nsswitch.conf", 0o644, []byte("hosts: files dns\n"))
	t.dir("/tmp", 0o1777, 0, 0)
	t.dir("/root", 0o700, 0, 0)
	t.dir("/home/nonroot", 0o700, nonRoot, nonRoot)
	l, err := cache.layer(t, mtime)
	return l, pkgs, err
}

// loadPackages downloads (or finds in the cache) the candidate version of each package and
// reads their files.
func loadPackages(ctx context.Context, debs string, names []string) ([]debPackage, *debFS, error) {
	pkgs, err := candidates(ctx, names)
	if err != nil {
		return nil, nil, err
	}
	fsys := &debFS{entries: map[string]entry{}, owner: map[string]string{}}
	files, err := fetch(ctx, debs, pkgs)
	if err != nil {
		return nil, nil, err
	}
	for i, p := range pkgs {
		if err := fsys.load(ctx, p.Name, files[i]); err != nil {
			return nil, nil, err
		}
	}
	return pkgs, fsys, nil
}

// debianPackages are the packages csi-node's tools and their libraries come from. The
// libraries are not chosen here: closure follows DT_NEEDED and fails naming any library none
// of these packages holds.
var debianPackages = []string{
	"mount", "util-linux", "e2fsprogs", "xfsprogs", "dash",
	"libc6", "libblkid1", "libmount1", "libuuid1", "libselinux1", "libpcre2-8-0",
	"libcom-err2", "libext2fs2", "libinih1", "liburcu8",
}

// csiNodeTools is everything csi-node runs, found by reading k8s.io/mount-utils (v0.36) and
// pkg/csi/node: Mount and Unmount exec mount and umount; SafeFormatAndMount execs blkid (the
// disk's format), fsck -a (before mounting a formatted disk), mkfs.<type>; ResizeFs execs
// blockdev --getsize64/--getro (NeedResize), resize2fs and xfs_growfs. fsck runs
// fsck.<type>: fsck.ext4 is e2fsck; fsck.xfs is a /bin/sh script that runs xfs_repair when
// forced. mke2fs reads /etc/mke2fs.conf. Nothing else of the packages goes into the image.
var csiNodeTools = []string{
	"/usr/bin/mount", "/usr/bin/umount",
	"/usr/sbin/blkid", "/usr/sbin/blockdev",
	"/usr/sbin/fsck", "/usr/sbin/fsck.ext4", "/usr/sbin/fsck.xfs",
	"/usr/sbin/mkfs.ext4", "/usr/sbin/mkfs.xfs",
	"/usr/sbin/e2fsck", "/usr/sbin/resize2fs",
	"/usr/sbin/xfs_growfs", "/usr/sbin/xfs_repair",
	"/etc/mke2fs.conf",
}

// csiNodeToolsLayer is the layer of csiNodeTools with their interpreters and libraries, laid
// out as Debian's merged /usr (the /bin, /sbin, /lib, /lib64 symlinks the loader path and
// the packages' absolute symlinks rely on). It returns the files it holds, each with its size
// and package, for the image's contents list.
func csiNodeToolsLayer(ctx context.Context, debs string, mtime time.Time, cache *layerCache) (v1.Layer, []debPackage, []string, error) {
	pkgs, fsys, err := loadPackages(ctx, debs, debianPackages)
	if err != nil {
		return nil, nil, nil, err
	}
	paths, err := fsys.closure(csiNodeTools)
	if err != nil {
		return nil, nil, nil, err
	}
	t := tree{}
	for _, d := range []string{"bin", "sbin", "lib", "lib64"} {
		t.symlink("/"+d, "usr/"+d)
	}
	var contents []string
	used := map[string]bool{}
	for _, p := range paths {
		e := fsys.entries[p]
		switch e.typ {
		case tar.TypeReg:
			t.file(p, e.mode, e.data)
			contents = append(contents, fmt.Sprintf("%s\t%d\t%s", p, len(e.data), fsys.owner[p]))
		case tar.TypeSymlink:
			t.symlink(p, e.link)
			contents = append(contents, fmt.Sprintf("%s -> %s\t\t%s", p, e.link, fsys.owner[p]))
		}
		used[fsys.owner[p]] = true
	}
	// Only the packages a file came from are named in the label.
	var usedPkgs []debPackage
	for _, p := range pkgs {
		if used[p.Name] {
			usedPkgs = append(usedPkgs, p)
		}
	}
	if len(usedPkgs) != len(pkgs) {
		var unused []string
		for _, p := range pkgs {
			if !used[p.Name] {
				unused = append(unused, p.Name)
			}
		}
		return nil, nil, nil, fmt.Errorf("debianPackages lists packages no needed file comes from: %s", strings.Join(unused, " "))
	}
	l, err := cache.layer(t, mtime)
	return l, usedPkgs, contents, err
}
