package controller

import (
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/container-storage-interface/spec/lib/go/csi"
	corev1 "k8s.io/api/core/v1"

	"github.com/tenantcloud/tenantcloud/pkg/config"
)

func TestAllocatedBytes(t *testing.T) {
	block, fs := corev1.PersistentVolumeBlock, corev1.PersistentVolumeFilesystem
	tests := []struct {
		name     string
		required int64
		limit    int64
		mode     corev1.PersistentVolumeMode
		minimum  int64
		want     int64
		outOfRng bool
		invalid  bool
	}{
		{name: "no range: default size", mode: block, want: gib},
		{name: "exact KiB multiple", required: 64 * mib, mode: block, want: 64 * mib},
		{name: "rounded up to KiB (LINSTOR)", required: 1e9, mode: block, want: 1000000512},
		{name: "filesystem rounded up to MiB (CDI alignment)", required: 1e9, mode: fs, want: 954 * mib},
		{name: "below CDI minimum", required: 4096, mode: block, want: mib},
		{name: "required = limit, allocatable", required: 64 * mib, limit: 64 * mib, mode: block, want: 64 * mib},
		{name: "rounding would exceed limit", required: 1e9, limit: 1e9, mode: block, outOfRng: true},
		{name: "limit below minimum", required: 1000, limit: 2000, mode: block, outOfRng: true},
		{name: "limit only, below default", limit: 100*mib + 5000, mode: block, want: 100*mib + 4*kib},
		{name: "limit only, filesystem", limit: 100*mib + 5, mode: fs, want: 100 * mib},
		{name: "limit only, above default", limit: 10 * gib, mode: block, want: gib},
		{name: "clone source larger than request", required: mib, mode: block, minimum: 10 * mib, want: 10 * mib},
		{name: "clone source above limit", required: mib, limit: 5 * mib, mode: block, minimum: 10 * mib, outOfRng: true},
		{name: "negative", required: -1, mode: block, invalid: true},
		{name: "required above limit", required: 10, limit: 5, mode: block, invalid: true},
		{name: "overflow", required: math.MaxInt64, mode: block, outOfRng: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := allocatedBytes(&csi.CapacityRange{RequiredBytes: tt.required, LimitBytes: tt.limit}, tt.mode, tt.minimum)
			switch {
			case tt.outOfRng:
				if !errors.Is(err, errOutOfRange) {
					t.Fatalf("got %d, %v; want out of range", got, err)
				}
			case tt.invalid:
				if err == nil || errors.Is(err, errOutOfRange) {
					t.Fatalf("got %d, %v; want an invalid-argument error", got, err)
				}
			default:
				if err != nil || got != tt.want {
					t.Fatalf("got %d, %v; want %d", got, err, tt.want)
				}
				if got%allocationUnit(tt.mode) != 0 || got < tt.required || (tt.limit > 0 && got > tt.limit) {
					t.Fatalf("%d does not honour the range or the allocation unit", got)
				}
			}
		})
	}
	// nil range = no range.
	if got, err := allocatedBytes(nil, block, 0); err != nil || got != DefaultVolumeBytes {
		t.Errorf("nil range: %d, %v", got, err)
	}
}

func TestFitsRange(t *testing.T) {
	tests := []struct {
		size, req, lim int64
		want           bool
	}{
		{64 * mib, 64 * mib, 0, true},
		{64 * mib, 64 * mib, 64 * mib, true},
		{64 * mib, 128 * mib, 128 * mib, false},
		{64 * mib, 0, 32 * mib, false},
		{64 * mib, 0, 0, true},
	}
	for _, tt := range tests {
		if got := fitsRange(tt.size, &csi.CapacityRange{RequiredBytes: tt.req, LimitBytes: tt.lim}); got != tt.want {
			t.Errorf("fitsRange(%d, [%d,%d]) = %v", tt.size, tt.req, tt.lim, got)
		}
	}
}

func TestQuota(t *testing.T) {
	st := config.Storage{MaxVolumes: 3, MaxTotalCapacity: "10Gi"}
	tests := []struct {
		name    string
		u       usage
		addVols int
		addB    int64
		wantErr string
	}{
		{"fits", usage{1, gib}, 1, gib, ""},
		{"last volume", usage{2, gib}, 1, gib, ""},
		{"volume quota", usage{3, gib}, 1, gib, "volume quota exceeded: the tenant has 3 of 3 volumes"},
		{"exactly full capacity", usage{1, 9 * gib}, 1, gib, ""},
		{"capacity quota", usage{1, 9 * gib}, 1, gib + 1, "capacity quota exceeded: 1073741825 requested, 9Gi of 10Gi in use"},
		{"expansion within", usage{3, 5 * gib}, 0, 5 * gib, ""},
		{"expansion beyond", usage{3, 5 * gib}, 0, 6 * gib, "capacity quota exceeded"},
		{"expansion ignores volume count", usage{3, gib}, 0, gib, ""},
	}
	for _, tt := range tests {
		err := checkQuota(tt.u, tt.addVols, tt.addB, st)
		if (tt.wantErr == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tt.wantErr)) {
			t.Errorf("%s: checkQuota = %v, want %q", tt.name, err, tt.wantErr)
		}
	}
	if err := checkQuota(usage{1000, 1 << 60}, 1, 1<<60, config.Storage{}); err != nil {
		t.Errorf("unlimited: %v", err)
	}
	if _, ok := availableBytes(usage{}, config.Storage{}); ok {
		t.Error("availableBytes without a capacity quota must report !ok")
	}
	if got, ok := availableBytes(usage{1, 4 * gib}, st); !ok || got != 6*gib {
		t.Errorf("availableBytes = %d, %v", got, ok)
	}
	if got, _ := availableBytes(usage{3, gib}, st); got != 0 {
		t.Errorf("availableBytes with the volume quota used up = %d, want 0", got)
	}
	if got, _ := availableBytes(usage{1, 11 * gib}, st); got != 0 {
		t.Errorf("availableBytes over quota = %d, want 0", got)
	}
}

func TestInflate(t *testing.T) {
	tests := []struct{ newSize, oldSize, oldReq, want int64 }{
		{2 * gib, gib, gib, 2 * gib},           // Block: no overhead
		{2 * gib, gib, 1138166334, 2276332668}, // CDI's 6% filesystem overhead kept
		{2 * gib, gib, gib - 1, 2 * gib},       // odd claim smaller than size: never less than the size
		{2 * gib, 0, gib, 2 * gib},             // unknown old size
	}
	for _, tt := range tests {
		if got := inflate(tt.newSize, tt.oldSize, tt.oldReq); got != tt.want {
			t.Errorf("inflate(%d, %d, %d) = %d, want %d", tt.newSize, tt.oldSize, tt.oldReq, got, tt.want)
		}
	}
}

func TestSumUsage(t *testing.T) {
	vols := []*volume{{id: "tc-a", capacity: gib}, {id: "tc-b", capacity: 2 * gib}}
	tests := []struct {
		name     string
		vols     []*volume
		reserved map[string]int64
		want     usage
	}{
		{"nothing", nil, nil, usage{}},
		{"cached only", vols, nil, usage{2, 3 * gib}},
		{"reserved only", nil, map[string]int64{"tc-c": gib}, usage{1, gib}},
		{"reserved beside cached", vols, map[string]int64{"tc-c": 4 * gib}, usage{3, 7 * gib}},
		// The cache has the DataVolume before the create call releases its reservation.
		{"reserved and cached counts once", vols, map[string]int64{"tc-b": 2 * gib, "tc-c": gib}, usage{3, 4 * gib}},
	}
	for _, tt := range tests {
		if got := sumUsage(tt.vols, tt.reserved); got != tt.want {
			t.Errorf("%s: sumUsage = %+v, want %+v", tt.name, got, tt.want)
		}
	}
}
