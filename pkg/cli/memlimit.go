package cli

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
)

// memoryLimitShare is the part of the container's memory limit given to the Go runtime as its
// soft limit: the rest is for what the runtime does not count but the cgroup does (the binary's
// pages, ≈20–35 MB of RSS for these programs, and the kernel's buffers).
const memoryLimitShare = 0.8

// cgroupRoot is where a container sees its own cgroup (cgroup namespaces on v2; Docker and
// containerd mount the container's own hierarchy on v1).
const cgroupRoot = "/sys/fs/cgroup"

// containerMemoryLimit returns the memory limit of the cgroup mounted at root in bytes, and
// false when there is none: cgroup v2's memory.max ("max" when unlimited) or cgroup v1's
// memory/memory.limit_in_bytes (a page-rounded MaxInt64 when unlimited).
func containerMemoryLimit(root string) (int64, bool, error) {
	for _, f := range []string{"memory.max", filepath.Join("memory", "memory.limit_in_bytes")} {
		b, err := os.ReadFile(filepath.Join(root, f))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return 0, false, fmt.Errorf("reading the memory limit: %w", err)
		}
		s := strings.TrimSpace(string(b))
		if s == "max" {
			return 0, false, nil
		}
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, false, fmt.Errorf("reading the memory limit %s: %q: %w", f, s, err)
		}
		// v1 reports "unlimited" as MaxInt64 rounded down to a page; nothing real is within a
		// petabyte of it.
		if n <= 0 || n > math.MaxInt64/2 {
			return 0, false, nil
		}
		return n, true, nil
	}
	return 0, false, nil
}

// applyMemoryLimit gives the Go runtime a soft memory limit of memoryLimitShare of the
// container's limit, so that the garbage collector works harder as the limit nears instead of
// letting the heap double (GOGC=100) into an OOM kill; without it a 1,000-object LIST can take a
// component past a tight limit it would otherwise fit in. An explicit GOMEMLIMIT wins, as does
// running without a limit. It returns the limit it set (0 for none).
func applyMemoryLimit(root string, getenv func(string) string) (int64, error) {
	if getenv("GOMEMLIMIT") != "" {
		return 0, nil
	}
	limit, ok, err := containerMemoryLimit(root)
	if err != nil || !ok {
		return 0, err
	}
	soft := int64(float64(limit) * memoryLimitShare)
	debug.SetMemoryLimit(soft)
	return soft, nil
}

// applyGCPercent sets the garbage collector's target to percent (Program.GCPercent) unless GOGC
// is set, which wins, or percent is 0 (the runtime's 100). It returns what it set (0 for
// nothing).
func applyGCPercent(percent int, getenv func(string) string) int {
	if percent <= 0 || getenv("GOGC") != "" {
		return 0
	}
	debug.SetGCPercent(percent)
	return percent
}
