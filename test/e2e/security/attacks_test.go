package security_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"text/tabwriter"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	kubevirtv1 "kubevirt.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	tccsi "github.com/tenantcloud/tenantcloud/pkg/csi"
	"github.com/tenantcloud/tenantcloud/test/infrastate"
)

// attack is one row of the table: what a hostile alpha admin tries, what must happen, and the
// attempt itself, which asserts the refusal and reports what it saw.
type attack struct {
	id, name, want string
	run            func(t *testing.T, w *world) outcome
}

// outcome is what an attempt saw, for the table, and the infra objects it may legitimately
// create or change (keys as infrastate.Key makes them), e.g. the load balancer of an accepted
// Service whose forbidden fields were dropped.
type outcome struct {
	result string
	allow  []string
}

func refused(result string, allow ...string) outcome { return outcome{result: result, allow: allow} }

// TestAttacks builds the world once and runs every attack in order; each row snapshots the
// infra objects before and after and fails on any change it did not declare.
func TestAttacks(t *testing.T) {
	w := startWorld(t)
	w.control(t)
	type row struct {
		a      attack
		result string
		passed bool
	}
	var rows []row
	for _, a := range attacks() {
		var out outcome
		passed := t.Run(a.id+"_"+strings.ReplaceAll(a.name, " ", "_"), func(t *testing.T) {
			before := w.snapshot(t)
			out = a.run(t, w)
			ccmAlive(t, w.ccm)
			if d := before.Diff(w.snapshot(t), out.allow...); len(d) > 0 {
				t.Errorf("infra objects changed by a refused attack:\n  %s", strings.Join(d, "\n  "))
			}
		})
		if out.result == "" {
			out.result = "(did not complete)"
		}
		rows = append(rows, row{a, out.result, passed})
	}

	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "#\tattack\texpected\tresult\tverdict")
	refusedCount := 0
	for _, r := range rows {
		verdict := "REFUSED"
		if !r.passed {
			verdict = "FAILED"
		} else {
			refusedCount++
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.a.id, r.a.name, r.a.want, r.result, verdict)
	}
	_ = tw.Flush()
	fmt.Fprintf(&b, "attacks tried: %d, refused with infra unchanged: %d\n", len(rows), refusedCount)
	if testing.Verbose() {
		fmt.Print(b.String())
	} else {
		t.Log("\n" + b.String())
	}
}

// control proves the infra diff can fail: a legitimate publish of alpha's own volume must show
// up in it. The volume is unpublished again and the infra left to settle before the attacks.
func (w *world) control(t *testing.T) {
	t.Helper()
	before := w.snapshot(t)
	if err := w.publish(t, w.alphaVol, w.alphaVM); err != nil {
		t.Fatalf("control: publishing our own volume: %v", err)
	}
	d := before.Diff(w.snapshot(t))
	if !slices.ContainsFunc(d, func(s string) bool {
		return strings.HasPrefix(s, "changed "+infrastate.KeyOf("VM", infraNS, w.alphaVM)+" ")
	}) {
		t.Fatalf("control: the infra diff does not see a hot-plug into %s: %v", w.alphaVM, d)
	}
	if err := w.unpublish(t, w.alphaVol, w.alphaVM); err != nil {
		t.Fatalf("control: unpublishing: %v", err)
	}
	w.waitDetached(t, w.alphaVol)
}

// waitDetached waits until the worker VMI lists volume neither in its spec nor in its status
// (the hot-unplug has run to the end), then for the infra to settle.
func (w *world) waitDetached(t *testing.T, volume string) {
	t.Helper()
	w.eventually(t, volume+" detached from "+w.alphaVM, func() (bool, error) {
		vmi := &kubevirtv1.VirtualMachineInstance{}
		if err := w.mgmt.Get(w.ctx, client.ObjectKey{Namespace: infraNS, Name: w.alphaVM}, vmi); err != nil {
			return false, err
		}
		return !slices.ContainsFunc(vmi.Spec.Volumes, func(v kubevirtv1.Volume) bool { return v.Name == volume }) &&
			!slices.ContainsFunc(vmi.Status.VolumeStatus, func(v kubevirtv1.VolumeStatus) bool { return v.Name == volume }), nil
	})
	w.settle(t)
}

// settle waits until two consecutive infra snapshots agree, so that no write still in flight
// from the setup lands in an attack's before/after window.
func (w *world) settle(t *testing.T) {
	t.Helper()
	prev := w.snapshot(t)
	w.eventually(t, "infra objects settled", func() (bool, error) {
		cur := w.snapshot(t)
		same := len(prev.Diff(cur)) == 0
		prev = cur
		return same, nil
	})
}

// code checks that err carries one of the gRPC codes and returns a short description.
func code(t *testing.T, what string, err error, want ...codes.Code) string {
	t.Helper()
	got := status.Code(err)
	for _, c := range want {
		if got == c {
			return what + ": " + got.String()
		}
	}
	t.Errorf("%s: got %v, want one of %v", what, err, want)
	return what + ": " + got.String()
}

// ok checks that err is nil (CSI's answer for "nothing of that name here, so nothing to do").
func ok(t *testing.T, what string, err error) string {
	t.Helper()
	if err != nil {
		t.Errorf("%s: %v, want OK (nothing to do)", what, err)
		return what + ": " + status.Code(err).String()
	}
	return what + ": OK(no-op)"
}

func attacks() []attack {
	var out []attack
	out = append(out, volumeHandleAttacks()...)
	out = append(out, nodeIDAttacks()...)
	out = append(out, unpublishAttacks()...)
	out = append(out, foreignVolumeOpAttacks()...)
	out = append(out, loadBalancerAttacks()...)
	out = append(out, endpointSliceAttacks()...)
	out = append(out, nodeAttacks()...)
	out = append(out, autoscalerAttacks()...)
	out = append(out, csiQuotaAttacks()...)
	out = append(out, lbQuotaAttack())
	out = append(out, csiMalformedAttacks()...)
	out = append(out, lbMalformedAttack(), autoscalerMalformedAttack())
	out = append(out, adoptionAttacks()...)
	out = append(out, topologyAttacks()...)
	return out
}

// publishEverything tries every handle-taking read and attach RPC of the controller with
// handle h; each must say NotFound.
func publishEverything(t *testing.T, w *world, h string) outcome {
	cc := w.csiCtrl.Controller
	var res []string
	_, err := cc.ControllerPublishVolume(w.call(t), &csi.ControllerPublishVolumeRequest{VolumeId: h, NodeId: w.alphaVM, VolumeCapability: mountCap()})
	res = append(res, code(t, "publish", err, codes.NotFound))
	_, err = cc.ValidateVolumeCapabilities(w.call(t), &csi.ValidateVolumeCapabilitiesRequest{VolumeId: h, VolumeCapabilities: []*csi.VolumeCapability{mountCap()}})
	res = append(res, code(t, "validate", err, codes.NotFound))
	_, err = cc.ControllerGetVolume(w.call(t), &csi.ControllerGetVolumeRequest{VolumeId: h})
	res = append(res, code(t, "get", err, codes.NotFound))
	req := createReq("clone-"+fmt.Sprint(len(h))+"-"+strings.NewReplacer("/", "-", ".", "-").Replace(h), 16*mib)
	req.VolumeContentSource = &csi.VolumeContentSource{Type: &csi.VolumeContentSource_Volume{Volume: &csi.VolumeContentSource_VolumeSource{VolumeId: h}}}
	_, err = cc.CreateVolume(w.call(t), req)
	res = append(res, code(t, "clone", err, codes.NotFound))
	return refused(strings.Join(res, ", "))
}

func volumeHandleAttacks() []attack {
	return []attack{
		{"1a", "PV handle = beta's DataVolume (same namespace)", "NotFound on publish/validate/get/clone",
			func(t *testing.T, w *world) outcome { return publishEverything(t, w, w.betaVol) }},
		{"1b", "PV handle = alpha VM root-disk DataVolume", "NotFound on publish/validate/get/clone",
			func(t *testing.T, w *world) outcome { return publishEverything(t, w, w.rootDisk) }},
		{"1c", "PV handle = DataVolume with forged alpha labels", "NotFound on publish/validate/get/clone",
			func(t *testing.T, w *world) outcome { return publishEverything(t, w, w.lookalike) }},
		{"1d", "PV handle = gamma's volume, other namespace", "NotFound on publish/validate/get/clone",
			func(t *testing.T, w *world) outcome { return publishEverything(t, w, otherNS+"/"+w.gammaVol) }},
		{"1e", "PV handle = gamma's volume ID, bare", "NotFound on publish/validate/get/clone",
			func(t *testing.T, w *world) outcome { return publishEverything(t, w, w.gammaVol) }},
		{"1f", "PV volumeAttributes naming the root disk, a serial, a bus", "ignored: our disk, our serial, configured bus", func(t *testing.T, w *world) outcome {
			rsp, err := w.csiCtrl.Controller.ControllerPublishVolume(w.call(t), &csi.ControllerPublishVolumeRequest{
				VolumeId: w.alphaVol, NodeId: w.alphaVM, VolumeCapability: mountCap(),
				VolumeContext: map[string]string{"claimName": w.rootDisk, "dataVolume": w.rootDisk, "bus": "sata", "serial": tccsi.Serial(w.rootDisk)},
			})
			if err != nil {
				t.Fatalf("publishing our own volume: %v", err)
			}
			pc := rsp.GetPublishContext()
			if pc[tccsi.PublishContextSerial] != tccsi.Serial(w.alphaVol) || pc[tccsi.PublishContextBus] != tccsi.BusSCSI {
				t.Errorf("publish context %v steered by volume_context", pc)
			}
			vmi := &kubevirtv1.VirtualMachineInstance{}
			w.must(t, w.mgmt.Get(w.ctx, client.ObjectKey{Namespace: infraNS, Name: w.alphaVM}, vmi))
			for _, v := range vmi.Spec.Volumes {
				if v.DataVolume != nil && v.DataVolume.Name == w.rootDisk || v.PersistentVolumeClaim != nil && v.PersistentVolumeClaim.ClaimName == w.rootDisk {
					t.Errorf("root disk hot-plugged into %s: %+v", w.alphaVM, v)
				}
			}
			w.must(t, w.unpublish(t, w.alphaVol, w.alphaVM))
			w.waitDetached(t, w.alphaVol)
			// Our own VM changed (a hot-plug and its removal), nothing else.
			return refused("serial "+pc[tccsi.PublishContextSerial]+" (ours), bus "+pc[tccsi.PublishContextBus]+"; root disk not attached",
				infrastate.KeyOf("VM", infraNS, w.alphaVM), infrastate.KeyOf("DataVolume", infraNS, w.alphaVol), infrastate.KeyOf("PVC", infraNS, w.alphaVol))
		}},
		{"1g", "PV handle = ../<root disk>", "NotFound on publish/validate/get/clone",
			func(t *testing.T, w *world) outcome { return publishEverything(t, w, "../"+w.rootDisk) }},
	}
}
