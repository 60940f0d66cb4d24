// What a Node.js scanner does with node-vault (npm, 0.12.0).
//
// Usage (VAULT_ADDR and VAULT_TOKEN in the environment):
//   node node_vault_client.js read <mount>/creds/<role> <dir>  read a credential, write <dir>/kubeconfig
//                                                              (0600), list pods with the token; print a JSON summary
//   node node_vault_client.js revoke <lease_id>                PUT sys/leases/revoke (node-vault's revoke)
//   node node_vault_client.js revoke-prefix <prefix>           POST sys/leases/revoke-prefix/<prefix> (needs sudo;
//                                                              node-vault's revokePrefix calls the legacy sys/revoke-prefix)
//   node node_vault_client.js revoke-self                      POST auth/token/revoke-self
//
// Nothing secret is printed: only lease ids, paths and status codes.
'use strict';

const fs = require('fs');
const https = require('https');
const path = require('path');

const vault = require('node-vault')({ endpoint: process.env.VAULT_ADDR, token: process.env.VAULT_TOKEN });

function writePrivate(file, text) {
  fs.writeFileSync(file, text, { mode: 0o600 });
}

// The token itself, against the API server, TLS verified by the issued CA.
function listPods(data) {
  const url = new URL(`${data.kubernetes_host}/api/v1/namespaces/${data.service_account_namespace}/pods`);
  return new Promise((resolve, reject) => {
    const req = https.get(url, {
      ca: data.kubernetes_ca_cert,
      headers: { Authorization: `Bearer ${data.service_account_token}` },
      timeout: 30000,
    }, (res) => { res.resume(); res.on('end', () => resolve(res.statusCode)); });
    req.on('error', reject);
    req.on('timeout', () => req.destroy(new Error('timeout')));
  });
}

async function read(credsPath, outDir) {
  const secret = await vault.read(credsPath);
  const data = secret.data;
  const kubeconfig = path.join(outDir, 'kubeconfig');
  writePrivate(kubeconfig, data.kubeconfig);
  const apiStatus = await listPods(data);
  console.log(JSON.stringify({
    lease_id: secret.lease_id,
    lease_duration: secret.lease_duration,
    renewable: secret.renewable,
    credential_id: data.credential_id,
    kubeconfig,
    api_status: apiStatus,
  }));
}

async function main(args) {
  const [cmd, arg1, arg2] = args;
  if (cmd === 'read' && args.length === 3) return read(arg1, arg2);
  if (cmd === 'revoke' && args.length === 2) return vault.revoke({ lease_id: arg1 });
  if (cmd === 'revoke-prefix' && args.length === 2) return vault.write(`sys/leases/revoke-prefix/${arg1}`, {});
  if (cmd === 'revoke-self' && args.length === 1) return vault.tokenRevokeSelf();
  throw new Error('usage: read <path> <dir> | revoke <lease_id> | revoke-prefix <prefix> | revoke-self');
}

main(process.argv.slice(2)).catch((err) => {
  // node-vault's errors carry the status and Vault's message, never the token.
  console.error(`node-vault: ${err.message}`);
  process.exit(1);
});
