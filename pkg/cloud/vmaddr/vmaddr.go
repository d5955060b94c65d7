// Package vmaddr extracts the addresses of a KubeVirt VMI, shared by the node (InstancesV2)
// and load-balancer (ETP=Local endpoints) code so both agree on what "the VM's IP" is.
package vmaddr

import (
	"net/netip"
	"slices"

	kubevirtv1 "kubevirt.io/api/core/v1"
)

// DefaultInterface is the interface name CAPK and KubeVirt give the pod network.
const DefaultInterface = "default"

// Addresses returns the VMI's usable addresses: those of the pod-network interface first
// ("default", else the first interface that has any), then the other interfaces', without
// duplicates, link-local, loopback, unspecified or unparsable entries. IPv4-mapped IPv6 is
// reported as IPv4.
func Addresses(vmi *kubevirtv1.VirtualMachineInstance) []netip.Addr {
	ifaces := slices.Clone(vmi.Status.Interfaces)
	primary := slices.IndexFunc(ifaces, func(i kubevirtv1.VirtualMachineInstanceNetworkInterface) bool {
		return i.Name == DefaultInterface
	})
	if primary > 0 {
		ifaces[0], ifaces[primary] = ifaces[primary], ifaces[0]
	}
	var out []netip.Addr
	for _, iface := range ifaces {
		raw := iface.IPs
		if len(raw) == 0 && iface.IP != "" {
			raw = []string{iface.IP}
		}
		for _, s := range raw {
			a, err := netip.ParseAddr(s)
			if err != nil || a.Zone() != "" {
				continue
			}
			a = a.Unmap()
			if a.IsLinkLocalUnicast() || a.IsLoopback() || a.IsUnspecified() || a.IsMulticast() {
				continue
			}
			if !slices.Contains(out, a) {
				out = append(out, a)
			}
		}
	}
	return out
}

// Intersect keeps the addresses of addrs that also appear in allowed, in addrs' order.
func Intersect(addrs []netip.Addr, allowed []string) []netip.Addr {
	var out []netip.Addr
	for _, a := range addrs {
		for _, s := range allowed {
			if b, err := netip.ParseAddr(s); err == nil && b.Unmap() == a {
				out = append(out, a)
				break
			}
		}
	}
	return out
}
