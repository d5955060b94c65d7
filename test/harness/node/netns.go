package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
	"k8s.io/klog/v2"
)

// run runs a host command and returns its error with its output.
func run(ctx context.Context, name string, args ...string) error {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// setupNetwork creates the node's network namespace: loopback up, the node address on a veth
// whose peer stays inside (an interface of its own for the kubelet to find the address on,
// with nowhere to send to), route_localnet so pods' DNAT to the loopback apiserver endpoint
// is delivered, and bridged traffic through iptables (br_netfilter, as kubeadm requires) so a
// pod's reply to another pod on the node that reached it through a Service ClusterIP is
// un-DNATed on its way back across the bridge.
func setupNetwork(ctx context.Context, netns, nodeIP string) error {
	if err := run(ctx, "ip", "netns", "add", netns); err != nil {
		return err
	}
	steps := [][]string{
		{"ip", "-n", netns, "link", "set", "lo", "up"},
		{"ip", "-n", netns, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0-peer"},
		{"ip", "-n", netns, "addr", "add", nodeIP + "/32", "dev", "eth0"},
		{"ip", "-n", netns, "link", "set", "eth0", "up"},
		{"ip", "-n", netns, "link", "set", "eth0-peer", "up"},
		// `ip netns exec` runs sysctl with /proc/sys/net of the node's namespace.
		{"ip", "netns", "exec", netns, "sysctl", "-q", "-w", "net.ipv4.conf.all.route_localnet=1"},
		{"ip", "netns", "exec", netns, "sysctl", "-q", "-w", "net.bridge.bridge-nf-call-iptables=1"},
	}
	for _, s := range steps {
		if err := run(ctx, s[0], s[1:]...); err != nil {
			return fmt.Errorf("setting up network namespace %s: %w", netns, err)
		}
	}
	return nil
}

// removeNetwork deletes the namespace; its interfaces, bridge and iptables rules go with it
// once no process holds it.
func removeNetwork(netns string) error {
	if _, err := os.Stat(filepath.Join("/run/netns", netns)); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return run(context.Background(), "ip", "netns", "delete", netns)
}

// setupMounts creates the node's mount namespace as a slave of the host's (it sees host mounts
// appear, the host never sees its mounts), held by a bind mount of its ns file, and inside it
// puts the VM's device directory at /dev/disk/by-id, the node's kubelet directory at
// /var/lib/kubelet (shared, so a csi-node pod's Bidirectional mounts reach the kubelet) and a
// tmpfs at the kubelet's fixed /var/log/containers.
func setupMounts(ctx context.Context, mntFile, deviceDir, kubeletHostDir string) error {
	nsDir := filepath.Dir(mntFile)
	if err := os.MkdirAll(nsDir, 0o755); err != nil {
		return err
	}
	// unshare can only bind a mount namespace file on a private mount.
	steps := [][]string{
		{"mount", "--bind", nsDir, nsDir},
		{"mount", "--make-private", nsDir},
		{"touch", mntFile},
		{"unshare", "--mount=" + mntFile, "--propagation", "slave", "true"},
	}
	for _, s := range steps {
		if err := run(ctx, s[0], s[1:]...); err != nil {
			return fmt.Errorf("creating mount namespace %s: %w", mntFile, err)
		}
	}
	// The mount points exist on the host (empty directories; /dev is a devtmpfs shared with
	// it); only the node's namespace mounts over them.
	for _, d := range []string{"/dev/disk/by-id", "/var/log/containers", kubeletDir, deviceDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("creating %s: %w", d, err)
		}
	}
	script := fmt.Sprintf("mount --bind %q /dev/disk/by-id && mount --bind %q %s && mount --make-rshared %s && mount -t tmpfs -o size=16m tmpfs /var/log/containers",
		deviceDir, kubeletHostDir, kubeletDir, kubeletDir)
	if err := run(ctx, "nsenter", "--mount="+mntFile, "--", "sh", "-c", script); err != nil {
		return fmt.Errorf("preparing the node's mounts: %w", err)
	}
	return nil
}

// removeMounts drops the namespace's last reference; every mount inside it goes with it once
// no process runs in it.
func removeMounts(mntFile string) error {
	var errs []error
	for _, target := range []string{mntFile, filepath.Dir(mntFile)} {
		if err := unix.Unmount(target, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("unmounting %s: %w", target, err))
		}
	}
	return errors.Join(errs...)
}

// listenInNetNS opens a TCP listener on addr inside the network namespace at nsPath. The
// socket keeps its namespace.
func listenInNetNS(nsPath, addr string) (net.Listener, error) {
	var l net.Listener
	err := inNetNS(nsPath, func() (err error) {
		l, err = net.Listen("tcp", addr)
		return err
	})
	if err != nil {
		if l != nil {
			_ = l.Close()
		}
		return nil, fmt.Errorf("listening on %s in %s: %w", addr, nsPath, err)
	}
	return l, nil
}

// inNetNS runs open (which opens sockets: they keep the namespace) on an OS thread inside the
// network namespace at nsPath. The thread is put back into its own namespace before it is
// unlocked: a thread ended by the Go runtime (what happens to one still locked when its
// goroutine returns) would SIGKILL every child started from it with a parent-death signal —
// the node daemons of harness.StartBinary.
func inNetNS(nsPath string, open func() error) error {
	ch := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		own, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
		if err != nil {
			runtime.UnlockOSThread()
			ch <- fmt.Errorf("opening this thread's network namespace: %w", err)
			return
		}
		defer own.Close()
		target, err := os.Open(nsPath)
		if err != nil {
			runtime.UnlockOSThread()
			ch <- fmt.Errorf("opening %s: %w", nsPath, err)
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			ch <- fmt.Errorf("entering %s: %w", nsPath, err)
			return
		}
		oerr := open()
		if err := unix.Setns(int(own.Fd()), unix.CLONE_NEWNET); err != nil {
			// The thread is stuck in the node's namespace: park it for good rather than
			// let it run other goroutines there or end (see above). What open made stays
			// open; the node's Stop closes it.
			ch <- errors.Join(oerr, fmt.Errorf("returning from %s: %w", nsPath, err))
			select {}
		}
		runtime.UnlockOSThread()
		ch <- oerr
	}()
	return <-ch
}

// forwarder serves host loopback addresses (the tenant apiserver, a registry) at the same
// address inside a node's network namespace.
type forwarder struct {
	listeners []net.Listener
	wg        sync.WaitGroup
	mu        sync.Mutex
	conns     map[net.Conn]bool
}

// forward serves listen inside the namespace at nsPath by dialing addr on the host.
func (f *forwarder) forward(nsPath, listen, addr string) error {
	l, err := listenInNetNS(nsPath, listen)
	if err != nil {
		return err
	}
	f.listeners = append(f.listeners, l)
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		for {
			in, err := l.Accept()
			if err != nil {
				return
			}
			f.wg.Add(1)
			go func() {
				defer f.wg.Done()
				f.pipe(in, addr)
			}()
		}
	}()
	return nil
}

func (f *forwarder) track(c net.Conn, on bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.conns == nil {
		f.conns = map[net.Conn]bool{}
	}
	if on {
		f.conns[c] = true
	} else {
		delete(f.conns, c)
	}
}

func (f *forwarder) pipe(in net.Conn, addr string) {
	defer in.Close()
	f.track(in, true)
	defer f.track(in, false)
	out, err := net.Dial("tcp", addr)
	if err != nil {
		klog.V(2).InfoS("Node forwarder cannot reach host address", "addr", addr, "err", err)
		return
	}
	defer out.Close()
	f.track(out, true)
	defer f.track(out, false)
	done := make(chan struct{}, 2)
	cp := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		if tc, ok := dst.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
		done <- struct{}{}
	}
	go cp(out, in)
	go cp(in, out)
	<-done
	<-done
}

// close stops listening, cuts open connections and waits for every goroutine.
func (f *forwarder) close() {
	for _, l := range f.listeners {
		_ = l.Close()
	}
	f.mu.Lock()
	for c := range f.conns {
		_ = c.Close()
	}
	f.mu.Unlock()
	f.wg.Wait()
}
