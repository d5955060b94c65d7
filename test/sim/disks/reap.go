package disks

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// ReapOrphans detaches loop devices whose backing file lies under a Manager root whose owning
// process is dead: what a test killed before its cleanup ran leaves behind. Only devices that
// provably belong to a dead Manager are touched (root found from the path, owner pid file
// present, process gone); other users' loop devices never are. It returns how many it released.
func ReapOrphans(ctx context.Context) (int, error) {
	loops, err := listLoops(ctx)
	if err != nil {
		return 0, err
	}
	n := 0
	var errs []error
	for _, l := range loops {
		root, ok := rootOf(l.BackFile)
		if !ok || !ownerDead(root) {
			continue
		}
		if err := detach(ctx, l.Name); err != nil {
			errs = append(errs, err)
			continue
		}
		n++
	}
	return n, errors.Join(errs...)
}

// rootOf extracts the Manager root from a backing file path <root>/.backing/<ns>/<claim>.img.
func rootOf(backFile string) (string, bool) {
	if strings.HasSuffix(backFile, " (deleted)") {
		return "", false // the root is gone with its owner file: ownership cannot be proven
	}
	sep := string(filepath.Separator) + backingDirName + string(filepath.Separator)
	i := strings.LastIndex(backFile, sep)
	if i <= 0 || !strings.HasSuffix(backFile, ".img") {
		return "", false
	}
	return backFile[:i], true
}

// ownerDead reports whether root's owner file names a process that no longer exists.
func ownerDead(root string) bool {
	raw, err := os.ReadFile(filepath.Join(root, ownerFileName))
	if err != nil {
		return false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(raw)))
	if err != nil || pid <= 0 || pid == os.Getpid() {
		return false
	}
	return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
}

// hasPathPrefix reports whether path lies under dir (which ends in a separator).
func hasPathPrefix(path, dir string) bool { return strings.HasPrefix(path, dir) }
