package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"

	vaultapi "github.com/hashicorp/vault/api"

	"github.com/vault-plugin-scanner/vault-plugin-scanner/tests/acceptance/stack"
)

// timer is one of Vault's telemetry timers over an interval.
type timer struct {
	Count int
	Mean  float64 // ms
}

// vaultTimers reads Vault's in-memory telemetry (sys/metrics: the last
// finished 10-second interval) and returns its timers by name.
func vaultTimers(ctx context.Context, vc *vaultapi.Client) (map[string]timer, error) {
	resp, err := vc.Logical().ReadRawWithContext(ctx, "sys/metrics")
	if err != nil {
		return nil, fmt.Errorf("sys/metrics: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	var m struct {
		Samples []struct {
			Name  string
			Count int
			Mean  float64
		}
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("sys/metrics: %w", err)
	}
	out := map[string]timer{}
	for _, s := range m.Samples {
		out[s.Name] = timer{Count: s.Count, Mean: s.Mean}
	}
	return out, nil
}

// storageLine summarises Vault's timers for plugin credentials: storage
// writes (the plugin's WAL entry and Vault's lease and token-index entries;
// other engines write nothing between plugin slices but the built-in ones)
// and deletes, lease registration and the plugin's handling. The interval
// may hold other engines' requests too: the means are Vault's either way.
func storageLine(t map[string]timer) string {
	reqs := t["vault.route.read."+stack.Mount+"-"]
	if reqs.Count == 0 {
		return "no plugin requests in the interval"
	}
	put, del := t["vault.barrier.put"], t["vault.barrier.delete"]
	return fmt.Sprintf("%d creds: %.1f storage puts per credential, %.2f ms each; deletes %.2f ms; lease registration %.2f ms; creds/ request in the plugin %.2f ms",
		reqs.Count, float64(put.Count)/float64(reqs.Count), put.Mean, del.Mean, t["vault.expire.register"].Mean, reqs.Mean)
}
