#!/usr/bin/env bash
# Build the pinned third-party binaries the acceptance tests need (vault,
# kube-apiserver, kubectl, etcd, and the clients the tests drive) from the Go
# module proxy into a cache outside the checkout, reusing what is already
# there. A first run builds everything from source: on 2 cores about 20
# minutes when the machine is quiet, up to 55 when other builds share it
# (--core: 15 to 45), with progress every 30 s on stderr.
#
# Usage:
#   scripts/build-tools.sh                  # progress on stderr, paths on stdout
#   set -a; eval "$(scripts/build-tools.sh)"; set +a
#   scripts/build-tools.sh --core           # only Vault, Kubernetes and etcd
#                                           # (make demo / make dev; the first four lines below)
#
# Prints exactly (absolute paths):
#   VAULT_BIN=.../vault-<v>/vault
#   KUBE_APISERVER_BIN=.../kubernetes-<v>/kube-apiserver
#   KUBECTL_BIN=.../kubernetes-<v>/kubectl
#   ETCD_BIN=.../etcd-<v>/etcd
#   EXTERNAL_SECRETS_BIN=.../external-secrets-<v>/external-secrets
#   EXTERNAL_SECRETS_CRDS=.../external-secrets-<v>/crds   (its CRD manifests)
#   GITLAB_VAULT_SECRETS_BIN=.../gitlab-vault-secrets-<v>/gitlab-vault-secrets
#   HVAC_PYTHON=.../hvac-<v>/python3         (Debian hosts: apt-get and dpkg)
#   NODE_VAULT_NODE=.../node-vault-<v>/node  (hosts with node and npm)
#   VSO_BIN=.../vault-secrets-operator-<v>/vault-secrets-operator
#   VSO_CRDS=.../vault-secrets-operator-<v>/crds   (the module's config/crd/bases)
# HVAC_PYTHON and NODE_VAULT_NODE are left out, with a note on stderr, where
# their package manager is missing; the tests that use them then skip (fail
# under CI).
#
# Each tool is built from its own Go module under tools/<name>/ (committed
# go.mod + go.sum), so builds are reproducible. To bump a version: change it
# below AND in tools/<name>/go.mod (see tools/README.md); the script refuses to
# run if the two disagree.
set -euo pipefail

SCOPE=all
case "${1:-}" in
--core) SCOPE=core ;;
"") ;;
*) printf 'usage: %s [--core]\n' "$0" >&2; exit 2 ;;
esac

# --- Pinned versions: the one place to change them. -------------------------
VAULT_VERSION=v1.21.0       # github.com/hashicorp/vault (v1.21.3/.4 don't build)
KUBERNETES_VERSION=v1.37.2  # k8s.io/kubernetes; staging modules at v0.37.2
ETCD_VERSION=v3.6.16        # go.etcd.io/etcd/server/v3
EXTERNAL_SECRETS_VERSION=v0.16.2 # github.com/external-secrets/external-secrets (later ones don't build)
VSO_VERSION=v0.10.0         # github.com/hashicorp/vault-secrets-operator (the only version served)
# -----------------------------------------------------------------------------

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE_ROOT="${XDG_CACHE_HOME:-${HOME:?HOME or XDG_CACHE_HOME must be set}/.cache}/vault-plugin-scanner"
mkdir -p "$CACHE_ROOT"
CACHE_ROOT="$(cd "$CACHE_ROOT" && pwd)"

VAULT_DIR="$CACHE_ROOT/vault-$VAULT_VERSION"
KUBERNETES_DIR="$CACHE_ROOT/kubernetes-$KUBERNETES_VERSION"
ETCD_DIR="$CACHE_ROOT/etcd-$ETCD_VERSION"
EXTERNAL_SECRETS_DIR="$CACHE_ROOT/external-secrets-$EXTERNAL_SECRETS_VERSION"
VSO_DIR="$CACHE_ROOT/vault-secrets-operator-$VSO_VERSION"

log() { printf '%s\n' "$*" >&2; }
die() { log "build-tools: $*"; exit 1; }

command -v go >/dev/null 2>&1 || die "go is not on PATH"

# Same settings for every go command run here: only the local toolchain, no
# cgo, no go.work from a parent directory, and go.mod/go.sum used as committed
# (-mod=readonly: a missing go.sum line is an error, never a silent update).
GO_ENV=(env GOTOOLCHAIN=local CGO_ENABLED=0 GOWORK=off GOFLAGS="-mod=readonly -buildvcs=false")
go_env() { "${GO_ENV[@]}" "$@"; }

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
BUILD_PID=
cleanup() {
	if [[ -n "$BUILD_PID" ]]; then kill "$BUILD_PID" 2>/dev/null || true; fi
	if [[ -n "$BUILD_TMPDIR" ]]; then rm -rf "$BUILD_TMPDIR"; fi
}
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

# duration SECONDS -> "12m05s" (or "45s").
duration() {
	if (($1 >= 60)); then printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); else printf '%ds' "$1"; fi
}

# with_progress LABEL ESTIMATE CMD... runs CMD (output to stderr) and, while
# it runs, says on stderr every BUILD_PROGRESS_INTERVAL seconds (default 30)
# what is building and for how long, so a first build of many minutes never
# looks hung. Returns CMD's exit status.
with_progress() {
	local label="$1" estimate="$2"
	shift 2
	local interval="${BUILD_PROGRESS_INTERVAL:-30}" start=$SECONDS next status=0
	next=$((start + interval))
	"$@" >&2 &
	BUILD_PID=$!
	while kill -0 "$BUILD_PID" 2>/dev/null; do
		sleep 1
		if ((SECONDS >= next)) && kill -0 "$BUILD_PID" 2>/dev/null; then
			log "  ... $label: $(duration $((SECONDS - start))) so far (usually $estimate on 2 cores)"
			next=$((next + interval))
		fi
	done
	wait "$BUILD_PID" || status=$?
	BUILD_PID=
	return "$status"
}

# go_build_in DIR ARGS... becomes `go build ARGS...` in DIR at low priority.
# It execs, so run it only in the background (with_progress does): the job's
# pid is then go's own, which cleanup can stop.
go_build_in() {
	cd "$1" && shift && exec "${GO_ENV[@]}" nice -n 10 go build "$@"
}

# Printed once, before the first tool that is not cached is built.
FIRST_BUILD_NOTED=
note_first_build() {
	[[ -n "$FIRST_BUILD_NOTED" ]] && return 0
	FIRST_BUILD_NOTED=1
	log "build-tools: building pinned tools from source into $CACHE_ROOT, once (later runs reuse them)."
	if [[ ! -x "$VAULT_DIR/vault" || ! -x "$KUBERNETES_DIR/kube-apiserver" || ! -x "$ETCD_DIR/etcd" ]]; then
		log "build-tools: a first build of Vault, Kubernetes and etcd takes 15 minutes on 2 quiet cores, up to 45 on busy ones (Vault alone 9-23)."
	fi
}

# build NAME VERSION TOOL_MODULE_DIR PACKAGE OUTPUT ESTIMATE LDFLAGS
# ESTIMATE is the cold build measured on 2 cores ("9-23 min").
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
	note_first_build
	mkdir -p "$(dirname "$out")"
	# We hold the lock: temp dirs left by a killed earlier run are stale.
	rm -rf "$(dirname "$out")/.build-$name".*
	local start
	BUILD_TMPDIR="$(mktemp -d "$(dirname "$out")/.build-$name.XXXXXX")"
	log "building $name $version (usually $estimate on 2 cores)..."
	start=$SECONDS
	with_progress "$name $version" "$estimate" go_build_in "$moddir" \
		-trimpath -ldflags "$ldflags" -o "$BUILD_TMPDIR/$name" "$pkg" ||
		die "building $name $version failed after $(duration $((SECONDS - start)))"
	chmod 0755 "$BUILD_TMPDIR/$name"
	mv -f "$BUILD_TMPDIR/$name" "$out" # same filesystem: atomic
	rm -rf "$BUILD_TMPDIR"
	BUILD_TMPDIR=
	log "built $name $version in $(duration $((SECONDS - start))): $out"
}

# --- etcd (fast; tools/etcd/main.go calls etcdmain.Main) ----------------------
ETCD_MOD="$ROOT/tools/etcd"
if [[ ! -x "$ETCD_DIR/etcd" ]]; then
	check_pin "$ETCD_MOD" go.etcd.io/etcd/server/v3 "$ETCD_VERSION"
fi
build etcd "$ETCD_VERSION" "$ETCD_MOD" . "$ETCD_DIR/etcd" "0.5-4 min" "-s -w"

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
		"$KUBERNETES_DIR/kube-apiserver" "3-16 min" "$kube_ldflags"
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
build vault "$VAULT_VERSION" "$VAULT_MOD" github.com/hashicorp/vault "$VAULT_DIR/vault" "9-23 min" "${vault_ldflags:-}"

print_core_paths() {
	printf 'VAULT_BIN=%s\n' "$VAULT_DIR/vault"
	printf 'KUBE_APISERVER_BIN=%s\n' "$KUBERNETES_DIR/kube-apiserver"
	printf 'KUBECTL_BIN=%s\n' "$KUBERNETES_DIR/kubectl"
	printf 'ETCD_BIN=%s\n' "$ETCD_DIR/etcd"
}
if [[ "$SCOPE" == core ]]; then
	print_core_paths
	exit 0
fi

# --- GitLab Runner's Vault code (tools/gitlab-vault-secrets) -----------------
# Its own module, so neither the plugin nor the acceptance tests pull the
# runner's dependencies. The runner module is served as a pseudo-version.
GITLAB_RUNNER_VERSION=v1.11.1-0.20260903214710-fc1f1862bd91 # gitlab.com/gitlab-org/gitlab-runner
GITLAB_VAULT_SECRETS_DIR="$CACHE_ROOT/gitlab-vault-secrets-$GITLAB_RUNNER_VERSION"
GITLAB_MOD="$ROOT/tools/gitlab-vault-secrets"
if [[ ! -x "$GITLAB_VAULT_SECRETS_DIR/gitlab-vault-secrets" ]]; then
	check_pin "$GITLAB_MOD" gitlab.com/gitlab-org/gitlab-runner "$GITLAB_RUNNER_VERSION"
fi
build gitlab-vault-secrets "$GITLAB_RUNNER_VERSION" "$GITLAB_MOD" . \
	"$GITLAB_VAULT_SECRETS_DIR/gitlab-vault-secrets" "under 1 min" "-s -w"

# --- python3-hvac and node-vault (tests/acceptance/clients_test.go) ---------
# Fetched as packages, not built: Debian's python3-hvac and its dependencies
# unpacked (dpkg-deb -x, nothing installed) and run with Debian's python3
# through a wrapper; node-vault installed with npm ci from tools/node-vault's
# lock file. Each lands in a temp dir that is renamed into place when
# complete. Hosts without apt-get/dpkg-deb or node/npm skip them (a note on
# stderr, no line on stdout).
HVAC_DEB_VERSION=0.11.2-1 # Debian bookworm's python3-hvac
NODE_VAULT_VERSION=0.12.0 # npm; must match tools/node-vault/package.json
HVAC_DIR="$CACHE_ROOT/hvac-${HVAC_DEB_VERSION%-*}"
NODE_VAULT_DIR="$CACHE_ROOT/node-vault-$NODE_VAULT_VERSION"

# fetch_into NAME FINAL_DIR FUNCTION: runs FUNCTION TMPDIR, then renames
# TMPDIR to FINAL_DIR.
fetch_into() {
	local name="$1" final="$2" fn="$3" start=$SECONDS
	lock_cache
	[[ -d "$final" ]] && return 0
	rm -rf "$CACHE_ROOT/.fetch-$name".*
	BUILD_TMPDIR="$(mktemp -d "$CACHE_ROOT/.fetch-$name.XXXXXX")"
	log "fetching $name..."
	"$fn" "$BUILD_TMPDIR" || die "fetching $name failed"
	mv "$BUILD_TMPDIR" "$final"
	BUILD_TMPDIR=
	log "fetched $name in $(duration $((SECONDS - start))): $final"
}

hvac_python() { # the interpreter Debian's packages are built for
	if [[ -x /usr/bin/python3 ]]; then echo /usr/bin/python3; else command -v python3; fi
}

fetch_hvac() {
	local tmp="$1" python deb
	python="$(hvac_python)"
	local debs=(python3-hvac="$HVAC_DEB_VERSION" python3-requests python3-urllib3 python3-idna
		python3-certifi python3-chardet python3-charset-normalizer python3-six python3-pyhcl)
	local apt_opts=()
	# As root, apt's download sandbox user cannot write the temp dir.
	if [[ $EUID -eq 0 ]]; then apt_opts=(-o APT::Sandbox::User=root); fi
	if ! (cd "$tmp" && apt-get "${apt_opts[@]}" -qq download "${debs[@]}") >&2; then
		[[ $EUID -eq 0 ]] || return 1
		log "apt-get download failed; refreshing the package lists (apt-get update) and retrying"
		apt-get -qq update >&2 || return 1
		(cd "$tmp" && apt-get "${apt_opts[@]}" -qq download "${debs[@]}") >&2 || return 1
	fi
	for deb in "$tmp"/*.deb; do dpkg-deb -x "$deb" "$tmp/root" || return 1; done
	rm -f "$tmp"/*.deb
	cat >"$tmp/python3" <<-WRAPPER
		#!/bin/sh
		# python3 with Debian's python3-hvac $HVAC_DEB_VERSION and its dependencies (build-tools.sh)
		PYTHONPATH="$HVAC_DIR/root/usr/lib/python3/dist-packages\${PYTHONPATH:+:\$PYTHONPATH}" exec "$python" -s "\$@"
	WRAPPER
	chmod 0755 "$tmp/python3"
	PYTHONPATH="$tmp/root/usr/lib/python3/dist-packages" "$python" -s -c 'import hvac, requests' >&2
}

fetch_node_vault() {
	local tmp="$1" node
	node="$(command -v node)"
	cp "$ROOT/tools/node-vault/package.json" "$ROOT/tools/node-vault/package-lock.json" "$tmp/" &&
		npm ci --prefix "$tmp" --ignore-scripts --no-audit --no-fund --loglevel=error >&2 || return 1
	grep -q "\"version\": \"$NODE_VAULT_VERSION\"" "$tmp/node_modules/node-vault/package.json" ||
		{ log "tools/node-vault does not install node-vault $NODE_VAULT_VERSION"; return 1; }
	cat >"$tmp/node" <<-WRAPPER
		#!/bin/sh
		# node with node-vault $NODE_VAULT_VERSION (build-tools.sh)
		NODE_PATH="$NODE_VAULT_DIR/node_modules" exec "$node" "\$@"
	WRAPPER
	chmod 0755 "$tmp/node"
}

if [[ -x "$HVAC_DIR/python3" ]]; then
	log "python3-hvac $HVAC_DEB_VERSION: cached"
elif command -v apt-get >/dev/null 2>&1 && command -v dpkg-deb >/dev/null 2>&1 && [[ -n "$(hvac_python)" ]]; then
	fetch_into "python3-hvac-$HVAC_DEB_VERSION" "$HVAC_DIR" fetch_hvac
else
	log "python3-hvac: skipped (needs apt-get, dpkg-deb and python3: a Debian-like host)"
fi
if [[ -x "$NODE_VAULT_DIR/node" ]]; then
	log "node-vault $NODE_VAULT_VERSION: cached"
elif command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
	fetch_into "node-vault-$NODE_VAULT_VERSION" "$NODE_VAULT_DIR" fetch_node_vault
else
	log "node-vault: skipped (needs node and npm)"
fi

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
	"$EXTERNAL_SECRETS_DIR/external-secrets" "3.5-15 min" "-s -w"
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

# --- vault-secrets-operator (VSO): the consumer tested by vso_test.go ---------
# Built unmodified from its module root (its main package); its CRDs are
# copied next to the binary, since the tests install them.
VSO_MOD="$ROOT/tools/vault-secrets-operator"
VSO_PKG=github.com/hashicorp/vault-secrets-operator
if [[ ! -x "$VSO_DIR/vault-secrets-operator" || ! -d "$VSO_DIR/crds" ]]; then
	check_pin "$VSO_MOD" "$VSO_PKG" "$VSO_VERSION"
	vso_minor="${VSO_VERSION#v0.}"
	vso_minor="${vso_minor%%.*}"
	vso_ldflags="-s -w"
	for kv in "GitVersion=$VSO_VERSION" Major=0 "Minor=$vso_minor" GitTreeState=clean \
		"BuildDate=$(module_time "$VSO_MOD" "$VSO_PKG")"; do
		vso_ldflags+=" -X $VSO_PKG/internal/version.$kv"
	done
	build vault-secrets-operator "$VSO_VERSION" "$VSO_MOD" "$VSO_PKG" \
		"$VSO_DIR/vault-secrets-operator" "2-8 min" "$vso_ldflags"
	vso_reports="$("$VSO_DIR/vault-secrets-operator" -version -output=json | sed -n 's/.*"gitVersion": *"\([^"]*\)".*/\1/p')"
	[[ "$vso_reports" == "$VSO_VERSION" ]] ||
		die "$VSO_DIR/vault-secrets-operator reports version '$vso_reports', want $VSO_VERSION"
	lock_cache # the CRD copy below, like the build, is one run's at a time
	# The binary may be cached while the module cache was emptied: fetch it.
	vso_src="$(cd "$VSO_MOD" && go_env go mod download "$VSO_PKG" && go_env go list -m -f '{{.Dir}}' "$VSO_PKG")"
	[[ -n "$vso_src" && -d "$vso_src/config/crd/bases" ]] ||
		die "cannot locate $VSO_PKG's config/crd/bases in the module cache"
	rm -rf "$VSO_DIR/.crds.tmp"
	mkdir -p "$VSO_DIR/.crds.tmp"
	cp "$vso_src"/config/crd/bases/*.yaml "$VSO_DIR/.crds.tmp/"
	chmod 0644 "$VSO_DIR/.crds.tmp"/*.yaml
	rm -rf "$VSO_DIR/crds"
	mv "$VSO_DIR/.crds.tmp" "$VSO_DIR/crds"
else
	log "vault-secrets-operator $VSO_VERSION: cached"
fi

print_core_paths
printf 'EXTERNAL_SECRETS_BIN=%s\n' "$EXTERNAL_SECRETS_DIR/external-secrets"
printf 'EXTERNAL_SECRETS_CRDS=%s\n' "$EXTERNAL_SECRETS_DIR/crds"
printf 'GITLAB_VAULT_SECRETS_BIN=%s\n' "$GITLAB_VAULT_SECRETS_DIR/gitlab-vault-secrets"
if [[ -x "$HVAC_DIR/python3" ]]; then printf 'HVAC_PYTHON=%s\n' "$HVAC_DIR/python3"; fi
if [[ -x "$NODE_VAULT_DIR/node" ]]; then printf 'NODE_VAULT_NODE=%s\n' "$NODE_VAULT_DIR/node"; fi
printf 'VSO_BIN=%s\n' "$VSO_DIR/vault-secrets-operator"
printf 'VSO_CRDS=%s\n' "$VSO_DIR/crds"
