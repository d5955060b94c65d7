#!/usr/bin/env bash
# Builds the test harness's binaries and CRDs into bin/ (git-ignored), each keyed by version so
# a second run is a no-op. Everything comes from the Go module proxy; nothing is downloaded
# prebuilt.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin="$root/bin"
tools="$root/hack/tools"
mkdir -p "$bin"

KUBE_VERSION=v1.36.2
# etcd: the version kubernetes $KUBE_VERSION itself requires (hack/tools/go.mod).
ETCD_VERSION=$(cd "$tools" && go list -m -f '{{.Version}}' go.etcd.io/etcd/server/v3)

# build_once NAME VERSION CMD...: runs CMD to produce bin/NAME-VERSION unless it exists, then
# points bin/NAME at it.
build_once() {
	local name=$1 version=$2
	shift 2
	local target="$bin/$name-$version"
	if [[ ! -x "$target" ]]; then
		echo "make bin: building $name $version" >&2
		local start=$SECONDS
		"$@" "$target.tmp"
		mv "$target.tmp" "$target"
		echo "make bin: built $name $version in $((SECONDS - start))s" >&2
	fi
	ln -sfn "$name-$version" "$bin/$name"
}

kube_minor=$(cut -d. -f2 <<<"$KUBE_VERSION")
kube_ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$KUBE_VERSION \
-X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$kube_minor \
-X k8s.io/component-base/version.gitTreeState=clean \
-X k8s.io/component-base/version.buildDate=1970-01-01T00:00:00Z"

go_build() { # go_build PKG LDFLAGS OUT
	(cd "$tools" && go build -trimpath -ldflags "$2" -o "$3" "$1")
}

build_once kube-apiserver "$KUBE_VERSION" go_build k8s.io/kubernetes/cmd/kube-apiserver "$kube_ldflags"
build_once kube-scheduler "$KUBE_VERSION" go_build k8s.io/kubernetes/cmd/kube-scheduler "$kube_ldflags"
build_once kube-controller-manager "$KUBE_VERSION" go_build k8s.io/kubernetes/cmd/kube-controller-manager "$kube_ldflags"
# Real tenant nodes (test/harness/node): the kubelet and kube-proxy of the same release.
build_once kubelet "$KUBE_VERSION" go_build k8s.io/kubernetes/cmd/kubelet "$kube_ldflags"
build_once kube-proxy "$KUBE_VERSION" go_build k8s.io/kubernetes/cmd/kube-proxy "$kube_ldflags"
# kubectl for the clusters' kubeconfigs, only on a machine that has none (Debian ships none).
if [[ -x "$bin/kubectl" ]] || ! command -v kubectl >/dev/null; then
	build_once kubectl "$KUBE_VERSION" go_build k8s.io/kubernetes/cmd/kubectl "$kube_ldflags"
fi
build_once etcd "$ETCD_VERSION" go_build go.etcd.io/etcd/server/v3 "-s -w"

"$root/hack/bin-metallb.sh"
"$root/hack/bin-cluster-autoscaler.sh"
"$root/hack/bin-sidecars.sh"
"$root/hack/bin-helm.sh"
"$root/hack/bin-crds.sh"

"$bin/kube-apiserver" --version
"$bin/etcd" --version | sed -n 1p # sed reads to EOF, so no SIGPIPE under pipefail
