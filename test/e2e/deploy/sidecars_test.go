package deploy_test

import (
	"context"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/tenantcloud/tenantcloud/test/harness"
)

// TestChartSidecarFlags runs every upstream program the management chart deploys (the CSI
// sidecars hack/bin-sidecars.sh builds, cluster-autoscaler from hack/bin-cluster-autoscaler.sh)
// with exactly the args the chart renders for it, followed by --help: each flag must be one
// that version defines and each value must parse, so a chart arg an upgrade renamed or dropped
// fails here instead of crash-looping a pod. The sidecars' default image tags must be the
// versions built here, which make images packages.
func TestChartSidecarFlags(t *testing.T) {
	// With the second set of sidecars for adopted volumes (csiController.legacyDriver), whose
	// containers are the same programs named <program>-legacy.
	objs := render(t, "tenantcloud", "deploy-mgmt", append(slices.Clone(mgmtSets), "csiController.legacyDriver.enabled=true")...)
	csi := release + "-csi-controller"
	for _, c := range []struct {
		deployment, container, program, build string
		checkTag                              bool // the binary's --version is the image tag
	}{
		{csi, "csi-provisioner", "csi-provisioner", "hack/bin-sidecars.sh", true},
		{csi, "csi-attacher", "csi-attacher", "hack/bin-sidecars.sh", true},
		{csi, "csi-resizer", "csi-resizer", "hack/bin-sidecars.sh", true},
		{csi, "csi-snapshotter", "csi-snapshotter", "hack/bin-sidecars.sh", true},
		{csi, "csi-provisioner-legacy", "csi-provisioner", "hack/bin-sidecars.sh", true},
		{csi, "csi-attacher-legacy", "csi-attacher", "hack/bin-sidecars.sh", true},
		{csi, "csi-resizer-legacy", "csi-resizer", "hack/bin-sidecars.sh", true},
		{csi, "csi-snapshotter-legacy", "csi-snapshotter", "hack/bin-sidecars.sh", true},
		// Its main package reports 1.33.0 whatever the pseudo-version (hack/bin-cluster-autoscaler.sh).
		{release + "-cluster-autoscaler", "cluster-autoscaler", "cluster-autoscaler", "hack/bin-cluster-autoscaler.sh", false},
	} {
		t.Run(c.container, func(t *testing.T) {
			bin := harness.Bin(t, c.program, c.build)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			args := containerArgs(t, objs, "Deployment", c.deployment, c.container)
			if len(args) == 0 {
				t.Fatalf("the chart renders no args for %s", c.container)
			}

			// The binary parses every arg before it reaches --help, which stops it before it
			// connects anywhere. pflag (csi-provisioner, csi-resizer, cluster-autoscaler) and
			// Go's flag (csi-attacher, csi-snapshotter) both exit 2 or 0 here; the output tells.
			out, _ := exec.CommandContext(ctx, bin, append(args, "--help")...).CombinedOutput()
			help := string(out)
			// Both print a parse error before the usage text, whose descriptions may say anything.
			head, _, _ := strings.Cut(help, "Usage")
			if flagErrors.MatchString(head) {
				t.Errorf("%s rejects the chart's args %q: %s", c.container, args, strings.TrimSpace(head))
			}
			known := helpFlags(help)
			if len(known) < 5 {
				t.Fatalf("%s --help lists %d flags; not a usage text:\n%s", c.container, len(known), help)
			}
			for _, a := range args {
				name := strings.TrimLeft(strings.SplitN(a, "=", 2)[0], "-")
				if !known[name] {
					t.Errorf("%s: the chart passes %s, which %s --help does not list", c.container, a, bin)
				}
			}
			t.Logf("%s: %d rendered args known (of %d flags): %q", c.container, len(args), len(known), args)

			if !c.checkTag {
				return
			}
			out, err := exec.CommandContext(ctx, bin, "--version").CombinedOutput()
			if err != nil {
				t.Fatalf("%s --version: %v: %s", bin, err, out)
			}
			fields := strings.Fields(string(out))
			if len(fields) == 0 {
				t.Fatalf("%s --version printed nothing", bin)
			}
			image := containerImage(t, find(t, objs, "Deployment", c.deployment), c.container)
			if tag := image[strings.LastIndex(image, ":")+1:]; tag != fields[len(fields)-1] {
				t.Errorf("the chart's default image %s is not the built %s %s", image, c.program, fields[len(fields)-1])
			}
		})
	}
}

// flagErrors are the parse errors of pflag ("unknown flag", "invalid argument", "bad flag
// syntax", "unknown shorthand flag") and Go's flag ("flag provided but not defined", "invalid
// value", "invalid boolean value").
var flagErrors = regexp.MustCompile(`unknown (shorthand )?flag|invalid argument|bad flag syntax|flag provided but not defined|invalid (boolean )?value`)

// helpFlagLine matches a flag's line in pflag's usage ("      --timeout duration",
// "  -v, --v Level") and Go flag's ("  -timeout duration").
var helpFlagLine = regexp.MustCompile(`(?m)^\s+(?:-\w, )?--?([A-Za-z0-9][A-Za-z0-9._-]*)`)

// helpFlags are the flag names a usage text lists.
func helpFlags(help string) map[string]bool {
	known := map[string]bool{}
	for _, m := range helpFlagLine.FindAllStringSubmatch(help, -1) {
		known[m[1]] = true
	}
	return known
}

// containerImage is the image of container in the rendered workload o.
func containerImage(t *testing.T, o *unstructured.Unstructured, container string) string {
	t.Helper()
	cs, _, err := unstructured.NestedSlice(o.Object, "spec", "template", "spec", "containers")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cs {
		if m, _ := c.(map[string]any); m["name"] == container {
			image, _ := m["image"].(string)
			return image
		}
	}
	t.Fatalf("%s %s has no container %s", o.GetKind(), o.GetName(), container)
	return ""
}
