package csi

import "testing"

func TestIsLegacyVolumeID(t *testing.T) {
	for id, want := range map[string]bool{
		"pvc-0b5f1f8e-6c1d-4b8e-9a55-2f6e1c2d3a4b":    true,
		"pvc-0B5F1F8E-6C1D-4B8E-9A55-2F6E1C2D3A4B":    false, // apiservers assign lowercase
		"pvc-0b5f1f8e6c1d4b8e9a552f6e1c2d3a4b":        false,
		"pvc-0b5f1f8e-6c1d-4b8e-9a55-2f6e1c2d3a4":     false,
		"pvc-0b5f1f8e-6c1d-4b8e-9a55-2f6e1c2d3a4bb":   false,
		"snap-0b5f1f8e-6c1d-4b8e-9a55-2f6e1c2d3a4b":   false,
		"pvc-0b5f1f8e-6c1d-4b8e-9a55_2f6e1c2d3a4b":    false,
		"../pvc-0b5f1f8e-6c1d-4b8e-9a55-2f6e1c2d3a4b": false,
		"tc-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa":         false,
		"pvc-0b5f1f8e-6c1d-4b8e-9a55-2f6e1c2d3a4g":    false,
		"": false,
	} {
		if got := IsLegacyVolumeID(id); got != want {
			t.Errorf("IsLegacyVolumeID(%q) = %v, want %v", id, got, want)
		}
	}
}
