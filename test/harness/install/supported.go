package install

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/tenantcloud/tenantcloud/test/harness"
	"github.com/tenantcloud/tenantcloud/test/harness/node"
	"github.com/tenantcloud/tenantcloud/test/sim/disks"
)

// Needs are what an installation needs of bin/ besides what the harness always has: helm,
// imagebuild (pushes bin/images), the schedulers and controller managers that turn the
// charts into pods, and the images make images built.
var Needs = []string{"helm", "imagebuild", "kube-scheduler", "kube-controller-manager", "images/images.txt"}

// Supported says whether this machine can install the charts as pods with the simulated
// guest disks: real nodes, loop devices, the registry binary and Needs. need is the
// harness.Require need the error falls under ("" when supported).
func Supported(env *harness.Env) (need string, err error) {
	if err := node.Supported(env); err != nil {
		return node.Need, fmt.Errorf("real nodes: %w", err)
	}
	if err := disks.Supported(); err != nil {
		return harness.NeedDisks, fmt.Errorf("guest disks: %w", err)
	}
	for _, b := range Needs {
		if _, err := os.Stat(filepath.Join(env.Assets.BinDir, b)); err != nil {
			return harness.NeedBin, fmt.Errorf("bin/%s: run make bin and make images: %w", b, err)
		}
	}
	if _, err := exec.LookPath(harness.RegistryBinary); err != nil {
		return harness.NeedTool, fmt.Errorf("the image registry (apt-get install docker-registry): %w", err)
	}
	return "", nil
}
