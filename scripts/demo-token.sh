#!/usr/bin/env bash
# Prints an HS256 bearer token for the local demo API: `demo-token.sh USER_ID [SCOPE]`.
# The secret is PAYSTREAM_JWT_SECRET (the same default `make up` gives the API).
# For local demos only: production tokens come from your identity provider.
set -euo pipefail
user="${1:?usage: demo-token.sh USER_ID [SCOPE]}"
scope="${2:-}"
secret="${PAYSTREAM_JWT_SECRET:-paystream-local-demo-secret-change-me-000}"
b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
exp=$(( $(date +%s) + 3600 ))
header=$(printf '{"alg":"HS256","typ":"JWT"}' | b64url)
payload=$(printf '{"sub":"%s","exp":%d,"scope":"%s"}' "$user" "$exp" "$scope" | b64url)
sig=$(printf '%s.%s' "$header" "$payload" | openssl dgst -sha256 -hmac "$secret" -binary | b64url)
printf '%s.%s.%s\n' "$header" "$payload" "$sig"
