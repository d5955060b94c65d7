package kubevirt

import (
	"errors"
	"strings"
	"testing"

	kubevirtv1 "kubevirt.io/api/core/v1"

	"github.com/tenantcloud/tenantcloud/test/sim/featuregate"
)

func hotplugDV(name string) kubevirtv1.Volume {
	return kubevirtv1.Volume{Name: name, VolumeSource: kubevirtv1.VolumeSource{
		DataVolume: &kubevirtv1.DataVolumeSource{Name: name, Hotpluggable: true}}}
}

func scsiDisk(name string, bus kubevirtv1.DiskBus) kubevirtv1.Disk {
	return kubevirtv1.Disk{Name: name, Serial: name, DiskDevice: kubevirtv1.DiskDevice{Disk: &kubevirtv1.DiskTarget{Bus: bus}}}
}

func names[T any](items []T, name func(T) string) []string {
	out := make([]string, 0, len(items))
	for _, i := range items {
		out = append(out, name(i))
	}
	return out
}

func volumeNames(vs []kubevirtv1.Volume) string {
	return strings.Join(names(vs, func(v kubevirtv1.Volume) string { return v.Name }), ",")
}

func diskNames(ds []kubevirtv1.Disk) string {
	return strings.Join(names(ds, func(d kubevirtv1.Disk) string { return d.Name }), ",")
}

// TestDeclarativeVMISpec: the VMI follows the template's hotpluggable volumes only; other
// VMI volumes stay, a volume still reporting status (detaching) is not re-added yet, and a
// changed hotpluggable volume is dropped first (re-added on a later pass).
func TestDeclarativeVMISpec(t *testing.T) {
	boot := kubevirtv1.Volume{Name: "rootdisk", VolumeSource: kubevirtv1.VolumeSource{ContainerDisk: &kubevirtv1.ContainerDiskSource{Image: "x"}}}
	tmpl := func(vols ...kubevirtv1.Volume) *kubevirtv1.VirtualMachineInstanceSpec {
		s := &kubevirtv1.VirtualMachineInstanceSpec{Volumes: append([]kubevirtv1.Volume{boot}, vols...)}
		s.Domain.Devices.Disks = []kubevirtv1.Disk{{Name: "rootdisk"}}
		for _, v := range vols {
			s.Domain.Devices.Disks = append(s.Domain.Devices.Disks, scsiDisk(v.Name, kubevirtv1.DiskBusSCSI))
		}
		return s
	}
	vmiOf := func(spec *kubevirtv1.VirtualMachineInstanceSpec, status ...string) *kubevirtv1.VirtualMachineInstance {
		vmi := &kubevirtv1.VirtualMachineInstance{Spec: *spec.DeepCopy()}
		for _, s := range status {
			vmi.Status.VolumeStatus = append(vmi.Status.VolumeStatus, kubevirtv1.VolumeStatus{Name: s})
		}
		return vmi
	}
	changed := hotplugDV("b")
	changed.DataVolume.Name = "b-other"
	tests := []struct {
		name         string
		tmpl         *kubevirtv1.VirtualMachineInstanceSpec
		vmi          *kubevirtv1.VirtualMachineInstance
		vols, disksW string
	}{
		{"added", tmpl(hotplugDV("a")), vmiOf(tmpl()), "rootdisk,a", "rootdisk,a"},
		{"removed", tmpl(), vmiOf(tmpl(hotplugDV("a"))), "rootdisk", "rootdisk"},
		{"still detaching: not re-added", tmpl(hotplugDV("a")), vmiOf(tmpl(), "a"), "rootdisk", "rootdisk"},
		{"steady", tmpl(hotplugDV("a")), vmiOf(tmpl(hotplugDV("a")), "a"), "rootdisk,a", "rootdisk,a"},
		{"changed: dropped first", tmpl(changed), vmiOf(tmpl(hotplugDV("b")), "b"), "rootdisk", "rootdisk"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vols, disks := declarativeVMISpec(tt.tmpl, tt.vmi)
			if got := volumeNames(vols); got != tt.vols {
				t.Errorf("volumes %s, want %s", got, tt.vols)
			}
			if got := diskNames(disks); got != tt.disksW {
				t.Errorf("disks %s, want %s", got, tt.disksW)
			}
		})
	}
}

// editTemplate changes the VM's template, retrying on conflicts with the simulator.
func (s *sim) editTemplate(name string, edit func(*kubevirtv1.VirtualMachineInstanceSpec)) {
	s.t.Helper()
	s.eventually("template of "+name+" edited", func() (bool, error) {
		vm := &kubevirtv1.VirtualMachine{}
		if err := s.get(name, vm); err != nil {
			return false, err
		}
		edit(&vm.Spec.Template.Spec)
		return true, s.c.Update(s.ctx, vm)
	})
}

func (s *sim) vmiHas(name, volume string) bool {
	vmi := s.vmi(name)
	for _, v := range vmi.Spec.Volumes {
		if v.Name == volume {
			return true
		}
	}
	return false
}

// TestDeclarativeHotplug: with DeclarativeHotplugVolumes alone, a running VM's template change
// reaches its VMI (added and removed); a disk on a bus hot-plug does not allow is refused by
// the VMI webhook and reported as HotPlugVolumeError; an injected failure is retried; with
// HotplugVolumes on, template changes are left for the next start.
func TestDeclarativeHotplug(t *testing.T) {
	gates := featuregate.New(featuregate.DeclarativeHotplugVolumes)
	s := startSim(t, Options{Gates: gates})
	conds := s.recordVMConditions()
	s.create(s.newVM("vm-1", kubevirtv1.RunStrategyAlways))
	s.waitVMIPhase("vm-1", kubevirtv1.Running)

	s.faults.FailNext(FaultVMHotplug, 1)
	s.editTemplate("vm-1", func(spec *kubevirtv1.VirtualMachineInstanceSpec) {
		spec.Volumes = append(spec.Volumes, hotplugDV("data"))
		spec.Domain.Devices.Disks = append(spec.Domain.Devices.Disks, scsiDisk("data", kubevirtv1.DiskBusSCSI))
	})
	s.eventually("VMI carries the new volume and its disk", func() (bool, error) {
		vmi := s.vmi("vm-1")
		return s.vmiHas("vm-1", "data") && hasDiskNamed(vmi.Spec.Domain.Devices.Disks, "data"), nil
	})
	if !conds.any(func(c kubevirtv1.VirtualMachineCondition) bool {
		return c.Type == kubevirtv1.VirtualMachineFailure && c.Reason == reasonHotplugVolumeError
	}) {
		t.Error("the injected failure left no HotPlugVolumeError Failure condition on the VM")
	}

	s.editTemplate("vm-1", func(spec *kubevirtv1.VirtualMachineInstanceSpec) {
		spec.Volumes = append(spec.Volumes, hotplugDV("sata"))
		spec.Domain.Devices.Disks = append(spec.Domain.Devices.Disks, scsiDisk("sata", kubevirtv1.DiskBusSATA))
	})
	s.eventually("the sata disk refused with HotPlugVolumeError", func() (bool, error) {
		vm := &kubevirtv1.VirtualMachine{}
		if err := s.get("vm-1", vm); err != nil {
			return false, err
		}
		for _, c := range vm.Status.Conditions {
			if c.Type == kubevirtv1.VirtualMachineFailure && c.Reason == reasonHotplugVolumeError &&
				strings.Contains(c.Message, "requires bus to be 'scsi' or 'virtio'. [sata] is not permitted") {
				return true, nil
			}
		}
		return false, nil
	})
	if s.vmiHas("vm-1", "sata") {
		t.Fatal("the refused volume reached the VMI")
	}
	s.editTemplate("vm-1", func(spec *kubevirtv1.VirtualMachineInstanceSpec) {
		spec.Volumes = spec.Volumes[:len(spec.Volumes)-1]
		spec.Domain.Devices.Disks = spec.Domain.Devices.Disks[:len(spec.Domain.Devices.Disks)-1]
	})
	s.editTemplate("vm-1", func(spec *kubevirtv1.VirtualMachineInstanceSpec) {
		spec.Volumes = spec.Volumes[:len(spec.Volumes)-1]
		spec.Domain.Devices.Disks = spec.Domain.Devices.Disks[:len(spec.Domain.Devices.Disks)-1]
	})
	s.eventually("VMI lets go of the removed volume", func() (bool, error) { return !s.vmiHas("vm-1", "data"), nil })

	gates.Set(featuregate.HotplugVolumes, featuregate.DeclarativeHotplugVolumes)
	s.editTemplate("vm-1", func(spec *kubevirtv1.VirtualMachineInstanceSpec) {
		spec.Volumes = append(spec.Volumes, hotplugDV("later"))
		spec.Domain.Devices.Disks = append(spec.Domain.Devices.Disks, scsiDisk("later", kubevirtv1.DiskBusSCSI))
	})
	s.consistently("HotplugVolumes on: the template change stays out of the running VMI", 5*testPhaseDelay, func() error {
		if s.vmiHas("vm-1", "later") {
			return errHotplugged
		}
		return nil
	})
}

var errHotplugged = errors.New("hot-plugged although HotplugVolumes takes precedence")

func hasDiskNamed(disks []kubevirtv1.Disk, name string) bool {
	for _, d := range disks {
		if d.Name == name {
			return true
		}
	}
	return false
}
