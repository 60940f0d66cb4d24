// Command vault-plugin-scanner is the Vault plugin binary; Vault starts it.
package main

import (
	"os"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/plugin"

	"github.com/vault-plugin-scanner/vault-plugin-scanner/backend"
)

// version is set at build time: -ldflags "-X main.version=v1.2.3".
var version = "v0.0.0-dev"

func main() {
	if err := plugin.ServeMultiplex(&plugin.ServeOpts{BackendFactoryFunc: backend.Factory(version)}); err != nil {
		hclog.New(&hclog.LoggerOptions{}).Error("plugin shutting down", "error", err)
		os.Exit(1)
	}
}
