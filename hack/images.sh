#!/usr/bin/env bash
# make images: OCI images of tenantcloud's four programs and of the upstream binaries
# hack/bin.sh built (CSI sidecars, cluster-autoscaler) into bin/images/oci, an OCI image
# layout; with PUSH=1 also pushed to $REGISTRY. No Docker engine: hack/tools/imagebuild writes
# the images with go-containerregistry. See hack/tools/imagebuild/main.go for what is inside.
#
# Environment (the Makefile passes them): VERSION (tag and label of our images), LDFLAGS (the
# Makefile's, which set pkg/version.Version), REGISTRY (default ghcr.io/tenantcloud, the charts'
# default), PUSH (non-empty: push), SOURCE_DATE_EPOCH (every time stamp; default 0, as ko's,
# so an image whose binary did not change — a sidecar, say — keeps its digest from commit to
# commit, and its cached layers stay valid).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
: "${VERSION:?VERSION must be set}" "${LDFLAGS:?LDFLAGS must be set}"
REGISTRY=${REGISTRY:-ghcr.io/tenantcloud}
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-0}
revision=$(git rev-parse HEAD 2>/dev/null || true)
start=$SECONDS

# Static, path-free binaries: the images have no C library, and -trimpath keeps the build
# directory out of them (reproducible across checkouts).
mkdir -p bin/static
CGO_ENABLED=0 GOOS=linux GOARCH=amd64 go build -trimpath -ldflags "$LDFLAGS" -o bin/static/ \
	./cmd/ccm ./cmd/csi-controller ./cmd/csi-node ./cmd/autoscaler-provider
GOWORK=off go build -C hack/tools/imagebuild -trimpath -o "$root/bin/imagebuild" .

args=(build --bin bin --static bin/static --out bin/images --registry "$REGISTRY"
	--version "$VERSION" --revision "$revision" --source-date-epoch "$SOURCE_DATE_EPOCH")
[[ -n ${PUSH:-} ]] && args+=(--push)
bin/imagebuild "${args[@]}"
echo "make images: done in $((SECONDS - start))s"
