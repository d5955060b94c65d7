package node

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
)

// cgroupMount is where this machine mounts its cgroup v1 hierarchies, one directory each.
const cgroupMount = "/sys/fs/cgroup"

// cgroupPrefix starts every node's cgroup subtree: tenantcloud-node-<test pid>-<node>.
const cgroupPrefix = "tenantcloud-node-"

// hierarchies lists the mounted cgroup v1 hierarchies (each a directory with cgroup.procs).
func hierarchies() ([]string, error) {
	entries, err := os.ReadDir(cgroupMount)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", cgroupMount, err)
	}
	var out []string
	for _, e := range entries {
		dir := filepath.Join(cgroupMount, e.Name())
		if fi, err := os.Lstat(dir); err != nil || !fi.IsDir() {
			continue // cpu,cpuacct style symlinks point at a hierarchy already listed
		}
		if _, err := os.Stat(filepath.Join(dir, "cgroup.procs")); err == nil {
			out = append(out, dir)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no cgroup v1 hierarchy under %s", cgroupMount)
	}
	return out, nil
}

// makeCgroup creates rel (e.g. tenantcloud-1-a/system) in every hierarchy. cpuset groups start
// with no CPUs or memory nodes in v1, so they get their parent's.
func makeCgroup(rel string) error {
	hs, err := hierarchies()
	if err != nil {
		return err
	}
	for _, h := range hs {
		parts := strings.Split(rel, "/")
		for i := range parts {
			dir := filepath.Join(h, filepath.Join(parts[:i+1]...))
			if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
				return fmt.Errorf("creating cgroup %s: %w", dir, err)
			}
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				parent, err := os.ReadFile(filepath.Join(filepath.Dir(dir), f))
				if err != nil {
					continue // not the cpuset hierarchy
				}
				if cur, _ := os.ReadFile(filepath.Join(dir, f)); strings.TrimSpace(string(cur)) == "" {
					if err := os.WriteFile(filepath.Join(dir, f), parent, 0o644); err != nil {
						return fmt.Errorf("setting %s of %s: %w", f, dir, err)
					}
				}
			}
		}
	}
	return nil
}

// joinCgroup moves pid into rel in every hierarchy; its future children start there.
func joinCgroup(rel string, pid int) error {
	hs, err := hierarchies()
	if err != nil {
		return err
	}
	for _, h := range hs {
		if err := os.WriteFile(filepath.Join(h, rel, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0o644); err != nil {
			return fmt.Errorf("moving %d into %s: %w", pid, filepath.Join(h, rel), err)
		}
	}
	return nil
}

// cgroupPIDs lists every process in rel's subtree, in any hierarchy.
func cgroupPIDs(rel string) []int {
	hs, _ := hierarchies()
	seen := map[int]bool{}
	for _, h := range hs {
		_ = filepath.WalkDir(filepath.Join(h, rel), func(p string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || d.Name() != "cgroup.procs" {
				return nil
			}
			data, _ := os.ReadFile(p)
			for _, f := range strings.Fields(string(data)) {
				if pid, err := strconv.Atoi(f); err == nil {
					seen[pid] = true
				}
			}
			return nil
		})
	}
	out := make([]int, 0, len(seen))
	for pid := range seen {
		out = append(out, pid)
	}
	slices.Sort(out)
	return out
}

// killCgroup SIGKILLs everything in rel's subtree until it is empty (processes may fork while
// being killed), then removes its directories deepest first.
func killCgroup(rel string, timeout time.Duration) error {
	var pids []int
	// Killed processes leave their cgroups once reaped by their parents; poll for that.
	err := wait.PollUntilContextTimeout(context.Background(), 20*time.Millisecond, timeout, true, func(context.Context) (bool, error) {
		pids = cgroupPIDs(rel)
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		return len(pids) == 0, nil
	})
	if err != nil {
		return fmt.Errorf("cgroup %s still holds processes %v after %s: %w", rel, pids, timeout, err)
	}
	return removeCgroup(rel)
}

func removeCgroup(rel string) error {
	hs, err := hierarchies()
	if err != nil {
		return err
	}
	var errs []error
	for _, h := range hs {
		var dirs []string
		_ = filepath.WalkDir(filepath.Join(h, rel), func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		// Children before parents: walk order reversed.
		for i := len(dirs) - 1; i >= 0; i-- {
			if err := os.Remove(dirs[i]); err != nil && !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, fmt.Errorf("removing cgroup %s: %w", dirs[i], err))
			}
		}
	}
	return errors.Join(errs...)
}

// reapCgroups ends what nodes of test binaries that are gone left running: every subtree
// tenantcloud-node-<pid>-* whose pid is no longer alive.
func reapCgroups() (int, error) {
	hs, err := hierarchies()
	if err != nil {
		return 0, err
	}
	stale := map[string]bool{}
	for _, h := range hs {
		entries, _ := os.ReadDir(h)
		for _, e := range entries {
			if owner, ok := ownerPID(e.Name()); e.IsDir() && ok && syscall.Kill(owner, 0) != nil {
				stale[e.Name()] = true
			}
		}
	}
	var errs []error
	for rel := range stale {
		errs = append(errs, killCgroup(rel, 30*time.Second))
	}
	return len(stale), errors.Join(errs...)
}

// ownerPID parses tenantcloud-node-<pid>-<node>.
func ownerPID(name string) (int, bool) {
	rest, ok := strings.CutPrefix(name, cgroupPrefix)
	if !ok {
		return 0, false
	}
	pidStr, _, ok := strings.Cut(rest, "-")
	if !ok {
		return 0, false
	}
	pid, err := strconv.Atoi(pidStr)
	return pid, err == nil && pid > 0
}

func isAlive(pid int) bool { return syscall.Kill(pid, 0) == nil }
