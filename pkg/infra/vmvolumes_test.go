package infra

import (
	"encoding/json"
	"slices"
	"testing"

	kubevirtv1 "kubevirt.io/api/core/v1"
)

func vmWith(volumes []string, disks []string) *kubevirtv1.VirtualMachine {
	vm := &kubevirtv1.VirtualMachine{Spec: kubevirtv1.VirtualMachineSpec{Template: &kubevirtv1.VirtualMachineInstanceTemplateSpec{}}}
	vm.ResourceVersion = "42"
	for _, v := range volumes {
		vm.Spec.Template.Spec.Volumes = append(vm.Spec.Template.Spec.Volumes, kubevirtv1.Volume{Name: v})
	}
	for _, d := range disks {
		vm.Spec.Template.Spec.Domain.Devices.Disks = append(vm.Spec.Template.Spec.Domain.Devices.Disks, kubevirtv1.Disk{Name: d})
	}
	return vm
}

// opsOf decodes a patch to "op path" strings (values left out).
func opsOf(t *testing.T, patch []byte) []string {
	t.Helper()
	var ops []patchOp
	if err := json.Unmarshal(patch, &ops); err != nil {
		t.Fatalf("patch %s: %v", patch, err)
	}
	out := make([]string, len(ops))
	for i, o := range ops {
		out[i] = o.Op + " " + o.Path
		if i == 0 && o.Value != "42" {
			t.Errorf("first op carries resourceVersion %v, want the one read (42)", o.Value)
		}
	}
	return out
}

func TestAddVolumePatch(t *testing.T) {
	vol, disk := kubevirtv1.Volume{Name: "pvc-x"}, kubevirtv1.Disk{Name: "pvc-x"}
	tests := []struct {
		name string
		vm   *kubevirtv1.VirtualMachine
		want []string
	}{
		{"appends to both lists", vmWith([]string{"rootdisk"}, []string{"rootdisk"}),
			[]string{"replace /metadata/resourceVersion", "add " + volumesPath + "/-", "add " + disksPath + "/-"}},
		{"creates missing lists", vmWith(nil, nil),
			[]string{"replace /metadata/resourceVersion", "add " + volumesPath, "add " + disksPath}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := AddVolumePatch(tt.vm, vol, disk)
			if err != nil {
				t.Fatal(err)
			}
			if got := opsOf(t, p); !slices.Equal(got, tt.want) {
				t.Errorf("ops %v, want %v", got, tt.want)
			}
		})
	}
	if _, err := AddVolumePatch(&kubevirtv1.VirtualMachine{}, vol, disk); err == nil {
		t.Error("a VM without template: no error")
	}
	noRV := vmWith(nil, nil)
	noRV.ResourceVersion = ""
	if _, err := AddVolumePatch(noRV, vol, disk); err == nil {
		t.Error("a VM without resourceVersion (an unguarded patch): no error")
	}
}

func TestRemoveVolumePatch(t *testing.T) {
	tests := []struct {
		name      string
		vm        *kubevirtv1.VirtualMachine
		wantFound bool
		want      []string
	}{
		{"removes only its own entries, by index", vmWith([]string{"rootdisk", "other", "pvc-x", "last"}, []string{"rootdisk", "pvc-x", "other"}), true,
			[]string{"replace /metadata/resourceVersion", "remove " + volumesPath + "/2", "remove " + disksPath + "/1"}},
		{"a volume without disk", vmWith([]string{"pvc-x"}, nil), true,
			[]string{"replace /metadata/resourceVersion", "remove " + volumesPath + "/0"}},
		{"absent: no patch", vmWith([]string{"rootdisk", "pvc-xy"}, []string{"rootdisk", "pvc-xy"}), false, nil},
		{"no template: no patch", &kubevirtv1.VirtualMachine{}, false, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, found, err := RemoveVolumePatch(tt.vm, "pvc-x")
			if err != nil {
				t.Fatal(err)
			}
			if found != tt.wantFound {
				t.Fatalf("found = %v, want %v", found, tt.wantFound)
			}
			if !found {
				if p != nil {
					t.Errorf("patch %s for nothing to remove", p)
				}
				return
			}
			if got := opsOf(t, p); !slices.Equal(got, tt.want) {
				t.Errorf("ops %v, want %v", got, tt.want)
			}
		})
	}
}
