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

// storageLine summarises Vault's timers per plugin credential: storage
// writes and deletes (the plugin's WAL and Vault's own lease entries),
// lease registration and the plugin's handling.
func storageLine(t map[string]timer) string {
	reqs := t["vault.route.read."+stack.Mount+"-"]
	if reqs.Count == 0 {
		return "no plugin requests in the interval"
	}
	per := func(name string) string {
		x := t[name]
		return fmt.Sprintf("%.1f × %.2f ms", float64(x.Count)/float64(reqs.Count), x.Mean)
	}
	return fmt.Sprintf("%d creds: storage puts %s, deletes %s; lease registration %.2f ms; plugin (route) %.2f ms; whole request %.2f ms",
		reqs.Count, per("vault.barrier.put"), per("vault.barrier.delete"), t["vault.expire.register"].Mean, reqs.Mean, t["vault.core.handle_request"].Mean)
}
