//go:build deps

// Package deps keeps the pinned dependency set resolvable before every piece is used.
package deps

import (
	_ "github.com/container-storage-interface/spec/lib/go/csi"
	_ "github.com/kubernetes-csi/csi-test/v5/pkg/sanity"
	_ "google.golang.org/grpc"
	_ "k8s.io/autoscaler/cluster-autoscaler/cloudprovider/externalgrpc/protos"
	_ "k8s.io/cloud-provider"
	_ "k8s.io/cloud-provider/app"
	_ "k8s.io/mount-utils"
	_ "kubevirt.io/api/core/v1"
	_ "kubevirt.io/client-go/kubevirt"
	_ "kubevirt.io/containerized-data-importer-api/pkg/apis/core/v1beta1"
	_ "sigs.k8s.io/cluster-api/api/core/v1beta2"
	_ "sigs.k8s.io/controller-runtime/pkg/envtest"
)
