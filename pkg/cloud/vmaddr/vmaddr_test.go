package vmaddr

import (
	"net/netip"
	"slices"
	"testing"

	kubevirtv1 "kubevirt.io/api/core/v1"
)

func vmi(ifaces ...kubevirtv1.VirtualMachineInstanceNetworkInterface) *kubevirtv1.VirtualMachineInstance {
	return &kubevirtv1.VirtualMachineInstance{Status: kubevirtv1.VirtualMachineInstanceStatus{Interfaces: ifaces}}
}

func TestAddresses(t *testing.T) {
	tests := []struct {
		name string
		vmi  *kubevirtv1.VirtualMachineInstance
		want []string
	}{
		{"none", vmi(), nil},
		{"dual stack default", vmi(kubevirtv1.VirtualMachineInstanceNetworkInterface{Name: "default", IP: "10.0.0.5", IPs: []string{"10.0.0.5", "fd00::5"}}), []string{"10.0.0.5", "fd00::5"}},
		{"legacy IP only", vmi(kubevirtv1.VirtualMachineInstanceNetworkInterface{Name: "default", IP: "10.0.0.5"}), []string{"10.0.0.5"}},
		{"default first", vmi(
			kubevirtv1.VirtualMachineInstanceNetworkInterface{Name: "secondary", IPs: []string{"192.168.1.2"}},
			kubevirtv1.VirtualMachineInstanceNetworkInterface{Name: "default", IPs: []string{"10.0.0.5"}},
		), []string{"10.0.0.5", "192.168.1.2"}},
		{"junk dropped", vmi(kubevirtv1.VirtualMachineInstanceNetworkInterface{Name: "default",
			IPs: []string{"fe80::1", "127.0.0.1", "::", "not-an-ip", "fe80::1%eth0", "224.0.0.1", "10.0.0.5", "10.0.0.5", "::ffff:10.0.0.6"}}),
			[]string{"10.0.0.5", "10.0.0.6"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, a := range Addresses(tt.vmi) {
				got = append(got, a.String())
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("Addresses = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestIntersect(t *testing.T) {
	addrs := []netip.Addr{netip.MustParseAddr("10.0.0.5"), netip.MustParseAddr("fd00::5"), netip.MustParseAddr("10.9.9.9")}
	got := Intersect(addrs, []string{"fd00::5", "10.0.0.5", "10.1.1.1"})
	if len(got) != 2 || got[0].String() != "10.0.0.5" || got[1].String() != "fd00::5" {
		t.Fatalf("Intersect = %v", got)
	}
}
