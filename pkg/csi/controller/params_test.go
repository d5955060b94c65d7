package controller

import (
	"strings"
	"testing"

	"github.com/tenantcloud/tenantcloud/pkg/config"
)

func TestParseVolumeParams(t *testing.T) {
	storage := config.Storage{
		DefaultStorageClass:   "linstor-default",
		AllowedStorageClasses: []string{"linstor-fast"},
		DiskBus:               config.DiskBusSCSI,
	}
	tests := []struct {
		name      string
		params    map[string]string
		storage   *config.Storage
		wantClass string
		wantBus   string
		wantClaim string
		wantErr   string
	}{
		{name: "defaults", params: nil, wantClass: "linstor-default", wantBus: "scsi"},
		{name: "allowed class", params: map[string]string{ParamInfraStorageClass: "linstor-fast"}, wantClass: "linstor-fast", wantBus: "scsi"},
		{name: "default class named", params: map[string]string{ParamInfraStorageClass: "linstor-default"}, wantClass: "linstor-default", wantBus: "scsi"},
		{name: "empty class means default", params: map[string]string{ParamInfraStorageClass: ""}, wantClass: "linstor-default", wantBus: "scsi"},
		{name: "class not granted", params: map[string]string{ParamInfraStorageClass: "other-tenants-class"}, wantErr: `infra StorageClass "other-tenants-class" is not allowed for this tenant (allowed: linstor-default, linstor-fast)`},
		{name: "virtio", params: map[string]string{ParamBus: "virtio"}, wantClass: "linstor-default", wantBus: "virtio"},
		{name: "sata refused", params: map[string]string{ParamBus: "sata"}, wantErr: `disk bus "sata" is not supported`},
		{name: "bus default from config", params: nil, storage: &config.Storage{DefaultStorageClass: "x", DiskBus: config.DiskBusVirtio}, wantClass: "x", wantBus: "virtio"},
		{name: "bus default when unset", params: nil, storage: &config.Storage{DefaultStorageClass: "x"}, wantClass: "x", wantBus: "scsi"},
		{name: "sidecar metadata", params: map[string]string{"csi.storage.k8s.io/pvc/name": "data", "csi.storage.k8s.io/pvc/namespace": "app", "csi.storage.k8s.io/pv/name": "pvc-1"},
			wantClass: "linstor-default", wantBus: "scsi", wantClaim: "app/data"},
		{name: "unknown keys", params: map[string]string{"infraStorageClass": "x", "zzz": "1"}, wantErr: `unknown parameters ["infraStorageClass" "zzz"]`},
		{name: "no default class", params: nil, storage: &config.Storage{}, wantErr: "defaultStorageClass is not configured"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := storage
			if tt.storage != nil {
				st = *tt.storage
			}
			got, err := parseVolumeParams(tt.params, st)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.storageClass != tt.wantClass || got.bus != tt.wantBus || got.tenantClaim != tt.wantClaim {
				t.Errorf("got %+v, want class %q bus %q claim %q", got, tt.wantClass, tt.wantBus, tt.wantClaim)
			}
		})
	}
}

func TestParseSnapshotParams(t *testing.T) {
	storage := config.Storage{DefaultSnapshotClass: "snap-default", AllowedSnapshotClasses: []string{"snap-fast"}}
	tests := []struct {
		params  map[string]string
		storage config.Storage
		want    string
		wantErr string
	}{
		{nil, storage, "snap-default", ""},
		{map[string]string{ParamInfraSnapshotClass: "snap-fast"}, storage, "snap-fast", ""},
		{map[string]string{ParamInfraSnapshotClass: "foreign"}, storage, "", `"foreign" is not allowed`},
		{map[string]string{"csi.storage.k8s.io/volumesnapshot/name": "s"}, storage, "snap-default", ""},
		{map[string]string{"nope": "1"}, storage, "", `unknown parameters ["nope"]`},
		{nil, config.Storage{AllowedSnapshotClasses: []string{"a"}}, "", "no infra VolumeSnapshotClass"},
		{map[string]string{ParamInfraSnapshotClass: "a"}, config.Storage{AllowedSnapshotClasses: []string{"a"}}, "a", ""},
	}
	for _, tt := range tests {
		got, err := parseSnapshotParams(tt.params, tt.storage)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("parseSnapshotParams(%v) error %v, want %q", tt.params, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("parseSnapshotParams(%v) = %q, %v; want %q", tt.params, got, err, tt.want)
		}
	}
	if snapshotsConfigured(config.Storage{}) || !snapshotsConfigured(storage) {
		t.Error("snapshotsConfigured")
	}
}
