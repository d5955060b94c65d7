package infra

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
)

// FuzzVMNameFromProviderID: a providerID is tenant-written (Node spec). One that parses names
// a DNS-1123 subdomain (no '/', no "..", no unicode, ≤ 253 bytes) that ProviderID turns back
// into exactly the same string, so two spellings can never reach one VM.
func FuzzVMNameFromProviderID(f *testing.F) {
	for _, s := range []string{
		"kubevirt://alpha-w1", "kubevirt://", "kubevirt:///etc/passwd", "kubevirt://../beta-w1",
		"kubevirt://tenant-b/beta-w1", "KUBEVIRT://alpha-w1", "kubevirt://Alpha", "kubevirt://a.b.c",
		"kubevirt://" + strings.Repeat("a", 254), "kubevirt://ü", "kubevirt://a\x00b", "aws:///i-1",
		"kubevirt://alpha-w1 ", "kubevirt://kubevirt://alpha-w1", "clusterapi-machine://tenant-a/m1",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, providerID string) {
		name, err := VMNameFromProviderID(providerID)
		if err != nil {
			if name != "" {
				t.Fatalf("refused %q yielded %q", providerID, name)
			}
			return
		}
		if msgs := validation.IsDNS1123Subdomain(name); len(msgs) > 0 {
			t.Fatalf("%q yielded name %q: %v", providerID, name, msgs)
		}
		if strings.ContainsAny(name, "/\\%:") || strings.Contains(name, "..") {
			t.Fatalf("%q yielded a path-like name %q", providerID, name)
		}
		if ProviderID(name) != providerID {
			t.Fatalf("%q → %q → %q", providerID, name, ProviderID(name))
		}
		if ValidateName(name) != nil {
			t.Fatalf("name %q from %q fails ValidateName", name, providerID)
		}
	})
}

// FuzzScope: Owns implies InCluster, and no object can be owned by two different scopes.
func FuzzScope(f *testing.F) {
	f.Add("tenant-a", "alpha", "tenant-a", "alpha", "tenantcloud", "alpha")
	f.Add("tenant-a", "alpha", "tenant-a", "beta", "tenantcloud", "alpha")
	f.Add("tenant-a", "alpha", "tenant-b", "alpha", "tenantcloud", "alpha")
	f.Fuzz(func(t *testing.T, ns, cluster, objNS, labelCluster, managedBy, annCluster string) {
		s := Scope{Namespace: ns, ClusterName: cluster}
		if s.Validate() != nil {
			return
		}
		obj := newLabelled(objNS, labelCluster, managedBy, annCluster)
		if s.Owns(obj) && !s.InCluster(obj) {
			t.Fatal("owned but not in cluster")
		}
		if s.Owns(obj) && (objNS != ns || labelCluster != cluster || annCluster != cluster || managedBy != ManagedByValue) {
			t.Fatalf("%v owns %v", s, obj)
		}
	})
}

func newLabelled(ns, cluster, managedBy, annCluster string) *corev1.ConfigMap {
	return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{
		Namespace:   ns,
		Labels:      map[string]string{LabelClusterName: cluster, LabelManagedBy: managedBy},
		Annotations: map[string]string{AnnotationCluster: annCluster},
	}}
}
