#!/usr/bin/env bash
# Make a CA, a SuperLink TLS certificate and SuperNode authentication key pairs.
#
#   launch/certs.sh CERT_DIR NUM_NODES [HOST ...]
#
# CERT_DIR/ca.crt, ca.key          the certificate authority (copy ca.crt to every machine)
# CERT_DIR/server.pem, server.key  the SuperLink's certificate, SAN: localhost, 127.0.0.1, HOSTs
# CERT_DIR/node-I, node-I.pub      SuperNode I's key pair (ECDSA P-384, OpenSSH format), I = 0..N-1;
#                                  ssh-keygen makes them, or Python's cryptography where it is absent
#                                  (or FEDLR_KEYGEN=python)
#
# Idempotent: existing files are kept (and said so), never overwritten. Delete a file to remake it.
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 CERT_DIR NUM_NODES [HOST ...]" >&2
  exit 2
fi
dir=$1
nodes=$2
shift 2
case $nodes in '' | *[!0-9]*) echo "NUM_NODES: expected a whole number, got '$nodes'" >&2; exit 2 ;; esac
mkdir -p "$dir"
umask 077

keep() { echo "certs: keeping existing $1"; }

if [ -f "$dir/ca.key" ] && [ -f "$dir/ca.crt" ]; then
  keep "$dir/ca.crt"
else
  openssl req -x509 -newkey rsa:4096 -sha256 -days 365 -nodes -subj "/CN=fedlr-ca" \
    -keyout "$dir/ca.key" -out "$dir/ca.crt" 2>/dev/null
  echo "certs: wrote $dir/ca.crt"
fi

if [ -f "$dir/server.key" ] && [ -f "$dir/server.pem" ]; then
  keep "$dir/server.pem"
else
  san="DNS:localhost,IP:127.0.0.1,IP:::1"
  for host in "$@"; do
    if [[ $host =~ ^[0-9.]+$ || $host == *:* ]]; then san="$san,IP:$host"; else san="$san,DNS:$host"; fi
  done
  openssl req -newkey rsa:4096 -nodes -subj "/CN=fedlr-superlink" \
    -keyout "$dir/server.key" -out "$dir/server.csr" 2>/dev/null
  printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n' \
    "$san" >"$dir/server.ext"
  openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" \
    -CAcreateserial -out "$dir/server.pem" -days 365 -sha256 -extfile "$dir/server.ext" 2>/dev/null
  rm -f "$dir/server.csr" "$dir/server.ext"
  echo "certs: wrote $dir/server.pem (SAN $san)"
fi

for ((i = 0; i < nodes; i++)); do
  key="$dir/node-$i"
  if [ -f "$key" ] && [ -f "$key.pub" ]; then
    keep "$key"
  else
    if command -v ssh-keygen >/dev/null && [ "${FEDLR_KEYGEN:-}" != python ]; then
      ssh-keygen -q -t ecdsa -b 384 -N "" -C "fedlr-node-$i" -f "$key"
    else  # minimal images lack openssh: the same key type from cryptography (Flower's dependency)
      python3 - "$key" "fedlr-node-$i" <<'PY'
import sys
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

path, comment = Path(sys.argv[1]), sys.argv[2]
key = ec.generate_private_key(ec.SECP384R1())
private = key.private_bytes(
    serialization.Encoding.PEM,
    serialization.PrivateFormat.OpenSSH,
    serialization.NoEncryption(),
)
public = key.public_key().public_bytes(
    serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
)
path.write_bytes(private)
path.chmod(0o600)
Path(f"{path}.pub").write_bytes(public + f" {comment}\n".encode())
PY
    fi
    echo "certs: wrote $key and $key.pub"
  fi
done
