package config

import (
	"fmt"
	"net/netip"
	"strings"
)

// IPRange is an inclusive range of addresses of one family.
type IPRange struct {
	First, Last netip.Addr
}

// ParseIPRange parses a CIDR ("10.0.0.0/24", "fd00::/64") or an inclusive range
// ("10.0.0.10-10.0.0.20"), the two forms MetalLB accepts in an IPAddressPool.
func ParseIPRange(s string) (IPRange, error) {
	if first, last, ok := strings.Cut(s, "-"); ok {
		return parseRange(strings.TrimSpace(first), strings.TrimSpace(last))
	}
	p, err := netip.ParsePrefix(strings.TrimSpace(s))
	if err != nil {
		return IPRange{}, fmt.Errorf("not a CIDR or first-last range: %w", err)
	}
	if p.Addr().Is4In6() {
		return IPRange{}, fmt.Errorf("IPv4-mapped IPv6 prefix %s is ambiguous; write it as IPv4", p)
	}
	// "10.0.0.5/24" usually means the operator meant one address or mistyped the network;
	// guessing either way could grant the tenant addresses nobody intended.
	if p != p.Masked() {
		return IPRange{}, fmt.Errorf("%s has host bits set; the network is %s", p, p.Masked())
	}
	return checkMapped(IPRange{First: p.Addr(), Last: lastAddr(p)}, s)
}

// mappedBlock is ::ffff:0:0/96, the IPv4-mapped IPv6 addresses.
var mappedBlock = netip.MustParsePrefix("::ffff:0:0/96")

// checkMapped refuses an IPv6 range that reaches into the IPv4-mapped block: tenant addresses
// in that block are checked as the IPv4 addresses they stand for (as MetalLB treats them), so
// that part of the grant could never match, and the range would not print back (String) in a
// form ParseIPRange accepts.
func checkMapped(r IPRange, s string) (IPRange, error) {
	first, last := mappedBlock.Addr(), lastAddr(mappedBlock)
	if r.First.Is6() && !r.Last.Less(first) && !last.Less(r.First) {
		return IPRange{}, fmt.Errorf("%s overlaps the IPv4-mapped block %s, which is ambiguous; grant IPv4 addresses as IPv4", strings.TrimSpace(s), mappedBlock)
	}
	return r, nil
}

func parseRange(first, last string) (IPRange, error) {
	a, err := parseAddr(first)
	if err != nil {
		return IPRange{}, err
	}
	b, err := parseAddr(last)
	if err != nil {
		return IPRange{}, err
	}
	if a.Is4() != b.Is4() {
		return IPRange{}, fmt.Errorf("range %s-%s mixes IPv4 and IPv6", a, b)
	}
	if b.Less(a) {
		return IPRange{}, fmt.Errorf("range start %s is after end %s", a, b)
	}
	return checkMapped(IPRange{First: a, Last: b}, first+"-"+last)
}

func parseAddr(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, err
	}
	if a.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("address %s must not have a zone", a)
	}
	if a.Is4In6() {
		return netip.Addr{}, fmt.Errorf("IPv4-mapped IPv6 address %s is ambiguous; write it as IPv4", a)
	}
	return a, nil
}

// lastAddr returns the highest address of a masked prefix.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// Contains reports whether a is within r. Addresses of the other family never match.
func (r IPRange) Contains(a netip.Addr) bool {
	if !r.First.IsValid() || a.Is4() != r.First.Is4() || a.Zone() != "" {
		return false
	}
	return !a.Less(r.First) && !r.Last.Less(a)
}

// String formats r the way ParseIPRange accepts it.
func (r IPRange) String() string {
	return r.First.String() + "-" + r.Last.String()
}
