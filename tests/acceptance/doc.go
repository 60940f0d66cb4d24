// Package acceptance holds the end-to-end tests of vault-plugin-scanner: a
// real `vault server` with the built plugin, a real kube-apiserver backed by
// etcd, and real kubectl and Vault Agent. See stack/ for the harness and
// cmd/demo for `make demo`.
//
// Tool paths come from VAULT_BIN, KUBE_APISERVER_BIN, KUBECTL_BIN and
// ETCD_BIN (else scripts/build-tools.sh is run); the plugin from
// PLUGIN_BINARY (default ../../bin/vault-plugin-scanner) and PLUGIN_VERSION
// (default v0.1.0).
package acceptance
