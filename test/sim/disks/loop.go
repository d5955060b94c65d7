package disks

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// Supported reports why loop devices cannot be used here, or nil if they can: the simulator
// needs root, /dev/loop-control and the losetup binary.
func Supported() error {
	if os.Geteuid() != 0 {
		return errors.New("simulated disks need root (loop devices)")
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		return fmt.Errorf("simulated disks need loop devices: %w", err)
	}
	if _, err := exec.LookPath("losetup"); err != nil {
		return fmt.Errorf("simulated disks need losetup: %w", err)
	}
	return nil
}

func losetup(ctx context.Context, args ...string) (string, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "losetup", args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("losetup %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(stdout.String()), nil
}

// attach puts file on the first free loop device and returns its path.
func attach(ctx context.Context, file string) (string, error) {
	dev, err := losetup(ctx, "--find", "--show", file)
	if err != nil {
		return "", err
	}
	if !strings.HasPrefix(dev, "/dev/loop") {
		return "", fmt.Errorf("losetup returned unexpected device %q for %s", dev, file)
	}
	return dev, nil
}

// detach releases dev. A device that is already gone counts as detached.
func detach(ctx context.Context, dev string) error {
	if _, err := os.Stat(filepath.Join("/sys/block", filepath.Base(dev), "loop")); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	_, err := losetup(ctx, "--detach", dev)
	return err
}

// refreshCapacity makes the loop driver re-read the backing file's size.
func refreshCapacity(ctx context.Context, dev string) error {
	_, err := losetup(ctx, "--set-capacity", dev)
	return err
}

// loopDevice is one row of `losetup --list --json`.
type loopDevice struct {
	Name     string `json:"name"`
	BackFile string `json:"back-file"`
}

// listLoops returns every attached loop device with its backing file.
func listLoops(ctx context.Context) ([]loopDevice, error) {
	out, err := losetup(ctx, "--list", "--json", "--output", "NAME,BACK-FILE")
	if err != nil {
		return nil, err
	}
	if out == "" { // no loop device at all: losetup prints nothing
		return nil, nil
	}
	var doc struct {
		Loopdevices []loopDevice `json:"loopdevices"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		return nil, fmt.Errorf("parsing losetup --list output: %w", err)
	}
	return doc.Loopdevices, nil
}

// DeviceSize reads a block device's size in bytes from sysfs (512-byte sectors).
func DeviceSize(dev string) (int64, error) {
	raw, err := os.ReadFile(filepath.Join("/sys/block", filepath.Base(dev), "size"))
	if err != nil {
		return 0, fmt.Errorf("reading size of %s: %w", dev, err)
	}
	sectors, err := strconv.ParseInt(strings.TrimSpace(string(raw)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parsing size of %s: %w", dev, err)
	}
	return sectors * 512, nil
}
