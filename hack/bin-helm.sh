#!/usr/bin/env bash
# Builds helm from the Go module proxy into bin/helm-$HELM_VERSION.d/helm and points bin/helm at
# it. deploy/ charts are rendered and linted with it (test/e2e/deploy). Skipped when the
# versioned binary exists. Helm has no Debian package, and nothing is downloaded prebuilt.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin=$root/bin
HELM_VERSION=v3.22.0
# Kubernetes version helm assumes for template/lint (Capabilities.KubeVersion): that of the
# k8s.io modules helm $HELM_VERSION builds with (client-go v0.37 = Kubernetes 1.37), as helm's
# own Makefile sets it. Without it a go-installed helm claims Kubernetes v1.20.
K8S_MAJOR=1
K8S_MINOR=37

die() { echo "bin-helm: error: $*" >&2; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1fs", b - a }'; }

dir=$bin/helm-$HELM_VERSION.d
link() {
	if [[ $(readlink "$bin/helm" 2>/dev/null) != "helm-$HELM_VERSION.d/helm" ]]; then
		ln -sfn "helm-$HELM_VERSION.d/helm" "$bin/helm"
	fi
}

if [[ -x $dir/helm ]]; then
	link
	exit 0
fi

command -v go >/dev/null || die "go is not on PATH"
start=$(now)
echo "bin-helm: building $dir/helm"
mkdir -p "$bin"
tmp=$dir.tmp.$$
trap 'rm -rf "$tmp"' EXIT
rm -rf "$tmp"
# helm's version package reads its version from these ldflags (as its Makefile sets them).
GOWORK=off GOFLAGS=-trimpath GOBIN=$tmp go install \
	-ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION \
		-X helm.sh/helm/v3/internal/version.gitTreeState=clean \
		-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=$K8S_MAJOR -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$K8S_MINOR \
		-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=$K8S_MAJOR -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$K8S_MINOR" \
	"helm.sh/helm/v3/cmd/helm@$HELM_VERSION" ||
	die "go install helm.sh/helm/v3/cmd/helm@$HELM_VERSION failed"
"$tmp/helm" version --short >/dev/null || die "the built helm does not run"
rm -rf "$dir"
mv "$tmp" "$dir"
link
echo "bin-helm: built $dir/helm ($("$dir/helm" version --short)) in $(since "$start")"
