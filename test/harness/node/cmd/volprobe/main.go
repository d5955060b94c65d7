// Command volprobe is what a user's pod on the harness's real nodes does with its volume: it
// writes a file on a mounted volume (volprobe fs <dir> <text>) or bytes at the start of a raw
// block device (volprobe block <device> <text>), syncs, reads them back and prints one line
// ("ok fs <path> <filesystem> <text>" or "ok block <device> <size> <text>") to its log, which
// the kubelet writes on the node; volprobe read <dir> - prints what an earlier pod wrote there
// ("ok read <path> <filesystem> <text>"), and volprobe readblock <device> <n> the first n bytes an
// earlier (or another node's) pod wrote to the device ("ok readblock <device> <size> <text>").
// Then it stays running, as a workload would, until
// SIGTERM.
package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
)

func main() {
	line, err := probe(os.Args[1:])
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	fmt.Println(line)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	<-sigs
}

func probe(args []string) (string, error) {
	if len(args) != 3 {
		return "", errors.New("usage: volprobe fs <dir> <text> | volprobe read <dir> - | volprobe block <device> <text> | volprobe readblock <device> <n>")
	}
	mode, target, text := args[0], args[1], []byte(args[2])
	switch mode {
	case "fs":
		path := filepath.Join(target, "volprobe.txt")
		if err := writeSync(path, text, os.O_CREATE|os.O_TRUNC|os.O_WRONLY); err != nil {
			return "", err
		}
		got, err := os.ReadFile(path)
		if err != nil || !bytes.Equal(got, text) {
			return "", fmt.Errorf("read back %q from %s: %v", got, path, err)
		}
		var st syscall.Statfs_t
		if err := syscall.Statfs(target, &st); err != nil {
			return "", fmt.Errorf("statfs %s: %w", target, err)
		}
		return fmt.Sprintf("ok fs %s %s %s", path, fsName(st.Type), text), nil
	case "read":
		path := filepath.Join(target, "volprobe.txt")
		got, err := os.ReadFile(path)
		if err != nil {
			return "", err
		}
		var st syscall.Statfs_t
		if err := syscall.Statfs(target, &st); err != nil {
			return "", fmt.Errorf("statfs %s: %w", target, err)
		}
		return fmt.Sprintf("ok read %s %s %s", path, fsName(st.Type), got), nil
	case "block":
		if err := writeSync(target, text, os.O_WRONLY); err != nil {
			return "", err
		}
		f, err := os.Open(target)
		if err != nil {
			return "", err
		}
		defer f.Close()
		got := make([]byte, len(text))
		if _, err := f.ReadAt(got, 0); err != nil || !bytes.Equal(got, text) {
			return "", fmt.Errorf("read back %q from %s: %v", got, target, err)
		}
		size, err := f.Seek(0, 2)
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("ok block %s %d %s", target, size, text), nil
	case "readblock":
		n, err := strconv.Atoi(string(text))
		if err != nil || n <= 0 {
			return "", fmt.Errorf("readblock: byte count %q: %v", text, err)
		}
		f, err := os.Open(target)
		if err != nil {
			return "", err
		}
		defer f.Close()
		got := make([]byte, n)
		if _, err := f.ReadAt(got, 0); err != nil {
			return "", fmt.Errorf("reading %d bytes of %s: %w", n, target, err)
		}
		size, err := f.Seek(0, 2)
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("ok readblock %s %d %s", target, size, got), nil
	}
	return "", fmt.Errorf("unknown mode %q", mode)
}

func writeSync(path string, data []byte, flags int) error {
	f, err := os.OpenFile(path, flags, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}

// fsName names the file systems csi-node makes.
func fsName(magic int64) string {
	switch magic {
	case 0xEF53:
		return "ext4"
	case 0x58465342:
		return "xfs"
	}
	return fmt.Sprintf("0x%x", magic)
}
