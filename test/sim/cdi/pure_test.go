package cdi

import (
	"errors"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	cdiv1 "kubevirt.io/containerized-data-importer-api/pkg/apis/core/v1beta1"
)

func TestLinstorCapacity(t *testing.T) {
	for _, tc := range []struct{ in, want int64 }{
		{0, 4096}, {1, 4096}, {4096, 4096}, {4097, 5120},
		{1000000000, 1000000512}, {1 << 30, 1 << 30}, {1<<30 + 1, 1<<30 + 1024},
	} {
		if got := linstorCapacity(tc.in); got != tc.want {
			t.Errorf("linstorCapacity(%d) = %d, want %d", tc.in, got, tc.want)
		}
	}
}

func TestCDIInflatedSize(t *testing.T) {
	for _, tc := range []struct {
		in   int64
		mode corev1.PersistentVolumeMode
		want int64
	}{
		{1 << 30, corev1.PersistentVolumeBlock, 1 << 30},
		{1000000000, corev1.PersistentVolumeBlock, 1000000000},
		{1 << 30, corev1.PersistentVolumeFilesystem, 1138166334},
		// 1e9 aligns up to 954 MiB first, then gets 6 %.
		{1000000000, corev1.PersistentVolumeFilesystem, 1060361995},
	} {
		if got := cdiInflatedSize(tc.in, tc.mode); got != tc.want {
			t.Errorf("cdiInflatedSize(%d, %s) = %d, want %d", tc.in, tc.mode, got, tc.want)
		}
	}
}

func class(name, provisioner string, created time.Time, ann ...string) storagev1.StorageClass {
	sc := storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: metav1.NewTime(created)}, Provisioner: provisioner}
	if len(ann) > 0 {
		sc.Annotations = map[string]string{ann[0]: "true"}
	}
	return sc
}

func TestResolveClass(t *testing.T) {
	t0 := time.Unix(1000, 0)
	classes := []storagev1.StorageClass{
		class("old-default", Driver, t0, annDefaultClass),
		class("new-default", Driver, t0.Add(time.Hour), annDefaultClass),
		class("virt", Driver, t0, annDefaultVirtClass),
		class("plain", "other.csi", t0),
	}
	for _, tc := range []struct {
		name    *string
		classes []storagev1.StorageClass
		want    string
	}{
		{ptr("plain"), classes, "plain"},
		{ptr("missing"), classes, ""},
		{nil, classes, "virt"}, // KubeVirt's default wins for kubevirt content
		{nil, classes[:2], "new-default"},
		{nil, classes[3:], ""},
	} {
		got := ""
		if sc := resolveClass(tc.name, tc.classes); sc != nil {
			got = sc.Name
		}
		if got != tc.want {
			t.Errorf("resolveClass(%v) = %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestRenderPVCSpec(t *testing.T) {
	classes := []storagev1.StorageClass{class("linstor", Driver, time.Now()), class("nfs", "nfs.csi", time.Now())}
	gi := resource.MustParse("1Gi")
	storageDV := func(sc *string, mode *corev1.PersistentVolumeMode, access ...corev1.PersistentVolumeAccessMode) *cdiv1.DataVolume {
		return &cdiv1.DataVolume{Spec: cdiv1.DataVolumeSpec{
			Source: &cdiv1.DataVolumeSource{Blank: &cdiv1.DataVolumeBlankImage{}},
			Storage: &cdiv1.StorageSpec{StorageClassName: sc, VolumeMode: mode, AccessModes: access,
				Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: gi}}},
		}}
	}
	for _, tc := range []struct {
		name     string
		dv       *cdiv1.DataVolume
		wantMode string
		wantAcc  string
		wantSize int64
		wantErr  string
	}{
		{"linstor defaults", storageDV(ptr("linstor"), nil), "Block", "[ReadWriteMany]", 1 << 30, ""},
		{"linstor RWO picks Block", storageDV(ptr("linstor"), nil, rwo), "Block", "[ReadWriteOnce]", 1 << 30, ""},
		{"linstor Filesystem picks RWO", storageDV(ptr("linstor"), &fs), "Filesystem", "[ReadWriteOnce]", 1138166334, ""},
		{"unknown provisioner needs modes", storageDV(ptr("nfs"), nil), "", "", 0, "no accessMode specified in StorageProfile nfs"},
		{"unknown provisioner keeps apiserver default", storageDV(ptr("nfs"), nil, rwx), "<nil>", "[ReadWriteMany]", 1138166334, ""},
		{"missing class without modes", storageDV(ptr("gone"), nil), "", "", 0, messageStorageClassNotFound},
		{"missing class with modes", storageDV(ptr("gone"), &block, rwo), "Block", "[ReadWriteOnce]", 1 << 30, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec, _, err := renderPVCSpec(tc.dv, classes)
			if tc.wantErr != "" {
				var cnv *claimNotValidError
				if !errors.As(err, &cnv) || cnv.msg != tc.wantErr {
					t.Fatalf("err = %v, want ErrClaimNotValid %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			mode := "<nil>"
			if spec.VolumeMode != nil {
				mode = string(*spec.VolumeMode)
			}
			if mode != tc.wantMode || fmt.Sprint(spec.AccessModes) != tc.wantAcc || storage(spec.Resources.Requests) != tc.wantSize {
				t.Errorf("got mode %s access %v size %d, want %s %s %d", mode, spec.AccessModes, storage(spec.Resources.Requests),
					tc.wantMode, tc.wantAcc, tc.wantSize)
			}
		})
	}
}

func TestSteps(t *testing.T) {
	for _, tc := range []struct {
		op        operation
		populator bool
		strategy  cloneStrategy
		want      string
	}{
		{opImport, true, strategyNone, "[ImportScheduled ImportInProgress Succeeded]"},
		{opImport, false, strategyNone, "[PVCBound ImportScheduled ImportInProgress Succeeded]"},
		{opClonePVC, true, strategyHostAssisted, "[CloneScheduled CloneInProgress Succeeded]"},
		{opClonePVC, true, strategySnapshot, "[CloneScheduled SnapshotForSmartCloneInProgress CloneFromSnapshotSourceInProgress Succeeded]"},
		{opClonePVC, false, strategyHostAssisted, "[PVCBound CloneScheduled CloneInProgress Succeeded]"},
		{opCloneSnapshot, true, strategySnapshot, "[CloneScheduled CloneFromSnapshotSourceInProgress Succeeded]"},
		{opCloneSnapshot, true, strategyHostAssisted, "[CloneScheduled CloneFromSnapshotSourceInProgress CloneInProgress Succeeded]"},
		{opUnsupported, true, strategyNone, "[]"},
	} {
		if got := fmt.Sprint(steps(tc.op, tc.populator, tc.strategy)); got != tc.want {
			t.Errorf("steps(%d, %v, %q) = %s, want %s", tc.op, tc.populator, tc.strategy, got, tc.want)
		}
	}
	s := steps(opImport, true, strategyNone)
	for cur, want := range map[cdiv1.DataVolumePhase]cdiv1.DataVolumePhase{
		cdiv1.PhaseUnset: cdiv1.ImportScheduled, cdiv1.Pending: cdiv1.ImportScheduled,
		cdiv1.ImportScheduled: cdiv1.ImportInProgress, cdiv1.ImportInProgress: cdiv1.Succeeded,
	} {
		if got, ok := nextStep(s, cur); !ok || got != want {
			t.Errorf("nextStep(%s) = %s, want %s", cur, got, want)
		}
	}
	if _, ok := nextStep(s, cdiv1.Succeeded); ok {
		t.Error("a step after Succeeded")
	}
}

func TestCloneStrategies(t *testing.T) {
	exp := class("linstor", Driver, time.Now())
	exp.AllowVolumeExpansion = ptr(true)
	fixed := class("linstor-fixed", Driver, time.Now())
	other := class("other", "other.csi", time.Now())
	src := &corev1.PersistentVolumeClaim{
		Spec:   corev1.PersistentVolumeClaimSpec{VolumeMode: &block},
		Status: corev1.PersistentVolumeClaimStatus{Capacity: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}},
	}
	target := func(size string, mode corev1.PersistentVolumeMode) *corev1.PersistentVolumeClaimSpec {
		return &corev1.PersistentVolumeClaimSpec{VolumeMode: &mode,
			Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse(size)}}}
	}
	for _, tc := range []struct {
		name    string
		srcSC   *storagev1.StorageClass
		tgtSC   *storagev1.StorageClass
		tgt     *corev1.PersistentVolumeClaimSpec
		drivers []string
		want    cloneStrategy
	}{
		{"no snapshot class", &exp, &exp, target("1Gi", block), nil, strategyHostAssisted},
		{"snapshot class", &exp, &exp, target("1Gi", block), []string{Driver}, strategySnapshot},
		{"other driver's snapshot class", &exp, &exp, target("1Gi", block), []string{"other.csi"}, strategyHostAssisted},
		{"different provisioners", &other, &exp, target("1Gi", block), []string{Driver}, strategyHostAssisted},
		{"volume mode change", &exp, &exp, target("1Gi", fs), []string{Driver}, strategyHostAssisted},
		{"bigger, expandable", &exp, &exp, target("2Gi", block), []string{Driver}, strategySnapshot},
		{"bigger, not expandable", &fixed, &fixed, target("2Gi", block), []string{Driver}, strategyHostAssisted},
	} {
		if got := cloneFromPVCStrategy(src, tc.srcSC, tc.tgtSC, tc.tgt, tc.drivers); got != tc.want {
			t.Errorf("%s: strategy %q, want %q", tc.name, got, tc.want)
		}
	}
	gi := int64(1 << 30)
	for _, tc := range []struct {
		name   string
		driver string
		mode   corev1.PersistentVolumeMode
		tgtSC  *storagev1.StorageClass
		tgt    *corev1.PersistentVolumeClaimSpec
		want   cloneStrategy
	}{
		{"same driver and mode", Driver, block, &fixed, target("1Gi", block), strategySnapshot},
		{"other driver", "other.csi", block, &exp, target("1Gi", block), strategyHostAssisted},
		{"bigger, expandable", Driver, block, &exp, target("2Gi", block), strategySnapshot},
		{"bigger, fixed", Driver, block, &fixed, target("2Gi", block), strategyHostAssisted},
		{"mode change", Driver, fs, &exp, target("1Gi", block), strategyHostAssisted},
	} {
		if got := cloneFromSnapshotStrategy(tc.driver, tc.mode, gi, tc.tgtSC, tc.tgt); got != tc.want {
			t.Errorf("snapshot %s: strategy %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestOperationOf(t *testing.T) {
	dv := func(src *cdiv1.DataVolumeSource) *cdiv1.DataVolume {
		return &cdiv1.DataVolume{Spec: cdiv1.DataVolumeSpec{Source: src}}
	}
	for _, tc := range []struct {
		dv   *cdiv1.DataVolume
		want operation
	}{
		{dv(&cdiv1.DataVolumeSource{Blank: &cdiv1.DataVolumeBlankImage{}}), opImport},
		{dv(&cdiv1.DataVolumeSource{HTTP: &cdiv1.DataVolumeSourceHTTP{URL: "http://x"}}), opImport},
		{dv(&cdiv1.DataVolumeSource{PVC: &cdiv1.DataVolumeSourcePVC{Name: "a"}}), opClonePVC},
		{dv(&cdiv1.DataVolumeSource{Snapshot: &cdiv1.DataVolumeSourceSnapshot{Name: "a"}}), opCloneSnapshot},
		{dv(&cdiv1.DataVolumeSource{Upload: &cdiv1.DataVolumeSourceUpload{}}), opUnsupported},
		{dv(nil), opUnsupported},
	} {
		if got := operationOf(tc.dv); got != tc.want {
			t.Errorf("operationOf(%+v) = %d, want %d", tc.dv.Spec.Source, got, tc.want)
		}
	}
}
