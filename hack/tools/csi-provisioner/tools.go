//go:build tools

// Package tools pins the csi-provisioner sidecar that hack/bin-sidecars.sh builds into bin/.
package tools

import _ "github.com/kubernetes-csi/external-provisioner/v5/cmd/csi-provisioner"
