package disks

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"time"

	"k8s.io/klog/v2"
)

// ErrClosed is returned by every operation after Close.
var ErrClosed = errors.New("disk manager closed")

const (
	backingDirName = ".backing"
	ownerFileName  = ".tenantcloud-disks.pid"
	// cleanupTimeout bounds Close and Unplug, which must finish even if a test's context is gone.
	cleanupTimeout = 30 * time.Second
)

type plugKey struct{ namespace, vm, claim string }

// Disk is a disk plugged into a VM.
type Disk struct {
	Namespace, VM, Claim string
	// Device is the loop device, e.g. /dev/loop3.
	Device string
	// Link is the by-id symlink in the VM's device directory, or "" without a serial.
	Link string
	// Serial is what the guest reads (already truncated for virtio); Bus is virtio or scsi.
	Serial, Bus string
}

// Manager owns the backing files, loop devices and links under one root directory. It is safe
// for concurrent use. Close must run at the end of every test that created one.
type Manager struct {
	root string

	mu     sync.Mutex
	closed bool
	plugs  map[plugKey]*Disk
	dirs   map[string]bool // namespace directories created under root
}

// New returns a Manager keeping its files under root (created if missing). It fails with the
// reason from Supported when loop devices cannot be used. Loop devices left behind by a killed
// test process under any earlier root are released first.
func New(root string) (*Manager, error) {
	if err := Supported(); err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("resolving disk root %s: %w", root, err)
	}
	if err := os.MkdirAll(filepath.Join(abs, backingDirName), 0o700); err != nil {
		return nil, fmt.Errorf("creating disk root %s: %w", abs, err)
	}
	if err := os.WriteFile(filepath.Join(abs, ownerFileName), []byte(strconv.Itoa(os.Getpid())), 0o600); err != nil {
		return nil, fmt.Errorf("recording disk root owner: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	if n, err := ReapOrphans(ctx); err != nil {
		klog.ErrorS(err, "Cannot release loop devices of dead test processes")
	} else if n > 0 {
		klog.InfoS("Released loop devices left by a dead test process", "count", n)
	}
	return &Manager{root: abs, plugs: map[plugKey]*Disk{}, dirs: map[string]bool{}}, nil
}

// Root is the directory holding every file the Manager creates.
func (m *Manager) Root() string { return m.root }

// DeviceDir is the VM's /dev/disk/by-id: the directory its disks' links appear in.
func (m *Manager) DeviceDir(namespace, vm string) string {
	return filepath.Join(m.root, namespace, vm, "by-id")
}

// BackingFile is the sparse file holding claim's data; it exists from the first Plug until
// Delete or Close.
func (m *Manager) BackingFile(namespace, claim string) string {
	return filepath.Join(m.root, backingDirName, namespace, claim+".img")
}

// Plug attaches claim's disk to vm and returns the loop device. The backing file is created
// sparse at sizeBytes, or grown to it; it never shrinks. Plugging what is already plugged
// returns the existing device, so callers may retry.
func (m *Manager) Plug(ctx context.Context, namespace, vm, claim string, sizeBytes int64, serial, bus string) (string, error) {
	if sizeBytes <= 0 {
		return "", fmt.Errorf("plugging %s/%s into %s: size %d is not positive", namespace, claim, vm, sizeBytes)
	}
	linkName, err := LinkName(serial, bus)
	if err != nil {
		return "", fmt.Errorf("plugging %s/%s into %s: %w", namespace, claim, vm, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return "", ErrClosed
	}
	key := plugKey{namespace, vm, claim}
	if d, ok := m.plugs[key]; ok {
		return d.Device, nil
	}
	dir := m.DeviceDir(namespace, vm)
	link := ""
	if linkName != "" {
		link = filepath.Join(dir, linkName)
		// Two disks with one serial would fight over one udev link in a real guest; refuse.
		if _, err := os.Lstat(link); err == nil {
			return "", fmt.Errorf("plugging %s/%s into %s: link %s already exists (duplicate serial %q)", namespace, claim, vm, link, serial)
		}
	}
	file := m.BackingFile(namespace, claim)
	if err := growFile(file, sizeBytes); err != nil {
		return "", fmt.Errorf("plugging %s/%s into %s: %w", namespace, claim, vm, err)
	}
	dev, err := attach(ctx, file)
	if err != nil {
		return "", fmt.Errorf("plugging %s/%s into %s: %w", namespace, claim, vm, err)
	}
	if link != "" {
		if err := m.mkdirLocked(namespace, dir); err == nil {
			err = os.Symlink(dev, link)
		}
		if err != nil {
			_ = detach(context.WithoutCancel(ctx), dev)
			return "", fmt.Errorf("plugging %s/%s into %s: linking %s: %w", namespace, claim, vm, link, err)
		}
	}
	m.plugs[key] = &Disk{Namespace: namespace, VM: vm, Claim: claim, Device: dev, Link: link, Serial: GuestSerial(serial, bus), Bus: bus}
	klog.V(2).InfoS("Plugged simulated disk", "namespace", namespace, "vm", vm, "claim", claim, "device", dev, "link", link, "size", sizeBytes)
	return dev, nil
}

func (m *Manager) mkdirLocked(namespace, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	m.dirs[namespace] = true
	return nil
}

// growFile creates file sparse at size or extends it to size.
func growFile(file string, size int64) error {
	if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
		return fmt.Errorf("creating backing directory: %w", err)
	}
	f, err := os.OpenFile(file, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("opening backing file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("stat backing file: %w", err)
	}
	if fi.Size() >= size {
		return nil
	}
	if err := f.Truncate(size); err != nil {
		return fmt.Errorf("growing backing file %s to %d: %w", file, size, err)
	}
	return nil
}

// Unplug removes claim's disk from vm: the link goes, then the loop device. The backing file
// and its data stay. Unplugging what is not plugged does nothing.
func (m *Manager) Unplug(namespace, vm, claim string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.unplugLocked(plugKey{namespace, vm, claim})
}

func (m *Manager) unplugLocked(key plugKey) error {
	d, ok := m.plugs[key]
	if !ok {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	if d.Link != "" {
		if err := os.Remove(d.Link); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("unplugging %s/%s from %s: %w", key.namespace, key.claim, key.vm, err)
		}
	}
	if err := detach(ctx, d.Device); err != nil {
		return fmt.Errorf("unplugging %s/%s from %s: %w", key.namespace, key.claim, key.vm, err)
	}
	delete(m.plugs, key)
	klog.V(2).InfoS("Unplugged simulated disk", "namespace", key.namespace, "vm", key.vm, "claim", key.claim, "device", d.Device)
	return nil
}

// UnplugVM removes every disk plugged into vm, as when its VMI goes away.
func (m *Manager) UnplugVM(namespace, vm string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	var errs []error
	for key := range m.plugs {
		if key.namespace == namespace && key.vm == vm {
			errs = append(errs, m.unplugLocked(key))
		}
	}
	return errors.Join(errs...)
}

// Disks lists what is plugged into vm, ordered by claim.
func (m *Manager) Disks(namespace, vm string) []Disk {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Disk
	for key, d := range m.plugs {
		if key.namespace == namespace && key.vm == vm {
			out = append(out, *d)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Claim < out[j].Claim })
	return out
}

// Resize grows claim's backing file to newSize and makes every loop device on it re-read its
// capacity, as a guest sees after a volume expansion. It never shrinks, and does nothing for a
// claim that was never plugged (the next Plug creates the file at the new size).
func (m *Manager) Resize(namespace, claim string, newSize int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	file := m.BackingFile(namespace, claim)
	fi, err := os.Stat(file)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("resizing %s/%s: %w", namespace, claim, err)
	}
	if newSize <= fi.Size() {
		return nil
	}
	if err := os.Truncate(file, newSize); err != nil {
		return fmt.Errorf("resizing %s/%s to %d: %w", namespace, claim, newSize, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	for key, d := range m.plugs {
		if key.namespace == namespace && key.claim == claim {
			if err := refreshCapacity(ctx, d.Device); err != nil {
				return fmt.Errorf("resizing %s/%s: %w", namespace, claim, err)
			}
		}
	}
	klog.V(2).InfoS("Resized simulated disk", "namespace", namespace, "claim", claim, "size", newSize)
	return nil
}

// Delete drops claim's data, as when its PVC is deleted. Still-plugged copies are unplugged
// first (a real cluster's pvc-protection would have prevented that; the sim says so in the log).
func (m *Manager) Delete(namespace, claim string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	var errs []error
	for key := range m.plugs {
		if key.namespace == namespace && key.claim == claim {
			klog.InfoS("Deleting a claim that is still plugged; unplugging it", "namespace", namespace, "claim", claim, "vm", key.vm)
			errs = append(errs, m.unplugLocked(key))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if err := os.Remove(m.BackingFile(namespace, claim)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("deleting %s/%s: %w", namespace, claim, err)
	}
	return nil
}

// Close unplugs everything, releases any loop device still backed by one of this Manager's
// files, and removes the files. It is idempotent, so it can sit in t.Cleanup next to an
// explicit call.
func (m *Manager) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil
	}
	m.closed = true
	var errs []error
	for key := range m.plugs {
		errs = append(errs, m.unplugLocked(key))
	}
	// A device attached by a Plug that failed half-way is not in m.plugs; find it by file.
	ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
	defer cancel()
	backing := filepath.Join(m.root, backingDirName) + string(filepath.Separator)
	if loops, err := listLoops(ctx); err != nil {
		errs = append(errs, err)
	} else {
		for _, l := range loops {
			if hasPathPrefix(l.BackFile, backing) {
				errs = append(errs, detach(ctx, l.Name))
			}
		}
	}
	for ns := range m.dirs {
		errs = append(errs, os.RemoveAll(filepath.Join(m.root, ns)))
	}
	errs = append(errs, os.RemoveAll(filepath.Join(m.root, backingDirName)))
	if err := os.Remove(filepath.Join(m.root, ownerFileName)); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("closing disk manager at %s: %w", m.root, err)
	}
	return nil
}

// SnapshotFile is where a snapshot of a claim keeps the claim's data as it was when cut.
func (m *Manager) SnapshotFile(namespace, snapshot string) string {
	return filepath.Join(m.root, backingDirName, namespace, "snapshots", snapshot+".img")
}

// Copy copies the data in src (a BackingFile or a SnapshotFile) to dst, keeping it sparse, as a
// storage backend's snapshot or clone does. A src never written (no file) leaves dst absent,
// so the copy starts empty as its source was; an existing dst is kept (a retried copy must not
// overwrite what a guest wrote since).
func (m *Manager) Copy(ctx context.Context, src, dst string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	if _, err := os.Stat(dst); err == nil {
		return nil
	}
	if _, err := os.Stat(src); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	tmp := dst + ".part"
	if out, err := exec.CommandContext(ctx, "cp", "--sparse=always", src, tmp).CombinedOutput(); err != nil {
		return fmt.Errorf("copying %s to %s: %w: %s", src, dst, err, out)
	}
	if err := os.Rename(tmp, dst); err != nil {
		return fmt.Errorf("copying %s to %s: %w", src, dst, err)
	}
	klog.V(2).InfoS("Copied simulated disk data", "from", src, "to", dst)
	return nil
}

// DeleteSnapshot drops a snapshot's data.
func (m *Manager) DeleteSnapshot(namespace, snapshot string) error {
	if err := os.Remove(m.SnapshotFile(namespace, snapshot)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("deleting snapshot %s/%s: %w", namespace, snapshot, err)
	}
	return nil
}
