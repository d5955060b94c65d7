//go:build tools

// Package tools pins the csi-attacher sidecar that hack/bin-sidecars.sh builds into bin/.
package tools

import _ "github.com/kubernetes-csi/external-attacher/v4/cmd/csi-attacher"
