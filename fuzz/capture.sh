#!/usr/bin/env bash
# Capture real Ethernet traffic between two network namespaces joined by a
# veth pair and save it as crates/dpr-packet/tests/data/capture.pcap
# (classic pcap, LINKTYPE_ETHERNET), then refresh fuzz/corpus/frame/capture-*.bin
# via fuzz/gen_corpus.py.
#
#   sudo bash fuzz/capture.sh [OUTPUT.pcap]
#
# Needs root, ip (iproute2), tcpdump, curl, ping (iputils-ping), python3,
# and optionally ethtool (Debian: apt-get install -y tcpdump iproute2 curl
# iputils-ping ethtool).  Traffic stays inside the two namespaces; only the
# benchmarking ranges 198.18.0.0/15 and 2001:2::/48 are used.
#
# Traffic: HTTP GETs over IPv4 and IPv6, a ~100 KB HTTP POST over IPv4,
# ping -c 2 in both directions over IPv4 and IPv6, and one UDP datagram per
# family to a closed port (which draws ICMP / ICMPv6 port unreachable).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
OUT=${1:-$ROOT/crates/dpr-packet/tests/data/capture.pcap}

NS_S=dpr-cap-srv
NS_C=dpr-cap-cli
DEV_S=vdprsrv
DEV_C=vdprcli
S4=198.18.0.1
C4=198.18.0.2
S6=2001:2::1
C6=2001:2::2
PORT=80
UPLOAD_BYTES=100000
MAX_FRAMES=1000          # hard cap for tcpdump -c
MAX_PCAP_BYTES=307200    # ~300 KB

WORK=$(mktemp -d /tmp/dpr-capture.XXXXXX)
SERVER_PID=
TCPDUMP_PID=

cleanup() {
    set +e
    [ -n "$TCPDUMP_PID" ] && kill "$TCPDUMP_PID" 2>/dev/null && wait "$TCPDUMP_PID" 2>/dev/null
    [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
    ip netns del "$NS_S" 2>/dev/null
    ip netns del "$NS_C" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for tool in ip tcpdump curl ping python3; do
    command -v "$tool" >/dev/null || { echo "capture.sh: missing $tool" >&2; exit 1; }
done

in_s() { ip netns exec "$NS_S" "$@"; }
in_c() { ip netns exec "$NS_C" "$@"; }

# Remove leftovers of an earlier interrupted run.
ip netns del "$NS_S" 2>/dev/null || true
ip netns del "$NS_C" 2>/dev/null || true

ip netns add "$NS_S"
ip netns add "$NS_C"
for ns in "$NS_S" "$NS_C"; do
    ip netns exec "$ns" ip link set lo up
    # no router advertisement handling / autoconf noise
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.accept_ra=0 net.ipv6.conf.default.accept_ra=0 \
        net.ipv6.conf.all.autoconf=0 net.ipv6.conf.default.autoconf=0 || true
done
ip link add "$DEV_S" netns "$NS_S" type veth peer name "$DEV_C" netns "$NS_C"
# No fe80:: link-local addresses (so no router solicitations or link-local
# NDP); the only IPv6 addresses are the 2001:2::/64 ones below.  The kernel
# still sends MLD reports from :: for the solicited-node groups.
in_s ip link set "$DEV_S" addrgenmode none
in_c ip link set "$DEV_C" addrgenmode none
in_s ip addr add "$S4/24" dev "$DEV_S"
in_c ip addr add "$C4/24" dev "$DEV_C"
in_s ip -6 addr add "$S6/64" dev "$DEV_S" nodad
in_c ip -6 addr add "$C6/64" dev "$DEV_C" nodad

# Software checksums and no segmentation/coalescing offloads, so the frames
# tcpdump sees carry real checksums and are at most MTU-sized.
if command -v ethtool >/dev/null; then
    in_s ethtool -K "$DEV_S" tx off tso off gso off gro off >/dev/null 2>&1 || \
        in_s ethtool -K "$DEV_S" tx off >/dev/null
    in_c ethtool -K "$DEV_C" tx off tso off gso off gro off >/dev/null 2>&1 || \
        in_c ethtool -K "$DEV_C" tx off >/dev/null
else
    echo "capture.sh: WARNING: ethtool not found; captured checksums may be partial" >&2
fi
in_s ip link set "$DEV_S" up
in_c ip link set "$DEV_C" up

# HTTP server: python3's http.server (dual stack), with a POST handler added
# so the upload is read completely (SimpleHTTPRequestHandler has no do_POST).
mkdir -p "$WORK/www"
printf 'hello from dpr capture\n' > "$WORK/www/hello.txt"
python3 -c "import sys; sys.stdout.buffer.write(bytes((i * 7 + 13) % 256 for i in range(4000)))" \
    > "$WORK/www/small.bin"
python3 -c "import sys; sys.stdout.buffer.write(bytes((i * 31 + 5) % 251 for i in range($UPLOAD_BYTES)))" \
    > "$WORK/upload.bin"
cat > "$WORK/server.py" <<'EOF'
import http.server, socket, sys

class Handler(http.server.SimpleHTTPRequestHandler):
    def do_POST(self):
        n = int(self.headers.get("Content-Length", 0))
        left = n
        while left > 0:
            chunk = self.rfile.read(min(left, 65536))
            if not chunk:
                break
            left -= len(chunk)
        body = f"received {n - left} bytes\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

class DualStack(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6
    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()

root, port = sys.argv[1], int(sys.argv[2])
handler = lambda *a, **kw: Handler(*a, directory=root, **kw)
DualStack(("::", port), handler).serve_forever()
EOF
# Started without a shell function/subshell so that $! is the process itself
# (ip netns exec execs its command).
ip netns exec "$NS_S" python3 "$WORK/server.py" "$WORK/www" "$PORT" 2>"$WORK/server.log" &
SERVER_PID=$!
for _ in $(seq 50); do
    in_s ss -Hltn "sport = :$PORT" | grep -q . && break
    sleep 0.1
done
in_s ss -Hltn "sport = :$PORT" | grep -q . || { echo "server did not start" >&2; cat "$WORK/server.log" >&2; exit 1; }

# Full frames (-s 0), written unbuffered, as root (no privilege drop).
ip netns exec "$NS_S" tcpdump -i "$DEV_S" -s 0 -U --immediate-mode -nn -Z root -c "$MAX_FRAMES" -w "$WORK/capture.pcap" \
    2>"$WORK/tcpdump.log" &
TCPDUMP_PID=$!
for _ in $(seq 50); do
    grep -q "listening on" "$WORK/tcpdump.log" 2>/dev/null && break
    sleep 0.1
done
grep -q "listening on" "$WORK/tcpdump.log" || { echo "tcpdump did not start" >&2; cat "$WORK/tcpdump.log" >&2; exit 1; }

CURL=(curl -sS -g --noproxy '*' --max-time 10 -o /dev/null)
in_c "${CURL[@]}" "http://$S4:$PORT/"
in_c "${CURL[@]}" "http://$S4:$PORT/hello.txt"
in_c "${CURL[@]}" "http://$S4:$PORT/small.bin"
in_c "${CURL[@]}" "http://[$S6]:$PORT/"
in_c "${CURL[@]}" "http://[$S6]:$PORT/hello.txt"
in_c "${CURL[@]}" -H 'Expect:' --data-binary "@$WORK/upload.bin" "http://$S4:$PORT/upload"
in_c ping -c 2 -i 0.2 -W 2 "$S4" >/dev/null
in_s ping -c 2 -i 0.2 -W 2 "$C4" >/dev/null
in_c ping -6 -c 2 -i 0.2 -W 2 "$S6" >/dev/null
in_s ping -6 -c 2 -i 0.2 -W 2 "$C6" >/dev/null
# one UDP datagram per family to a closed port -> ICMP(v6) port unreachable
in_c python3 -c "import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.sendto(b'dpr udp probe v4', ('$S4', 9999))"
in_c python3 -c "import socket; s=socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); s.sendto(b'dpr udp probe v6', ('$S6', 9999))"
sleep 1

# SIGTERM, not SIGINT: background jobs of a non-interactive shell ignore SIGINT.
kill -TERM "$TCPDUMP_PID"
wait "$TCPDUMP_PID" || true
TCPDUMP_PID=
cat "$WORK/tcpdump.log" >&2

size=$(stat -c %s "$WORK/capture.pcap")
if [ "$size" -gt "$MAX_PCAP_BYTES" ]; then
    echo "capture.sh: capture is $size bytes (> $MAX_PCAP_BYTES); lower UPLOAD_BYTES" >&2
    exit 1
fi
mkdir -p "$(dirname "$OUT")"
cp "$WORK/capture.pcap" "$OUT"
echo "wrote $OUT ($size bytes, $(tcpdump -r "$OUT" -nn 2>/dev/null | wc -l) frames)"

if [ "$OUT" = "$ROOT/crates/dpr-packet/tests/data/capture.pcap" ]; then
    python3 "$HERE/gen_corpus.py"
fi
