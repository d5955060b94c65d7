// Package upstream makes infra and tenant objects exactly as kubevirt/cloud-provider-kubevirt
// and kubevirt/csi-driver make them, for the adoption tests. Each builder follows the upstream
// source it names (read, not copied); docs/migration.md lists the same facts.
package upstream

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	cloudprovider "k8s.io/cloud-provider"
	cdiv1 "kubevirt.io/containerized-data-importer-api/pkg/apis/core/v1beta1"
)

// Upstream names and keys.
const (
	DriverName      = "csi.kubevirt.io" // csi-driver pkg/service/driver.go VendorName
	VolumePrefix    = "pvc"             // external-provisioner's --volume-name-prefix, csi-driver --volume-prefix
	LabelSvcName    = "cluster.x-k8s.io/tenant-service-name"
	LabelSvcNS      = "cluster.x-k8s.io/tenant-service-namespace"
	LabelCluster    = "cluster.x-k8s.io/cluster-name"
	LabelRole       = "cluster.x-k8s.io/role"
	annDeleteAfter  = "cdi.kubevirt.io/storage.deleteAfterCompletion"
	annProvisioned  = "pv.kubernetes.io/provisioned-by"
	attrProvisioner = "storage.kubernetes.io/csiProvisionerIdentity"
)

// InfraService is the infra Service the upstream CCM (cloud-provider-kubevirt
// pkg/provider/loadbalancer.go EnsureLoadBalancer / createLoadBalancerService) creates for
// tenant Service t in infraNS, with clusterName as given to its cloud-controller-manager and
// its config's infraLabels: named DefaultLoadBalancerName(t); labelled with the tenant
// Service's name and namespace and the cluster name; carrying ALL of t's annotations; ports
// with targetPort = the tenant node port; selector = the cluster's worker VMIs; the tenant's
// externalTrafficPolicy, externalIPs and loadBalancerIP copied.
func InfraService(t *corev1.Service, infraNS, clusterName string, infraLabels map[string]string) *corev1.Service {
	labels := map[string]string{LabelSvcName: t.Name, LabelSvcNS: t.Namespace, LabelCluster: clusterName}
	for k, v := range infraLabels {
		labels[k] = v
	}
	ports := make([]corev1.ServicePort, len(t.Spec.Ports))
	for i, p := range t.Spec.Ports {
		ports[i] = corev1.ServicePort{Name: p.Name, Protocol: p.Protocol, Port: p.Port,
			TargetPort: intstr.FromInt32(p.NodePort)}
	}
	ann := map[string]string{}
	for k, v := range t.Annotations {
		ann[k] = v
	}
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: infraNS, Name: cloudprovider.DefaultLoadBalancerName(t), Labels: labels, Annotations: ann},
		Spec: corev1.ServiceSpec{
			Type:                  corev1.ServiceTypeLoadBalancer,
			Ports:                 ports,
			Selector:              map[string]string{LabelRole: "worker", LabelCluster: clusterName},
			ExternalTrafficPolicy: t.Spec.ExternalTrafficPolicy,
			ExternalIPs:           t.Spec.ExternalIPs,
			LoadBalancerIP:        t.Spec.LoadBalancerIP,
		},
	}
}

// VolumeName is the CSI name external-provisioner gives the volume of tenant PVC pvcUID, which
// the upstream controller uses as DataVolume name and volume handle.
func VolumeName(pvcUID types.UID) string { return VolumePrefix + "-" + string(pvcUID) }

// DataVolume is what the upstream CSI controller (csi-driver pkg/service/controller.go
// CreateVolume) creates for a blank volume: named after the CSI name, labelled with its
// --infra-cluster-labels only, annotated deleteAfterCompletion=false, spec.storage with the
// requested bytes and the infra StorageClass from the tenant StorageClass's
// infraStorageClassName (or none), source blank. No access or volume mode: CDI's
// StorageProfile decides.
func DataVolume(infraNS string, pvcUID types.UID, infraLabels map[string]string, bytes int64, class string) *cdiv1.DataVolume {
	dv := &cdiv1.DataVolume{
		ObjectMeta: metav1.ObjectMeta{Namespace: infraNS, Name: VolumeName(pvcUID), Labels: infraLabels,
			Annotations: map[string]string{annDeleteAfter: "false"}},
		Spec: cdiv1.DataVolumeSpec{
			Source: &cdiv1.DataVolumeSource{Blank: &cdiv1.DataVolumeBlankImage{}},
			Storage: &cdiv1.StorageSpec{Resources: corev1.VolumeResourceRequirements{
				Requests: corev1.ResourceList{corev1.ResourceStorage: *resource.NewScaledQuantity(bytes, 0)}}},
		},
	}
	if class != "" {
		dv.Spec.Storage.StorageClassName = &class
	}
	return dv
}

// PV is the tenant PV external-provisioner writes from the upstream controller's
// CreateVolumeResponse for dv (bound to PVC namespace/name): driver csi.kubevirt.io, handle =
// the DataVolume name, volume attributes bus (scsi unless the StorageClass said otherwise) and
// serial = the DataVolume's UID, plus the provisioner identity external-provisioner adds.
func PV(dv *cdiv1.DataVolume, pvcNamespace, pvcName string, pvcUID types.UID, bytes int64, fsType string) *corev1.PersistentVolume {
	mode := corev1.PersistentVolumeFilesystem
	return &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: dv.Name, Annotations: map[string]string{annProvisioned: DriverName}},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: *resource.NewQuantity(bytes, resource.BinarySI)},
			AccessModes:                   []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimDelete,
			VolumeMode:                    &mode,
			ClaimRef:                      &corev1.ObjectReference{Kind: "PersistentVolumeClaim", Namespace: pvcNamespace, Name: pvcName, UID: pvcUID},
			PersistentVolumeSource: corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{
				Driver: DriverName, VolumeHandle: dv.Name, FSType: fsType,
				VolumeAttributes: map[string]string{"bus": "scsi", "serial": string(dv.UID), attrProvisioner: "1700000000000-8081-" + DriverName},
			}},
		},
	}
}
