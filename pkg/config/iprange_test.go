package config

import (
	"net/netip"
	"strings"
	"testing"
)

func TestParseIPRange(t *testing.T) {
	tests := []struct {
		in      string
		want    string // IPRange.String(); "" when an error is expected
		wantErr string
	}{
		{in: "10.0.0.0/24", want: "10.0.0.0-10.0.0.255"},
		{in: "10.0.0.7/32", want: "10.0.0.7-10.0.0.7"},
		{in: "0.0.0.0/0", want: "0.0.0.0-255.255.255.255"},
		{in: "10.0.0.0/25", want: "10.0.0.0-10.0.0.127"},
		{in: "fd00::/120", want: "fd00::-fd00::ff"},
		{in: "fd00::/63", want: "fd00::-fd00::1:ffff:ffff:ffff:ffff"},
		{in: "10.0.0.1-10.0.0.9", want: "10.0.0.1-10.0.0.9"},
		{in: " 10.0.0.1 - 10.0.0.1 ", want: "10.0.0.1-10.0.0.1"},
		{in: "fd00::1-fd00::2", want: "fd00::1-fd00::2"},
		{in: "10.0.0.0/33", wantErr: "not a CIDR"},
		{in: "10.0.0.1/24", wantErr: "host bits"},
		{in: "10.0.0.9-10.0.0.1", wantErr: "is after end"},
		{in: "10.0.0.1-fd00::1", wantErr: "mixes IPv4 and IPv6"},
		{in: "10.0.0.1-", wantErr: "ParseAddr"},
		{in: "10.0.0.1", wantErr: "not a CIDR"},
		{in: "fe80::1%eth0-fe80::2", wantErr: "zone"},
		{in: "::ffff:10.0.0.1-::ffff:10.0.0.9", wantErr: "IPv4-mapped"},
		{in: "::ffff:10.0.0.0/120", wantErr: "IPv4-mapped"},
		// Found by FuzzIPRange: these contain the mapped block without starting in it.
		{in: "::/80", wantErr: "overlaps the IPv4-mapped block"},
		{in: "::/0", wantErr: "overlaps the IPv4-mapped block"},
		{in: "::1-::1:0:0:0", wantErr: "overlaps the IPv4-mapped block"},
		{in: "::1-::fffe:ffff:ffff", want: "::1-::fffe:ffff:ffff"},
		{in: "::1:0:0:0/112", want: "::1:0:0:0-::1:0:0:ffff"},
		{in: "", wantErr: "not a CIDR"},
	}
	for _, tt := range tests {
		r, err := ParseIPRange(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParseIPRange(%q) = %v, %v; want error containing %q", tt.in, r, err, tt.wantErr)
			}
			continue
		}
		if err != nil || r.String() != tt.want {
			t.Errorf("ParseIPRange(%q) = %v, %v; want %s", tt.in, r, err, tt.want)
		}
	}
}

func TestIPAllowed(t *testing.T) {
	lb := LoadBalancer{AllowedIPRanges: []string{"10.0.0.0/30", "192.0.2.10-192.0.2.12", "fd00::/126"}}
	tests := []struct {
		lb   LoadBalancer
		addr string
		want bool
	}{
		{LoadBalancer{}, "203.0.113.1", true},
		{lb, "10.0.0.0", true},
		{lb, "10.0.0.3", true},
		{lb, "10.0.0.4", false},
		{lb, "192.0.2.9", false},
		{lb, "192.0.2.10", true},
		{lb, "192.0.2.12", true},
		{lb, "192.0.2.13", false},
		{lb, "fd00::3", true},
		{lb, "fd00::4", false},
		{lb, "::ffff:10.0.0.1", true},  // mapped form of an allowed IPv4 address
		{lb, "::ffff:10.0.0.9", false}, // mapped form of a disallowed one
		{lb, "::a00:1", false},         // 10.0.0.1's bits as IPv6 are a different address
		{lb, "fd00::1%eth0", false},    // zoned addresses are never load balancer IPs
		{LoadBalancer{AllowedIPRanges: []string{"not-an-ip"}}, "10.0.0.1", false}, // fails closed
	}
	for _, tt := range tests {
		if got := tt.lb.IPAllowed(netip.MustParseAddr(tt.addr)); got != tt.want {
			t.Errorf("%v.IPAllowed(%s) = %v, want %v", tt.lb.AllowedIPRanges, tt.addr, got, tt.want)
		}
	}
	if (LoadBalancer{AllowedIPRanges: []string{"10.0.0.0/8"}}).IPAllowed(netip.Addr{}) {
		t.Error("the zero Addr must not be allowed")
	}
}
