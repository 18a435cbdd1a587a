#!/usr/bin/env bash
# Generates the local certificate authority and the server certificate that
# MariaDB and Redis use for TLS on loopback. Idempotent: existing files are kept.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

TLS_DIR="$STACK_VAR/tls"
mkdir -p "$TLS_DIR"
cd "$TLS_DIR"
if [[ -s ca.pem && -s server-cert.pem && -s server-key.pem ]]; then
  exit 0
fi
command -v openssl >/dev/null || apt_install openssl
log "generating a local CA and server certificate in $TLS_DIR"
openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=paystream local CA" \
  -keyout ca-key.pem -out ca.pem 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
  -keyout server-key.pem -out server.csr 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n' > server.ext
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 3650 \
  -extfile server.ext -out server-cert.pem 2>/dev/null
chmod 600 ca-key.pem server-key.pem
# The servers may run as a dedicated user; they only need to read the key.
chmod 644 server-key.pem
rm -f server.csr server.ext
