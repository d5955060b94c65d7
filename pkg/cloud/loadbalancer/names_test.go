package loadbalancer

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
)

func TestInfraServiceName(t *testing.T) {
	tests := []struct {
		name    string
		uid     types.UID
		want    string // exact, or "" to only check validity
		wantErr bool
	}{
		{"canonical UUID", "0b6c3f2e-8d1a-4c4e-9f1e-2a3b4c5d6e7f", "tc-lb-0b6c3f2e8d1a4c4e9f1e2a3b4c5d6e7f", false},
		{"upper case UUID is lowered", "0B6C3F2E-8D1A-4C4E-9F1E-2A3B4C5D6E7F", "tc-lb-0b6c3f2e8d1a4c4e9f1e2a3b4c5d6e7f", false},
		{"empty", "", "", true},
		{"not a UUID", "abc/../def", "", false},
		{"very long", types.UID(strings.Repeat("x", 500)), "", false},
		{"unicode", "ünïcødé", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := InfraServiceName(tt.uid)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if tt.wantErr {
				return
			}
			if tt.want != "" && got != tt.want {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
			if !strings.HasPrefix(got, ServiceNamePrefix) {
				t.Fatalf("%q lacks prefix %q", got, ServiceNamePrefix)
			}
			if errs := validation.IsDNS1123Label(got); len(errs) > 0 {
				t.Fatalf("%q is not a DNS-1123 label: %v", got, errs)
			}
			for _, fam := range []string{"IPv4", "IPv6"} {
				if errs := validation.IsDNS1123Label(EndpointSliceName(got, corev1.IPFamily(fam))); len(errs) > 0 {
					t.Fatalf("slice name for %s invalid: %v", fam, errs)
				}
			}
			again, _ := InfraServiceName(tt.uid)
			if again != got {
				t.Fatalf("not deterministic: %q then %q", got, again)
			}
		})
	}
	a, _ := InfraServiceName("a")
	b, _ := InfraServiceName("b")
	if a == b {
		t.Fatal("different UIDs gave the same name")
	}
}
