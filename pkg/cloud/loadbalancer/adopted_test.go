package loadbalancer

import "testing"

// TestUpstreamServiceName: the upstream CCM's name is "a" + the UID's hex digits, cut to 32
// characters (so the UID's last digit is lost), unlike the native "tc-lb-" + all 32.
func TestUpstreamServiceName(t *testing.T) {
	const uid = "0b5f1f8e-6c1d-4b8e-9a55-2f6e1c2d3a4b"
	if got, want := UpstreamServiceName(uid), "a0b5f1f8e6c1d4b8e9a552f6e1c2d3a4"; got != want {
		t.Errorf("UpstreamServiceName = %q, want %q", got, want)
	}
	native, err := InfraServiceName(uid)
	if err != nil || native == UpstreamServiceName(uid) {
		t.Errorf("native name %q (%v) must differ from the upstream one", native, err)
	}
}
