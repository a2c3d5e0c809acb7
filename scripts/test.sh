#!/usr/bin/env bash
# Runs the whole test suite, installing the real peers the integration
# tests start (Postfix, smtp-sink/smtp-source, swaks, dnsmasq, openssl,
# BIND 9 with its DNSSEC tools, PostgreSQL, chromium + playwright-core,
# openapi-spec-validator) when they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
for tool in /usr/sbin/postfix /usr/sbin/smtp-sink /usr/sbin/smtp-source swaks dnsmasq openssl \
    /usr/sbin/named dnssec-keygen dnssec-signzone dig; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
# swaks --tls needs Net::SSLeay, which --no-install-recommends leaves out.
perl -MNet::SSLeay -e1 >/dev/null 2>&1 || missing+=(Net::SSLeay)
if ((${#missing[@]})); then
    echo "test.sh: installing test peers (missing: ${missing[*]})" >&2
    sudo=()
    [[ $(id -u) -eq 0 ]] || sudo=(sudo)
    # Without the preseed the postfix package asks which setup to write;
    # "No configuration" also leaves no system instance on port 25.
    echo "postfix postfix/main_mailer_type select No configuration" | "${sudo[@]}" debconf-set-selections
    "${sudo[@]}" apt-get update -q
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        postfix swaks libnet-ssleay-perl dnsmasq-base openssl bind9 bind9-dnsutils
fi

# PostgreSQL for the cluster tests (crates/sluice/tests/it/cluster.rs and
# the store's own): only the binaries are used; each test runs initdb and
# pg_ctl in a temporary directory of its own, so the cluster the package
# starts is stopped right after installation.
if ! compgen -G '/usr/lib/postgresql/*/bin/pg_ctl' >/dev/null; then
    echo "test.sh: installing PostgreSQL for the cluster tests" >&2
    sudo=()
    [[ $(id -u) -eq 0 ]] || sudo=(sudo)
    "${sudo[@]}" apt-get update -q
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postgresql
    # The package starts a cluster of its own; the tests never use it.
    for cluster in /etc/postgresql/*/*/; do
        [[ -d $cluster ]] || continue
        version=$(basename "$(dirname "$cluster")")
        "${sudo[@]}" pg_ctlcluster "$version" "$(basename "$cluster")" stop >/dev/null 2>&1 || true
    done
fi

# The independent OpenAPI 3 validator that checks /openapi.json
# (crates/sluice/tests/it/openapi.rs), from PyPI.
if ! python3 -c 'import openapi_spec_validator' >/dev/null 2>&1; then
    echo "test.sh: installing openapi-spec-validator" >&2
    python3 -m pip install --quiet openapi-spec-validator
fi

# The independent DKIM implementation the mail authentication tests sign
# and verify with (crates/sluice/tests/it/auth.rs): dkimpy, with PyNaCl for
# Ed25519 and dnspython, from PyPI.
if ! python3 -c 'import dkim, nacl, dns' >/dev/null 2>&1; then
    echo "test.sh: installing dkimpy" >&2
    python3 -m pip install --quiet dkimpy pynacl dnspython
fi

# The admin center's browser tests (crates/sluice/tests/it/admin_ui.rs):
# Debian's chromium, and playwright-core from ui/tests/package-lock.json
# (it never downloads a browser of its own).
if [[ ! -x /usr/bin/chromium ]]; then
    echo "test.sh: installing chromium for the admin center tests" >&2
    sudo=()
    [[ $(id -u) -eq 0 ]] || sudo=(sudo)
    "${sudo[@]}" apt-get update -q
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium
fi
if [[ ! -d ui/tests/node_modules/playwright-core ]]; then
    (cd ui/tests && npm ci --no-audit --no-fund)
fi

if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast "$@"
    # nextest does not run doctests.
    cargo test --workspace --doc
else
    cargo test --workspace "$@"
fi
