"""What a Python scanner does with python3-hvac (Debian's 0.11.2).

Usage (VAULT_ADDR and VAULT_TOKEN in the environment):
  hvac_client.py read <mount>/creds/<role> <dir>   read a credential, write <dir>/kubeconfig (0600),
                                                   list pods with the token; print a JSON summary
  hvac_client.py revoke <lease_id>                 PUT sys/leases/revoke
  hvac_client.py revoke-prefix <prefix>            PUT sys/leases/revoke-prefix/<prefix> (needs sudo)
  hvac_client.py revoke-self                       POST auth/token/revoke-self

Nothing secret is printed: only lease ids, paths and status codes.
"""
import json
import os
import sys

import hvac
import requests


def client():
    return hvac.Client(url=os.environ["VAULT_ADDR"], token=os.environ["VAULT_TOKEN"])


def write_private(path, text):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def read(path, out_dir):
    secret = client().read(path)
    data = secret["data"]
    kubeconfig = os.path.join(out_dir, "kubeconfig")
    write_private(kubeconfig, data["kubeconfig"])
    ca = os.path.join(out_dir, "ca.crt")
    write_private(ca, data["kubernetes_ca_cert"])
    # The token itself, against the API server, TLS verified by the issued CA.
    resp = requests.get(
        "%s/api/v1/namespaces/%s/pods" % (data["kubernetes_host"], data["service_account_namespace"]),
        headers={"Authorization": "Bearer " + data["service_account_token"]},
        verify=ca,
        timeout=30,
    )
    print(json.dumps({
        "lease_id": secret["lease_id"],
        "lease_duration": secret["lease_duration"],
        "renewable": secret["renewable"],
        "credential_id": data["credential_id"],
        "kubeconfig": kubeconfig,
        "api_status": resp.status_code,
    }))


def main(argv):
    cmd = argv[1] if len(argv) > 1 else ""
    if cmd == "read" and len(argv) == 4:
        read(argv[2], argv[3])
    elif cmd == "revoke" and len(argv) == 3:
        client().sys.revoke_lease(lease_id=argv[2])
    elif cmd == "revoke-prefix" and len(argv) == 3:
        client().sys.revoke_prefix(prefix=argv[2])
    elif cmd == "revoke-self" and len(argv) == 2:
        client().auth.token.revoke_self()
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
