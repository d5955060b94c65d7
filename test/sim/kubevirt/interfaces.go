package kubevirt

import (
	"fmt"
	"hash/fnv"
	"net/netip"

	kubevirtv1 "kubevirt.io/api/core/v1"
)

// interfaceStatuses is what virt-handler reports for a running VMI: one entry per spec
// interface, in order (eth0, eth1, ... inside the guest). Only interfaces on the pod network
// carry addresses; they are the launcher pod's, as with KubeVirt's bridge and masquerade
// bindings on the pod network.
func interfaceStatuses(vmi *kubevirtv1.VirtualMachineInstance, addrs []netip.Addr) []kubevirtv1.VirtualMachineInstanceNetworkInterface {
	pod := map[string]bool{}
	for _, n := range vmi.Spec.Networks {
		pod[n.Name] = n.Pod != nil
	}
	var out []kubevirtv1.VirtualMachineInstanceNetworkInterface
	for i, iface := range vmi.Spec.Domain.Devices.Interfaces {
		st := kubevirtv1.VirtualMachineInstanceNetworkInterface{
			Name:          iface.Name,
			MAC:           macAddress(iface, vmi),
			InterfaceName: fmt.Sprintf("eth%d", i),
			InfoSource:    "domain, guest-agent",
			QueueCount:    1,
			LinkState:     "up",
		}
		if pod[iface.Name] && len(addrs) > 0 {
			st.PodInterfaceName = "eth0"
			st.IP = addrs[0].String()
			for _, a := range addrs {
				st.IPs = append(st.IPs, a.String())
			}
		}
		out = append(out, st)
	}
	return out
}

// macAddress is the interface's configured MAC or a stable locally administered one.
func macAddress(iface kubevirtv1.Interface, vmi *kubevirtv1.VirtualMachineInstance) string {
	if iface.MacAddress != "" {
		return iface.MacAddress
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(string(vmi.UID) + "/" + iface.Name))
	b := h.Sum32()
	return fmt.Sprintf("02:5a:%02x:%02x:%02x:%02x", byte(b>>24), byte(b>>16), byte(b>>8), byte(b))
}

// guestOSInfo is what the qemu guest agent of the simulated guests reports.
func guestOSInfo() kubevirtv1.VirtualMachineInstanceGuestOSInfo {
	return kubevirtv1.VirtualMachineInstanceGuestOSInfo{
		Name: "Ubuntu", ID: "ubuntu", PrettyName: "Ubuntu 24.04 LTS", Version: "24.04 LTS (Noble Numbat)",
		VersionID: "24.04", KernelRelease: "6.8.0-60-generic", Machine: "x86_64",
	}
}
