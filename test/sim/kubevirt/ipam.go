package kubevirt

import (
	"fmt"
	"net/netip"
	"slices"
	"sync"

	corev1 "k8s.io/api/core/v1"
)

// pool hands out addresses of one prefix next-fit, skipping the network address, the first
// host (the pod network's gateway) and, for IPv4, the broadcast address. Next-fit rather than
// lowest-free means a released address is not handed out again at once, as with real IPAMs,
// so a test that caches a stale VM address notices.
type pool struct {
	prefix netip.Prefix
	first  netip.Addr // first assignable address
	next   netip.Addr
	used   map[netip.Addr]bool
}

func newPool(cidr string) (*pool, error) {
	p, err := netip.ParsePrefix(cidr)
	if err != nil {
		return nil, fmt.Errorf("parsing address pool %q: %w", cidr, err)
	}
	p = p.Masked()
	first := p.Addr().Next().Next()
	if !p.Contains(first) {
		return nil, fmt.Errorf("address pool %s is too small", cidr)
	}
	return &pool{prefix: p, first: first, next: first, used: map[netip.Addr]bool{}}, nil
}

// assignable reports whether a is an address this pool may hand out.
func (p *pool) assignable(a netip.Addr) bool {
	if !p.prefix.Contains(a) || a.Less(p.first) {
		return false
	}
	// The IPv4 broadcast address is the one whose successor leaves the prefix.
	return !(a.Is4() && !p.prefix.Contains(a.Next()))
}

func (p *pool) allocate() (netip.Addr, error) {
	// Scanning len(used)+1 distinct assignable addresses finds a free one unless the pool is
	// full, in which case the scan stops after the pool's size.
	scan := len(p.used) + 1
	if size := p.size(); size < scan {
		scan = size
	}
	a := p.next
	for range scan {
		if !p.assignable(a) {
			a = p.first
		}
		if !p.used[a] {
			p.used[a] = true
			p.next = a.Next()
			return a, nil
		}
		a = a.Next()
	}
	return netip.Addr{}, fmt.Errorf("address pool %s exhausted", p.prefix)
}

// size is the number of assignable addresses, capped for huge IPv6 prefixes.
func (p *pool) size() int {
	hostBits := p.prefix.Addr().BitLen() - p.prefix.Bits()
	if hostBits >= 30 {
		return 1 << 30
	}
	n := 1<<hostBits - 2
	if p.prefix.Addr().Is4() {
		n--
	}
	return max(n, 0)
}

// allocator gives every running VMI one address of each family of the pod network, in the
// network's family order (primary first, as a dual-stack CNI lists pod IPs), unique across
// the simulator, keyed by owner (the VMI UID: a restarted VMI is a new object with new
// addresses, as with a new virt-launcher pod on a real cluster).
type allocator struct {
	mu     sync.Mutex
	v4, v6 *pool
	order  []*pool // the pools of the network's families, primary first
	owned  map[string][]netip.Addr
}

// newAllocator makes an allocator over prefixes v4 and v6 handing out the families fams in
// that order; nil means dual-stack, IPv4 first.
func newAllocator(v4, v6 string, fams []corev1.IPFamily) (*allocator, error) {
	p4, err := newPool(v4)
	if err != nil {
		return nil, err
	}
	if !p4.prefix.Addr().Is4() {
		return nil, fmt.Errorf("IPv4 pool %s is not IPv4", v4)
	}
	p6, err := newPool(v6)
	if err != nil {
		return nil, err
	}
	if !p6.prefix.Addr().Is6() {
		return nil, fmt.Errorf("IPv6 pool %s is not IPv6", v6)
	}
	if len(fams) == 0 {
		fams = []corev1.IPFamily{corev1.IPv4Protocol, corev1.IPv6Protocol}
	}
	a := &allocator{v4: p4, v6: p6, owned: map[string][]netip.Addr{}}
	for _, f := range fams {
		p := map[corev1.IPFamily]*pool{corev1.IPv4Protocol: p4, corev1.IPv6Protocol: p6}[f]
		if p == nil || slices.Contains(a.order, p) || len(fams) > 2 {
			return nil, fmt.Errorf("IP families %v: want IPv4, IPv6 or both, each once", fams)
		}
		a.order = append(a.order, p)
	}
	return a, nil
}

// Allocate returns owner's addresses, one per family in the network's order, allocating them
// on first call. It is idempotent so reconcilers can call it on every pass.
func (a *allocator) Allocate(owner string) ([]netip.Addr, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if got, ok := a.owned[owner]; ok && len(got) == len(a.order) {
		return got, nil
	}
	var got []netip.Addr
	for _, p := range a.order {
		addr, err := p.allocate()
		if err != nil {
			for _, g := range got {
				delete(a.v4.used, g)
				delete(a.v6.used, g)
			}
			return nil, err
		}
		got = append(got, addr)
	}
	a.owned[owner] = got
	return got, nil
}

// Reserve records addresses an owner already holds (found on objects when the simulator
// starts), so they are not handed out twice. Addresses outside the pools are ignored.
func (a *allocator) Reserve(owner string, addrs []netip.Addr) {
	a.mu.Lock()
	defer a.mu.Unlock()
	var kept []netip.Addr
	for _, addr := range addrs {
		for _, p := range []*pool{a.v4, a.v6} {
			if p.assignable(addr) && !p.used[addr] {
				p.used[addr] = true
				kept = append(kept, addr)
			}
		}
	}
	if len(kept) > 0 {
		a.owned[owner] = kept
	}
}

// Release frees owner's addresses; releasing an unknown owner is a no-op.
func (a *allocator) Release(owner string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, addr := range a.owned[owner] {
		delete(a.v4.used, addr)
		delete(a.v6.used, addr)
	}
	delete(a.owned, owner)
}
