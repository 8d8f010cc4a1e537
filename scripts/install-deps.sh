#!/usr/bin/env bash
# Installs what building, running and testing the data plane need on a fresh
# Debian machine, and nothing else. Safe to run again: only missing packages
# are installed.
#   clang, llvm, libbpf-dev, linux-libc-dev  build the XDP program (clang -target bpf)
#   libclang1 (with clang)                   bindgen generates the ABI types
#   libelf-dev zlib1g-dev m4 make pkg-config xsk-rs builds libxdp/libbpf from source
#   iproute2 ethtool                         the veth testbed and NIC setup
#   slapd ldap-utils krb5-kdc krb5-user      real LDAP and Kerberos peers for the dissector
#   krb5-admin-server                        tests (run inside test namespaces only; their
#                                            services are left disabled)
#   freetds-bin                              FreeTDS' tsql, a real MS-SQL (TDS) client for the
#                                            same test
#   fever                                    a real eve.json consumer (DCSO's event router) the
#                                            eve test feeds (tests/eve.rs); its service is left disabled
#   snmpd prometheus-node-exporter           the agents the balancer reads backend load from
#                                            ([load] source = "snmp" | "prometheus"; run in
#                                            test namespaces only; services left disabled)
#   nfdump                                   a real IPFIX collector (nfcapd) and reader (nfdump) for
#                                            the IPFIX export test; its service is left disabled
#   bird2                                    BIRD 2, the BGP daemon of the ECMP scale-out test and
#                                            template (dist/bird/; run in test namespaces only:
#                                            its own service is left disabled)
#   nftables                                 the peer the load balancer is compared with
#                                            (`compare lb`; rules only inside test namespaces),
#                                            and the evasion tests' raw client (no kernel RSTs)
#   suricata (Debian's bookworm-backports, 7.x)  the rules differential test (bench/tests/
#                                                suricata_agreement.rs) and `compare ips`;
#                                                its service is left disabled
# With --bench, also the peers only the benchmarks compare with:
#   libndpi-bin                                  `ndpi-speed`, `compare dpi`
set -euo pipefail

bench=false
if [ "${1:-}" = "--bench" ]; then
    bench=true
fi

packages=(clang llvm libbpf-dev linux-libc-dev libelf-dev zlib1g-dev m4 make pkg-config iproute2 ethtool
          iputils-ping curl openssl python3 nftables slapd ldap-utils krb5-kdc krb5-user
          krb5-admin-server freetds-bin fever nfdump snmpd prometheus-node-exporter bird2)

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || { echo "install-deps.sh: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
        sudo=sudo
    fi
    echo "install-deps.sh: installing ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # test peers, not services of this machine
    if command -v systemctl >/dev/null; then
        for service in slapd krb5-kdc krb5-admin-server fever nfdump snmpd prometheus-node-exporter bird; do
            $sudo systemctl disable --now "$service" >/dev/null 2>&1 || true
        done
    fi
fi

sudo=""
[ "$(id -u)" -ne 0 ] && sudo=sudo
if ! command -v suricata >/dev/null; then
    . /etc/os-release
    if [ "${VERSION_CODENAME:-}" = bookworm ] && ! grep -rqs "bookworm-backports" /etc/apt/sources.list /etc/apt/sources.list.d; then
        echo "install-deps.sh: adding Debian's bookworm-backports suite (for Suricata 7)"
        printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
            | $sudo tee /etc/apt/sources.list.d/bookworm-backports.sources >/dev/null
    fi
    $sudo apt-get update -qq
    target=()
    [ "${VERSION_CODENAME:-}" = bookworm ] && target=(-t bookworm-backports)
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${target[@]}" suricata >/dev/null
    # a test and benchmark peer, not a service of this machine
    command -v systemctl >/dev/null && $sudo systemctl disable --now suricata >/dev/null 2>&1 || true
fi
echo "install-deps.sh: suricata $(suricata -V 2>/dev/null | grep -o '[0-9][0-9.]*' | head -1) present"

if $bench; then
    dpkg-query -W -f='${Status}' libndpi-bin 2>/dev/null | grep -q "install ok installed" \
        || DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends libndpi-bin >/dev/null
    echo "install-deps.sh: benchmark peers present (ndpiReader)"
fi

if ! command -v cargo >/dev/null; then
    echo "install-deps.sh: cargo not found; install Rust 1.95 (rustup) and run this again" >&2
    exit 1
fi
for component in fmt clippy; do
    cargo "$component" --version >/dev/null 2>&1 || echo "install-deps.sh: warning: cargo $component is missing (rustup component add ${component/fmt/rustfmt})" >&2
done
echo "install-deps.sh: all build and test dependencies present"
