package harness

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// envtest starts etcd and kube-apiserver in their own process groups without a parent-death
// signal, so a test binary killed by `go test -timeout` would leave them running. Each harness
// records its children under bin/.harness/<pid>; the next Start kills the recorded processes
// of owners that are gone.

func recordDir(binDir string) string { return filepath.Join(binDir, ".harness") }

// recordChildren writes the PIDs of this process's children that run a harness binary.
func recordChildren(binDir string) error {
	var lines []string
	for _, pid := range childPIDs(os.Getpid()) {
		if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); err == nil && strings.HasPrefix(exe, binDir+string(os.PathSeparator)) {
			lines = append(lines, fmt.Sprintf("%d %s", pid, exe))
		}
	}
	if err := os.MkdirAll(recordDir(binDir), 0o755); err != nil {
		return fmt.Errorf("recording harness processes: %w", err)
	}
	return os.WriteFile(filepath.Join(recordDir(binDir), strconv.Itoa(os.Getpid())), []byte(strings.Join(lines, "\n")), 0o644)
}

// forgetChildren drops the record of children that have exited. Another Env of this process
// (a test that starts a second pair of clusters) may still run, so what still runs stays
// recorded.
func forgetChildren(binDir string) {
	if err := recordChildren(binDir); err != nil || len(childPIDs(os.Getpid())) == 0 {
		_ = os.Remove(filepath.Join(recordDir(binDir), strconv.Itoa(os.Getpid())))
	}
}

// reapOrphans kills processes recorded by harnesses whose test binary no longer runs. A PID is
// only killed if it still runs the recorded executable, so a reused PID is left alone.
func reapOrphans(binDir string) (killed int) {
	entries, _ := os.ReadDir(recordDir(binDir))
	for _, e := range entries {
		owner, err := strconv.Atoi(e.Name())
		if err != nil || processAlive(owner) {
			continue
		}
		path := filepath.Join(recordDir(binDir), e.Name())
		data, _ := os.ReadFile(path)
		for _, line := range strings.Split(string(data), "\n") {
			pidStr, exe, ok := strings.Cut(line, " ")
			pid, err := strconv.Atoi(pidStr)
			if !ok || err != nil {
				continue
			}
			if cur, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); err == nil && cur == exe {
				_ = syscall.Kill(pid, syscall.SIGKILL)
				killed++
			}
		}
		_ = os.Remove(path)
	}
	return killed
}

func processAlive(pid int) bool {
	return syscall.Kill(pid, 0) == nil
}

// childPIDs lists the direct children of pid from /proc.
func childPIDs(pid int) []int {
	var out []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// Fields after the parenthesised command name: state, ppid, ...
		i := bytes.LastIndexByte(stat, ')')
		if i < 0 {
			continue
		}
		fields := strings.Fields(string(stat[i+1:]))
		if len(fields) > 1 && fields[1] == strconv.Itoa(pid) {
			out = append(out, child)
		}
	}
	return out
}
