package harness

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// A control-plane process recorded by a test binary that died is killed by the next harness;
// one whose owner still runs is left alone.
func TestReapOrphans(t *testing.T) {
	binDir := t.TempDir()
	sleep, err := exec.LookPath("sleep")
	Require(t, NeedTool, err)
	data, err := os.ReadFile(sleep)
	if err != nil {
		t.Fatal(err)
	}
	fake := filepath.Join(binDir, "etcd")
	if err := os.WriteFile(fake, data, 0o755); err != nil {
		t.Fatal(err)
	}
	start := func() *exec.Cmd {
		cmd := exec.Command(fake, "300")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		return cmd
	}
	orphan, kept := start(), start()

	// A finished process's PID stands for a test binary that is gone.
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}
	record := func(owner int, child *exec.Cmd) {
		if err := os.MkdirAll(recordDir(binDir), 0o755); err != nil {
			t.Fatal(err)
		}
		line := fmt.Sprintf("%d %s", child.Process.Pid, fake)
		if err := os.WriteFile(filepath.Join(recordDir(binDir), strconv.Itoa(owner)), []byte(line), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	record(dead.Process.Pid, orphan)
	record(os.Getpid(), kept)

	if n := reapOrphans(binDir); n != 1 {
		t.Fatalf("reaped %d processes, want 1", n)
	}
	done := make(chan error, 1)
	go func() { done <- orphan.Wait() }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("orphan still running after reap")
	}
	if !processAlive(kept.Process.Pid) {
		t.Fatal("process of a live owner was killed")
	}
	if _, err := os.Stat(filepath.Join(recordDir(binDir), strconv.Itoa(dead.Process.Pid))); !os.IsNotExist(err) {
		t.Fatalf("record of the dead owner not removed: %v", err)
	}
}
