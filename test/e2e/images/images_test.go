package images

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/tenantcloud/tenantcloud/test/harness"
	"github.com/tenantcloud/tenantcloud/test/sim/disks"
)

// world is what every test of the suite shares: the layout make images wrote, a loopback
// registry holding its images, and a containerd that pulled them from there.
type world struct {
	root   string // repository root
	images []image
	reg    *harness.Registry
	ctd    *containerd
	// refs: image name → the reference it was pulled by (the loopback registry's).
	refs map[string]string
}

// wantImages are the images make images must build: the charts run all of them but
// snapshot-controller, which a tenant needs beside the snapshot CRDs.
var wantImages = []string{
	"ccm", "csi-controller", "csi-node", "autoscaler-provider",
	"csi-provisioner", "csi-attacher", "csi-resizer", "csi-snapshotter", "snapshot-controller",
	"cluster-autoscaler",
}

// ours are the images of this repository's programs.
var ours = map[string]bool{"ccm": true, "csi-controller": true, "csi-node": true, "autoscaler-provider": true}

// upstreamVersion is how an upstream binary reports its version: run with args, the version
// is what re matches; isLabel: it is the version the image is labelled with (the module
// version); failing: the run exits non-zero after reporting.
type upstreamVersion struct {
	args             []string
	re               *regexp.Regexp
	isLabel, failing bool
}

var upstreamVersions = map[string]upstreamVersion{
	// Every CSI sidecar prints "<argv0> <version>" for --version.
	"*": {args: []string{"--version"}, re: regexp.MustCompile(`v[0-9]+\.[0-9]+\.[0-9]+\S*`), isLabel: true},
	// cluster-autoscaler has no --version; it logs its version first thing, then fails
	// without a kubeconfig. Its module is a pseudo-version; it reports its release, 1.33.0.
	"cluster-autoscaler": {args: []string{"--v=1", "--kubeconfig=/nonexistent"}, re: regexp.MustCompile(`Cluster Autoscaler [0-9]+\.[0-9]+\.[0-9]+`), failing: true},
}

func setup(ctx context.Context, t *testing.T) *world {
	t.Helper()
	w := &world{root: repoRoot(t), refs: map[string]string{}}
	tool := harness.Bin(t, "imagebuild", "make images")
	w.images = builtImages(t, w.root)
	if _, err := exec.LookPath(harness.RegistryBinary); err != nil {
		harness.Require(t, harness.NeedTool, fmt.Errorf("%s (Debian package docker-registry): %w", harness.RegistryBinary, err))
	}
	dir := t.TempDir()
	w.ctd = startContainerd(ctx, t, filepath.Join(dir, "containerd"))
	if err := os.Mkdir(filepath.Join(dir, "registry"), 0o755); err != nil {
		t.Fatal(err)
	}
	reg, err := harness.StartRegistry(ctx, filepath.Join(dir, "registry"))
	if err != nil {
		t.Fatal(err)
	}
	w.reg = reg
	t.Cleanup(func() {
		if err := w.reg.Stop(); err != nil {
			t.Errorf("stopping the registry: %v", err)
		}
	})

	// The same push make images PUSH=1 does, to the loopback registry's name.
	registry := w.reg.Addr + "/tenantcloud"
	out, err := exec.CommandContext(ctx, tool, "push", "--out", filepath.Join(w.root, "bin", "images"), "--registry", registry).CombinedOutput()
	if err != nil {
		t.Fatalf("imagebuild push: %v\n%s", err, out)
	}
	for _, img := range w.images {
		ref := registry + "/" + img.Name + ":" + img.Tag
		digest, err := w.ctd.pull(ctx, ref)
		if err != nil {
			t.Fatalf("pulling %s: %v; registry log: %s", ref, err, w.reg.Log(2000))
		}
		if digest != img.Digest {
			t.Fatalf("pulled %s as %s, but make images built %s", ref, digest, img.Digest)
		}
		w.refs[img.Name] = ref
	}
	return w
}

func TestImages(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	w := setup(ctx, t)

	t.Run("every chart image is built", func(t *testing.T) {
		for _, name := range wantImages {
			if _, ok := w.refs[name]; !ok {
				t.Errorf("bin/images holds no %s image", name)
			}
		}
	})
	for _, img := range w.images {
		t.Run(img.Name+" --version", func(t *testing.T) { testVersion(ctx, t, w, img) })
	}
	t.Run("csi-node tools on a loop device", func(t *testing.T) {
		harness.Require(t, harness.NeedDisks, disks.Supported())
		for _, fs := range []string{"ext4", "xfs"} {
			t.Run(fs, func(t *testing.T) { testFilesystem(ctx, t, w, fs) })
		}
	})
}

// testVersion runs the image's entrypoint with --version as containerd would start it (the
// image's user and entrypoint) and checks the version it reports and the user it ran as.
func testVersion(ctx context.Context, t *testing.T, w *world, img image) {
	cfg := img.Config.Config
	if len(cfg.Entrypoint) != 1 || cfg.Entrypoint[0] != "/"+img.Name {
		t.Fatalf("entrypoint %q, want [/%s]", cfg.Entrypoint, img.Name)
	}
	wantUser := "65532:65532"
	if img.Name == "csi-node" {
		wantUser = "0:0" // it formats and mounts
	}
	if cfg.User != wantUser {
		t.Errorf("user %q, want %q", cfg.User, wantUser)
	}
	version := cfg.Labels["org.opencontainers.image.version"]
	if version == "" || cfg.Labels["org.opencontainers.image.source"] == "" {
		t.Errorf("labels lack the version or source: %v", cfg.Labels)
	}
	var want string
	args := []string{"--version"}
	if ours[img.Name] {
		// pkg/version.String: "<program> <version> (go…)".
		want = img.Name + " " + version + " (go"
		if cfg.Labels["org.opencontainers.image.revision"] == "" {
			t.Errorf("labels lack the revision: %v", cfg.Labels)
		}
	} else {
		// The upstream binary reports its own version; the image must run it to the same
		// answer as bin/ does on this machine.
		rv, ok := upstreamVersions[img.Name]
		if !ok {
			rv = upstreamVersions["*"]
		}
		args = rv.args
		host, _ := exec.CommandContext(ctx, filepath.Join(w.root, "bin", img.Name), args...).CombinedOutput()
		want = rv.re.FindString(string(host))
		if want == "" {
			t.Fatalf("bin/%s %s reports no version (%s):\n%s", img.Name, strings.Join(args, " "), rv.re, host)
		}
		if rv.isLabel && want != version {
			t.Errorf("bin/%s reports %s, its image is labelled %s", img.Name, want, version)
		}
	}

	id := "version-" + img.Name
	out, err := w.ctd.run(ctx, append([]string{w.refs[img.Name], id}, append(cfg.Entrypoint, args...)...)...)
	if err != nil && !upstreamVersions[img.Name].failing {
		t.Fatal(err)
	}
	// The container is kept until here to read the user containerd ran it as.
	info, err := w.ctd.ctr(ctx, "containers", "info", id)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.ctd.ctr(ctx, "containers", "delete", id); err != nil {
		t.Error(err)
	}
	if !strings.Contains(out, want) {
		t.Errorf("%s %s printed %q, want it to contain %q", img.Name, strings.Join(args, " "), out, want)
	}
	var c struct {
		Spec struct {
			Process struct {
				User struct {
					UID, GID uint32
				} `json:"user"`
			} `json:"process"`
		} `json:"Spec"`
	}
	if err := json.Unmarshal([]byte(info), &c); err != nil {
		t.Fatalf("ctr containers info: %v\n%s", err, info)
	}
	if got := fmt.Sprintf("%d:%d", c.Spec.Process.User.UID, c.Spec.Process.User.GID); got != wantUser {
		t.Errorf("containerd ran %s as %s, want %s", img.Name, got, wantUser)
	}
	t.Logf("%s: %s", img.Name, strings.TrimSpace(out))
}

// stage1 does on a fresh disk what csi-node's NodeStageVolume does through mount-utils (blkid,
// mkfs, mount), writes a file and unmounts; stage2, after the disk grew, does what a later
// stage and NodeExpandVolume do (blkid, fsck -a, mount, blockdev, resize2fs/xfs_growfs),
// reads the file back, unmounts and checks the filesystem offline. Both run only the
// image's own tools, with the image's dash as the shell. ext4 grows offline here: online
// growth (what NodeExpandVolume does) needs CAP_SYS_RESOURCE, which even privileged
// containers lack on this machine (its root has none to give); xfs grows online, as in a
// cluster.
const (
	stage1 = `set -eu
dev=$1 fs=$2
blkid -p -s TYPE -s PTTYPE -o export "$dev" || echo "blkid: $? (2: no filesystem yet)"
case $fs in
ext4) mkfs.ext4 -F -m0 "$dev" ;;
xfs) mkfs.xfs -f "$dev" ;;
esac
mount -t "$fs" "$dev" /tmp
echo "written in the csi-node image on $fs" > /tmp/data
umount /tmp
echo stage1 done
`
	stage2 = `set -eu
dev=$1 fs=$2
blkid -p -s TYPE -s PTTYPE -o export "$dev"
fsck -a "$dev"
mount -t "$fs" "$dev" /tmp
echo "device bytes: $(blockdev --getsize64 "$dev") read-only: $(blockdev --getro "$dev")"
if [ "$fs" = xfs ]; then xfs_growfs /tmp; fi
read -r line < /tmp/data
echo "read back: $line"
umount /tmp
if [ "$fs" = ext4 ]; then e2fsck -f -p "$dev" && resize2fs "$dev"; fi
case $fs in
ext4) e2fsck -fn "$dev" ;;
xfs) xfs_repair -n "$dev" ;;
esac
echo stage2 done
`
)

func testFilesystem(ctx context.Context, t *testing.T, w *world, fs string) {
	m, err := disks.New(t.TempDir())
	if err != nil {
		harness.Require(t, harness.NeedDisks, err)
	}
	t.Cleanup(func() {
		if err := m.Close(); err != nil {
			t.Errorf("releasing the loop device: %v", err)
		}
	})
	const mib = 1 << 20
	// mkfs.xfs refuses filesystems under 300 MiB; the backing file is sparse.
	dev, err := m.Plug(ctx, "images", "node", fs, 320*mib, "", "virtio")
	if err != nil {
		t.Fatal(err)
	}
	run := func(stage, script string) string {
		t.Helper()
		// Privileged with the host's /dev, as the chart runs csi-node (hostPath /dev).
		out, err := w.ctd.ctr(ctx, "run", "--rm", "--privileged",
			"--mount", "type=bind,src=/dev,dst=/dev,options=rbind:rw",
			w.refs["csi-node"], "csi-node-"+fs+"-"+stage, "/bin/sh", "-c", script, "sh", dev, fs)
		if err != nil {
			t.Fatalf("%s: %v", stage, err)
		}
		t.Logf("%s %s:\n%s", fs, stage, out)
		return out
	}
	if out := run("stage1", stage1); !strings.Contains(out, "stage1 done") {
		t.Fatalf("stage1 did not finish: %s", out)
	}
	if err := m.Resize("images", fs, 400*mib); err != nil {
		t.Fatal(err)
	}
	out := run("stage2", stage2)
	for _, want := range []string{
		"TYPE=" + fs,
		fmt.Sprintf("device bytes: %d read-only: 0", 400*mib),
		"read back: written in the csi-node image on " + fs,
		"stage2 done",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("stage2 output lacks %q", want)
		}
	}
	// The filesystem grew to the device: resize2fs reports the new size, xfs_growfs the
	// change of its data blocks.
	grew := map[string]string{"ext4": "is now", "xfs": "data blocks changed from"}[fs]
	if !strings.Contains(out, grew) {
		t.Errorf("the %s filesystem did not grow (no %q in the output)", fs, grew)
	}
}

// TestReproducible builds the csi-node image again from the same binary and Debian packages,
// without the layer cache, into another directory, and expects the digest make images got:
// the same inputs give the same image. csi-node has every kind of layer (the base, the Debian
// tools, a binary); the other images differ from it only in their binary.
func TestReproducible(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	root := repoRoot(t)
	tool := harness.Bin(t, "imagebuild", "make images")
	images := builtImages(t, root)
	built := map[string]image{}
	for _, img := range images {
		built[img.Name] = img
	}
	node, ok := built["csi-node"]
	if !ok {
		t.Fatal("bin/images holds no csi-node image")
	}
	labels := node.Config.Config.Labels
	created, err := time.Parse(time.RFC3339, node.Config.Created)
	if err != nil {
		t.Fatalf("created %q: %v", node.Config.Created, err)
	}
	registry, _, ok := strings.Cut(node.Ref, "/csi-node:")
	if !ok {
		t.Fatalf("csi-node reference %q", node.Ref)
	}
	out := t.TempDir()
	cmd := exec.CommandContext(ctx, tool, "build", "--no-cache",
		"--bin", filepath.Join(root, "bin"), "--static", filepath.Join(root, "bin", "static"),
		"--out", out, "--debs", filepath.Join(root, "bin", "images", "debs"),
		"--registry", registry, "--version", labels["org.opencontainers.image.version"],
		"--revision", labels["org.opencontainers.image.revision"],
		"--source-date-epoch", fmt.Sprint(created.Unix()),
		"--only", "csi-node")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", cmd, err, b)
	}
	again, err := readLayout(filepath.Join(out, "oci"))
	if err != nil {
		t.Fatal(err)
	}
	if len(again) != 1 {
		t.Fatalf("the rebuild holds %d images, want 1", len(again))
	}
	for _, img := range again {
		if want := built[img.Name].Digest; img.Digest != want {
			t.Errorf("%s rebuilt as %s, make images built %s", img.Name, img.Digest, want)
		}
	}
}
