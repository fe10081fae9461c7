#!/usr/bin/env bash
# Mints a JWT for tests and demos (docs/security.md#tokens), with the openssl CLI only:
#   scripts/mint-test-token.sh ISSUER_KEY SUB ROLES [TTL_SECONDS] [ISS] [AUD] [AMR]
# ROLES and AMR are comma-separated ("doctor,nurse"; "pwd,mfa"). Prints the token on stdout.
# ES256: the signature is the two 32-byte integers R and S of openssl's DER ECDSA-Sig-Value.
set -euo pipefail
if [ $# -lt 3 ]; then
  sed -n 2,5p "$0" >&2
  exit 2
fi
key=$1 sub=$2 roles=$3 ttl=${4:-3600} iss=${5:-hms-auth} aud=${6:-hms-ffi} amr=${7:-pwd}
b64url() { base64 -w0 | tr '+/' '-_' | tr -d '='; }
json_list() { printf '"%s"' "$1" | sed 's/,/","/g'; }
now=$(date +%s)
header=$(printf '%s' '{"alg":"ES256","typ":"JWT"}' | b64url)
payload=$(printf '{"iss":"%s","sub":"%s","aud":"%s","role":[%s],"amr":[%s],"iat":%d,"exp":%d}' \
  "$iss" "$sub" "$aud" "$(json_list "$roles")" "$(json_list "$amr")" "$now" "$((now + ttl))" |
  b64url)
hex=$(printf '%s.%s' "$header" "$payload" | openssl dgst -sha256 -sign "$key" |
  openssl asn1parse -inform DER |
  awk -F: '/INTEGER/ { v = $NF; while (length(v) < 64) v = "0" v; printf "%s", v }')
# Hex to bytes without xxd (not in every Debian install): bash printf with \x escapes.
signature=$(printf "$(sed 's/../\\x&/g' <<<"$hex")" | b64url)
printf '%s.%s.%s\n' "$header" "$payload" "$signature"
