#!/usr/bin/env bash
# Install the tools `make k8s-check` uses, idempotently, under $ROOMLOG_CACHE/k8s (outside the
# clone): kustomize and kubeconform built with `go install` (Go module proxy), and the
# kubernetes-validate wheel (PyPI), whose bundled Kubernetes JSON schemas kubeconform reads
# offline. Only the first run needs the registries; after that nothing is fetched.
#
#   scripts/k8s.sh install     install what is missing (make k8s-install)
#   scripts/k8s.sh paths       print KEY=VALUE lines: where the tools are
set -euo pipefail
[[ "${1:-}" == "--help" || "${1:-}" == "-h" || $# -eq 0 ]] && { sed -n '2,9s/^# \{0,1\}//p' "$0"; exit 0; }

cache=${ROOMLOG_CACHE:-$HOME/.cache/roomlog}
dir=$cache/k8s
KUSTOMIZE_VERSION=v5.8.1
KUBECONFORM_VERSION=v0.7.0
KUBERNETES_VALIDATE_VERSION=1.37.0
wheel=$dir/wheels/kubernetes_validate-$KUBERNETES_VALIDATE_VERSION-py3-none-any.whl

go_install() {  # package version binary
  local pkg=$1 version=$2 name=$3 stamp=$dir/bin/.$3.version
  if [[ -x "$dir/bin/$name" && -f "$stamp" && "$(cat "$stamp")" == "$pkg@$version" ]]; then return 0; fi
  local go
  go=$(command -v go || echo /usr/local/go/bin/go)
  [[ -x "$go" ]] || { echo "k8s.sh: Go is needed to install $name (go install $pkg@$version)" >&2; exit 1; }
  echo "==> go install $pkg@$version (into $dir/bin)"
  mkdir -p "$dir/bin"
  (cd "$dir" && GOBIN="$dir/bin" GOTOOLCHAIN=local "$go" install "$pkg@$version")
  echo "$pkg@$version" >"$stamp"
}

install() {
  go_install sigs.k8s.io/kustomize/kustomize/v5 "$KUSTOMIZE_VERSION" kustomize
  go_install github.com/yannh/kubeconform/cmd/kubeconform "$KUBECONFORM_VERSION" kubeconform
  if [[ ! -s "$wheel" ]]; then
    echo "==> downloading kubernetes-validate==$KUBERNETES_VALIDATE_VERSION (Kubernetes JSON schemas)"
    local pip=$cache/bootstrap/bin/pip
    [[ -x "$pip" ]] || pip="python3 -m pip"
    mkdir -p "$dir/wheels"
    $pip download -q --no-deps --only-binary=:all: -d "$dir/wheels" "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
  fi
}

case "$1" in
  install) install ;;
  paths)
    echo "KUSTOMIZE=$dir/bin/kustomize"
    echo "KUBECONFORM=$dir/bin/kubeconform"
    echo "SCHEMA_WHEEL=$wheel"
    echo "K8S_CACHE=$dir" ;;
  *) echo "k8s.sh: unknown command '$1' (install | paths)" >&2; exit 2 ;;
esac
