package autoscaler

import "testing"

func TestParseGroupID(t *testing.T) {
	tests := []struct {
		id, want string
		ok       bool
	}{
		{"tenant-a/workers", "workers", true},
		{"tenant-a/workers.v2", "workers.v2", true},
		{"tenant-b/workers", "", false},
		{"workers", "", false},
		{"tenant-a/", "", false},
		{"tenant-a/a/b", "", false},
		{"tenant-a/../x", "", false},
		{"tenant-a/Workers", "", false},
		{"/workers", "", false},
		{"", "", false},
	}
	for _, tt := range tests {
		got, err := ParseGroupID(tt.id, "tenant-a")
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseGroupID(%q) = %q, %v; want %q, ok=%v", tt.id, got, err, tt.want, tt.ok)
		}
	}
	if got, err := ParseGroupID(GroupID("tenant-a", "md-1"), "tenant-a"); err != nil || got != "md-1" {
		t.Errorf("round trip: %q, %v", got, err)
	}
}

func TestParsePendingInstanceID(t *testing.T) {
	tests := []struct {
		id, want string
		ok       bool
	}{
		{PendingInstanceID("tenant-a", "m-1"), "m-1", true},
		{"clusterapi-machine://tenant-b/m-1", "", false},
		{"clusterapi-machine://tenant-a/", "", false},
		{"clusterapi-machine://tenant-a/a/b", "", false},
		{"clusterapi-machine://tenant-a", "", false},
		{"kubevirt://m-1", "", false},
		{"m-1", "", false},
	}
	for _, tt := range tests {
		got, ok := ParsePendingInstanceID(tt.id, "tenant-a")
		if ok != tt.ok || got != tt.want {
			t.Errorf("ParsePendingInstanceID(%q) = %q, %v; want %q, %v", tt.id, got, ok, tt.want, tt.ok)
		}
	}
}
