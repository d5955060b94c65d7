package metallb

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Annotation keys as MetalLB v0.16 reads and writes them.
const (
	annPool           = "metallb.io/address-pool"
	annIPs            = "metallb.io/loadBalancerIPs"
	annShared         = "metallb.io/allow-shared-ip"
	annAllocatedFrom  = "metallb.io/ip-allocated-from-pool"
	annPoolDeprecated = "metallb.universe.tf/address-pool"
	annShareDeprecate = "metallb.universe.tf/allow-shared-ip"
)

// Pools shared by the subtests. Only "auto" auto-assigns, so an unannotated Service has
// exactly one possible pool; every other subtest selects its own pool by annotation, which
// keeps the first free address of each pool predictable.
var pools = []struct {
	name, cidr string
	auto       bool
}{
	{"auto", "192.0.2.0/28", true},
	{"reserved", "198.51.100.0/28", false},
	{"legacy", "198.51.100.64/28", false},
	{"share", "203.0.113.32/29", false},
	{"tiny", "203.0.113.10/32", false},
}

// TestMetalLB runs the real controller once and checks MetalLB's semantics against it; a
// cluster has one MetalLB, and two controllers would fight over the same Services.
func TestMetalLB(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	c, err := Start(ctx, env.Management.Kubeconfig, env.Assets.BinDir, Options{LogDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Stop(); err != nil {
			t.Errorf("stopping metallb-controller: %v", err)
		}
	})
	dumpLogOnFailure(t, c)
	t.Logf("metallb-controller ready %s after exec (log %s)", c.StartupLatency().Round(time.Millisecond), c.LogFile())
	for _, p := range pools {
		pool(t, p.name, p.auto, p.cidr)
	}

	t.Run("AutoAssignPool", testAutoAssign)
	t.Run("AddressPoolAnnotation", testAddressPoolAnnotation)
	t.Run("DeprecatedAnnotations", testDeprecatedAnnotations)
	t.Run("RequestedIP", testRequestedIP)
	t.Run("RequestedIPOutsideEveryPool", testRequestedIPOutsidePools)
	t.Run("SharedIP", testSharedIP)
	t.Run("DeleteFreesIP", testDeleteFreesIP)
	t.Run("StopEndsProcess", func(t *testing.T) { testStop(t, c) })
}

func testAutoAssign(t *testing.T) {
	ns := namespace(t, "lb-auto")
	start := time.Now()
	svc := lbService(t, ns, "web", nil)
	ip, _ := waitForIP(t, svc)
	t.Logf("Service create → status IP %s in %s", ip, time.Since(start).Round(time.Millisecond))
	if !mustPrefix("192.0.2.0/28").Contains(ip) {
		t.Fatalf("unannotated Service got %s, want an address of the only auto-assign pool 192.0.2.0/28", ip)
	}
	if got := annotation(t, svc, annAllocatedFrom); got != "auto" {
		t.Fatalf("%s = %q, want auto", annAllocatedFrom, got)
	}
	// A non-auto pool is never used without being asked for: a second Service still lands
	// in "auto".
	ip2, _ := waitForIP(t, lbService(t, ns, "web2", nil))
	if !mustPrefix("192.0.2.0/28").Contains(ip2) || ip2 == ip {
		t.Fatalf("second Service got %s (first %s), want another address of 192.0.2.0/28", ip2, ip)
	}
}

func testAddressPoolAnnotation(t *testing.T) {
	ns := namespace(t, "lb-pool")
	svc := lbService(t, ns, "db", map[string]string{annPool: "reserved"})
	ip, _ := waitForIP(t, svc)
	if !mustPrefix("198.51.100.0/28").Contains(ip) {
		t.Fatalf("Service asking for pool reserved got %s", ip)
	}
	if got := annotation(t, svc, annAllocatedFrom); got != "reserved" {
		t.Fatalf("%s = %q, want reserved", annAllocatedFrom, got)
	}
}

func testDeprecatedAnnotations(t *testing.T) {
	ns := namespace(t, "lb-legacy")
	a := lbService(t, ns, "a", map[string]string{annPoolDeprecated: "legacy", annShareDeprecate: "k"}, 80)
	ipA, _ := waitForIP(t, a)
	if !mustPrefix("198.51.100.64/28").Contains(ipA) {
		t.Fatalf("Service with %s=legacy got %s", annPoolDeprecated, ipA)
	}
	// MetalLB still honours the old keys but warns about each on the Service.
	if msg := waitForEvent(t, a, "deprecatedAnnotation"); !strings.Contains(msg, "metallb.universe.tf/") {
		t.Fatalf("deprecatedAnnotation event message %q does not name the annotation", msg)
	}
	b := lbService(t, ns, "b", map[string]string{annPoolDeprecated: "legacy", annShareDeprecate: "k"}, 443)
	if ipB, _ := waitForIP(t, b); ipB != ipA {
		t.Fatalf("deprecated allow-shared-ip: b got %s, a has %s; want the same address", ipB, ipA)
	}
}

func testRequestedIP(t *testing.T) {
	ns := namespace(t, "lb-ip")
	// A specific address may come from a pool that does not auto-assign.
	svc := lbService(t, ns, "fixed", map[string]string{annIPs: "198.51.100.9"})
	if ip, _ := waitForIP(t, svc); ip.String() != "198.51.100.9" {
		t.Fatalf("requested 198.51.100.9, got %s", ip)
	}
	if got := annotation(t, svc, annAllocatedFrom); got != "reserved" {
		t.Fatalf("%s = %q, want reserved (the pool holding the address)", annAllocatedFrom, got)
	}
	// Asking for an address and a pool that does not hold it is refused.
	bad := lbService(t, ns, "mismatch", map[string]string{annIPs: "198.51.100.10", annPool: "auto"})
	msg := waitForEvent(t, bad, "AllocationFailed")
	if !strings.Contains(msg, "not compatible with requested address pool auto") {
		t.Fatalf("AllocationFailed message %q", msg)
	}
	if ing := currentIngress(t, bad); len(ing) != 0 {
		t.Fatalf("refused Service has status %v", ing)
	}
}

func testRequestedIPOutsidePools(t *testing.T) {
	ns := namespace(t, "lb-outside")
	svc := lbService(t, ns, "rogue", map[string]string{annIPs: "10.99.0.1"})
	// The refusal is an Event; once it is there the controller has processed the Service,
	// so an empty status now is MetalLB's final answer, not a race.
	msg := waitForEvent(t, svc, "AllocationFailed")
	if !strings.Contains(msg, "10.99.0.1") {
		t.Fatalf("AllocationFailed message %q does not name the address", msg)
	}
	if ing := currentIngress(t, svc); len(ing) != 0 {
		t.Fatalf("Service asking for an address outside every pool got %v", ing)
	}
	t.Logf("refusal: %s", msg)
}

func testSharedIP(t *testing.T) {
	ns := namespace(t, "lb-share")
	share := func(key string) map[string]string { return map[string]string{annPool: "share", annShared: key} }
	a := lbService(t, ns, "a", share("k1"), 80)
	ipA, _ := waitForIP(t, a)
	b := lbService(t, ns, "b", share("k1"), 443)
	if ipB, _ := waitForIP(t, b); ipB != ipA {
		t.Fatalf("same key, disjoint ports: b got %s, a has %s; want shared", ipB, ipA)
	}
	other := lbService(t, ns, "other-key", share("k2"), 8080)
	if ip, _ := waitForIP(t, other); ip == ipA {
		t.Fatalf("different sharing key got the shared address %s", ip)
	}
	clash := lbService(t, ns, "port-clash", share("k1"), 80)
	if ip, _ := waitForIP(t, clash); ip == ipA {
		t.Fatalf("same key but the same port 80 got the shared address %s", ip)
	}
	// Explicitly asking for the address with another key is refused.
	steal := lbService(t, ns, "steal", map[string]string{annShared: "k3", annIPs: ipA.String()}, 9090)
	waitForEvent(t, steal, "AllocationFailed")
	if ing := currentIngress(t, steal); len(ing) != 0 {
		t.Fatalf("Service with another sharing key took %v", ing)
	}
}

func testDeleteFreesIP(t *testing.T) {
	ns := namespace(t, "lb-free")
	first := lbService(t, ns, "first", map[string]string{annPool: "tiny"})
	ip, _ := waitForIP(t, first)
	second := lbService(t, ns, "second", map[string]string{annPool: "tiny"})
	waitForEvent(t, second, "AllocationFailed") // the pool's only address is taken
	if err := env.Management.Client.Delete(testCtx(t), first); err != nil {
		t.Fatal(err)
	}
	got, took := waitForIP(t, second)
	if got != ip {
		t.Fatalf("after deleting the holder, the waiting Service got %s, want the freed %s", got, ip)
	}
	t.Logf("freed address %s reassigned %s after delete", got, took.Round(time.Millisecond))
}

func testStop(t *testing.T, c *Controller) {
	pid := c.proc.Pid()
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, 0); err == nil {
		t.Fatalf("metallb-controller pid %d still alive after Stop", pid)
	}
	if err := c.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
}

func TestStartFailsWithoutBinary(t *testing.T) {
	dir := t.TempDir()
	_, err := Start(testCtx(t), env.Management.Kubeconfig, dir, Options{})
	if err == nil || !strings.Contains(err.Error(), filepath.Join(dir, Binary)) {
		t.Fatalf("Start with an empty bin dir: err = %v, want one naming the missing binary", err)
	}
}

// TestStartFailureLeavesNothingRunning makes the real binary exit during start-up (MetalLB
// rejects an unknown log level): Start must return its log and leave no process behind.
func TestStartFailureLeavesNothingRunning(t *testing.T) {
	before := childPIDsRunning(t)
	_, err := Start(testCtx(t), env.Management.Kubeconfig, env.Assets.BinDir,
		Options{LogLevel: "bogus", Namespace: "metallb-broken", LogDir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "failed to initialize logging") {
		t.Fatalf("Start with --log-level=bogus: err = %v, want the controller's own complaint", err)
	}
	if after := childPIDsRunning(t); after > before {
		t.Fatalf("%d metallb-controller processes left running", after-before)
	}
}

// childPIDsRunning counts live metallb-controller processes that are children of this test.
func childPIDsRunning(t *testing.T) int {
	t.Helper()
	n := 0
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		s := string(stat)
		if strings.Contains(s, "("+Binary[:15]+")") && !strings.Contains(s, ") Z ") &&
			strings.Fields(s[strings.LastIndexByte(s, ')')+1:])[1] == itoa(os.Getpid()) {
			n++
		}
	}
	return n
}

func itoa(i int) string { return strconv.Itoa(i) }
