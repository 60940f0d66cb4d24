#!/usr/bin/env bash
# Build the pinned third-party binaries the acceptance tests need (vault,
# kube-apiserver, kubectl, etcd) from the Go module proxy into a cache outside
# the checkout, reusing binaries that are already there.
#
# Usage:
#   scripts/build-tools.sh                  # progress on stderr, paths on stdout
#   set -a; eval "$(scripts/build-tools.sh)"; set +a
#
# Prints exactly (absolute paths):
#   VAULT_BIN=.../vault-<v>/vault
#   KUBE_APISERVER_BIN=.../kubernetes-<v>/kube-apiserver
#   KUBECTL_BIN=.../kubernetes-<v>/kubectl
#   ETCD_BIN=.../etcd-<v>/etcd
#   EXTERNAL_SECRETS_BIN=.../external-secrets-<v>/external-secrets
#   EXTERNAL_SECRETS_CRDS=.../external-secrets-<v>/crds   (its CRD manifests)
#
# Each tool is built from its own Go module under tools/<name>/ (committed
# go.mod + go.sum), so builds are reproducible. To bump a version: change it
# below AND in tools/<name>/go.mod (see tools/README.md); the script refuses to
# run if the two disagree.
set -euo pipefail

# --- Pinned versions: the one place to change them. -------------------------
VAULT_VERSION=v1.21.0       # github.com/hashicorp/vault (v1.21.3/.4 don't build)
KUBERNETES_VERSION=v1.37.2  # k8s.io/kubernetes; staging modules at v0.37.2
ETCD_VERSION=v3.6.16        # go.etcd.io/etcd/server/v3
EXTERNAL_SECRETS_VERSION=v0.16.2 # github.com/external-secrets/external-secrets (later ones don't build)
# -----------------------------------------------------------------------------

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE_ROOT="${XDG_CACHE_HOME:-${HOME:?HOME or XDG_CACHE_HOME must be set}/.cache}/vault-plugin-scanner"
mkdir -p "$CACHE_ROOT"
CACHE_ROOT="$(cd "$CACHE_ROOT" && pwd)"

VAULT_DIR="$CACHE_ROOT/vault-$VAULT_VERSION"
KUBERNETES_DIR="$CACHE_ROOT/kubernetes-$KUBERNETES_VERSION"
ETCD_DIR="$CACHE_ROOT/etcd-$ETCD_VERSION"
EXTERNAL_SECRETS_DIR="$CACHE_ROOT/external-secrets-$EXTERNAL_SECRETS_VERSION"

log() { printf '%s\n' "$*" >&2; }
die() { log "build-tools: $*"; exit 1; }

command -v go >/dev/null 2>&1 || die "go is not on PATH"

# Same settings for every go command run here: only the local toolchain, no
# cgo, no go.work from a parent directory, and go.mod/go.sum used as committed
# (-mod=readonly: a missing go.sum line is an error, never a silent update).
go_env() {
	env GOTOOLCHAIN=local CGO_ENABLED=0 GOWORK=off \
		GOFLAGS="-mod=readonly -buildvcs=false" "$@"
}

# module_version DIR MODULE -> the version DIR's go.mod selects (after replace).
module_version() {
	(cd "$1" && go_env go list -m -f '{{if .Replace}}{{.Replace.Version}}{{else}}{{.Version}}{{end}}' "$2")
}

# module_time DIR MODULE -> the module version's publication time (RFC 3339).
module_time() {
	(cd "$1" && go_env go list -m -f '{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}' "$2")
}

check_pin() { # DIR MODULE WANT
	local got
	got="$(module_version "$1" "$2")" || die "cannot read $2 from $1/go.mod"
	[[ "$got" == "$3" ]] ||
		die "$1/go.mod selects $2 $got but scripts/build-tools.sh pins $3; update both (see tools/README.md)"
}

# A build writes into a temp dir next to its output and only then mv's the
# binary into place, so an interrupted build never leaves a half binary.
BUILD_TMPDIR=
cleanup() { if [[ -n "$BUILD_TMPDIR" ]]; then rm -rf "$BUILD_TMPDIR"; fi; }
trap cleanup EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM

LOCK_HELD=
lock_cache() {
	[[ -n "$LOCK_HELD" ]] && return 0
	LOCK_HELD=1
	if command -v flock >/dev/null 2>&1; then
		exec 9>"$CACHE_ROOT/.lock"
		if ! flock -n 9; then
			log "waiting for another build-tools.sh to finish..."
			flock 9
		fi
	fi
}

# build NAME VERSION TOOL_MODULE_DIR PACKAGE OUTPUT ESTIMATE LDFLAGS
build() {
	local name="$1" version="$2" moddir="$3" pkg="$4" out="$5" estimate="$6" ldflags="$7"
	if [[ -x "$out" ]]; then
		log "$name $version: cached"
		return 0
	fi
	lock_cache
	if [[ -x "$out" ]]; then # built by another invocation while we waited
		log "$name $version: cached"
		return 0
	fi
	mkdir -p "$(dirname "$out")"
	# We hold the lock: temp dirs left by a killed earlier run are stale.
	rm -rf "$(dirname "$out")/.build-$name".*
	local start
	BUILD_TMPDIR="$(mktemp -d "$(dirname "$out")/.build-$name.XXXXXX")"
	log "building $name $version (about $estimate)..."
	start=$SECONDS
	(cd "$moddir" && go_env nice -n 10 go build -trimpath -ldflags "$ldflags" -o "$BUILD_TMPDIR/$name" "$pkg") >&2 ||
		die "building $name $version failed"
	chmod 0755 "$BUILD_TMPDIR/$name"
	mv -f "$BUILD_TMPDIR/$name" "$out" # same filesystem: atomic
	rm -rf "$BUILD_TMPDIR"
	BUILD_TMPDIR=
	log "built $name $version in $((SECONDS - start))s: $out"
}

# --- etcd (fast; tools/etcd/main.go calls etcdmain.Main) ----------------------
ETCD_MOD="$ROOT/tools/etcd"
if [[ ! -x "$ETCD_DIR/etcd" ]]; then
	check_pin "$ETCD_MOD" go.etcd.io/etcd/server/v3 "$ETCD_VERSION"
fi
build etcd "$ETCD_VERSION" "$ETCD_MOD" . "$ETCD_DIR/etcd" "1 min" "-s -w"

# --- kubernetes: kube-apiserver + kubectl ----------------------------------
KUBE_MOD="$ROOT/tools/kubernetes"
if [[ ! -x "$KUBERNETES_DIR/kube-apiserver" || ! -x "$KUBERNETES_DIR/kubectl" ]]; then
	check_pin "$KUBE_MOD" k8s.io/kubernetes "$KUBERNETES_VERSION"
	# Staging modules are published as v0.<minor>.<patch> of v1.<minor>.<patch>.
	staging_version="v0.${KUBERNETES_VERSION#v1.}"
	for m in k8s.io/api k8s.io/apiserver k8s.io/client-go k8s.io/component-base k8s.io/kubectl; do
		check_pin "$KUBE_MOD" "$m" "$staging_version"
	done
	kube_minor="${KUBERNETES_VERSION#v1.}"
	kube_minor="${kube_minor%%.*}"
	kube_date="$(module_time "$KUBE_MOD" k8s.io/kubernetes)"
	# What hack/lib/version.sh sets, for both version packages (component-base
	# is what kube-apiserver's /version serves; client-go's is kubectl's).
	kube_ldflags="-s -w"
	for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		kube_ldflags+=" -X $p.gitVersion=$KUBERNETES_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$kube_minor"
		kube_ldflags+=" -X $p.gitTreeState=clean -X $p.buildDate=$kube_date"
	done
	build kube-apiserver "$KUBERNETES_VERSION" "$KUBE_MOD" k8s.io/kubernetes/cmd/kube-apiserver \
		"$KUBERNETES_DIR/kube-apiserver" "8 min" "$kube_ldflags"
	build kubectl "$KUBERNETES_VERSION" "$KUBE_MOD" k8s.io/kubernetes/cmd/kubectl \
		"$KUBERNETES_DIR/kubectl" "1 min after kube-apiserver" "$kube_ldflags"
else
	log "kube-apiserver $KUBERNETES_VERSION: cached"
	log "kubectl $KUBERNETES_VERSION: cached"
fi

# --- vault ---------------------------------------------------------------
VAULT_MOD="$ROOT/tools/vault"
if [[ ! -x "$VAULT_DIR/vault" ]]; then
	check_pin "$VAULT_MOD" github.com/hashicorp/vault "$VAULT_VERSION"
	# An empty BuildDate makes Vault's PluginEnv (sys view for plugins) fail to
	# parse it, so set it, like Vault's own build, to the release's date.
	vault_date="$(module_time "$VAULT_MOD" github.com/hashicorp/vault)"
	vault_ldflags="-s -w -X github.com/hashicorp/vault/version.BuildDate=$vault_date"
fi
build vault "$VAULT_VERSION" "$VAULT_MOD" github.com/hashicorp/vault "$VAULT_DIR/vault" "6 min" "${vault_ldflags:-}"

# --- external-secrets: the operator, unmodified, and its CRDs -----------------
# Its main package is the module root; every provider SDK is compiled in
# (v0.16.2 has no build tags to leave them out). The CRDs the controller
# watches are copied from the module next to the binary.
ESO_MOD="$ROOT/tools/external-secrets"
ESO_MODULE=github.com/external-secrets/external-secrets
if [[ ! -x "$EXTERNAL_SECRETS_DIR/external-secrets" || ! -d "$EXTERNAL_SECRETS_DIR/crds" ]]; then
	check_pin "$ESO_MOD" "$ESO_MODULE" "$EXTERNAL_SECRETS_VERSION"
fi
build external-secrets "$EXTERNAL_SECRETS_VERSION" "$ESO_MOD" "$ESO_MODULE" \
	"$EXTERNAL_SECRETS_DIR/external-secrets" "15 min" "-s -w"
if [[ ! -d "$EXTERNAL_SECRETS_DIR/crds" ]]; then
	lock_cache
	eso_src="$(cd "$ESO_MOD" && go_env go mod download "$ESO_MODULE" &&
		go_env go list -m -f '{{.Dir}}' "$ESO_MODULE")" ||
		die "cannot locate the $ESO_MODULE module"
	rm -rf "$EXTERNAL_SECRETS_DIR"/.crds.*
	eso_tmp="$(mktemp -d "$EXTERNAL_SECRETS_DIR/.crds.XXXXXX")"
	cp "$eso_src"/config/crds/bases/*external-secrets.io_*.yaml "$eso_tmp"/ ||
		die "copying the external-secrets CRDs failed"
	chmod 0644 "$eso_tmp"/*.yaml
	chmod 0755 "$eso_tmp"
	mv "$eso_tmp" "$EXTERNAL_SECRETS_DIR/crds"
	log "external-secrets $EXTERNAL_SECRETS_VERSION: CRDs in $EXTERNAL_SECRETS_DIR/crds"
fi

printf 'VAULT_BIN=%s\n' "$VAULT_DIR/vault"
printf 'KUBE_APISERVER_BIN=%s\n' "$KUBERNETES_DIR/kube-apiserver"
printf 'KUBECTL_BIN=%s\n' "$KUBERNETES_DIR/kubectl"
printf 'ETCD_BIN=%s\n' "$ETCD_DIR/etcd"
printf 'EXTERNAL_SECRETS_BIN=%s\n' "$EXTERNAL_SECRETS_DIR/external-secrets"
printf 'EXTERNAL_SECRETS_CRDS=%s\n' "$EXTERNAL_SECRETS_DIR/crds"
