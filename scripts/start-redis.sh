#!/usr/bin/env bash
# Starts a private Redis server for tests (redis-py's asyncio suite in tests/third_party/run.py,
# or by hand), or reuses the one already running from the same directory, and prints how to
# reach it. Idempotent.
#
#   bash scripts/start-redis.sh                 # start (or reuse) the server of target/redis
#   bash scripts/start-redis.sh --dir DIR       # the same with its own directory DIR
#   bash scripts/start-redis.sh --stop [--dir DIR]
#
# The server listens on 127.0.0.1 only, on the first free port from 17379 up, runs in the
# background (not daemonized by Redis; detached with setsid), keeps its config, log, pid and
# port files in DIR, saves nothing to disk, and allows DEBUG (redis-py's tests use it).
# On success the last line of output is `REDIS_URL=redis://127.0.0.1:PORT/0`.
#
# It needs Debian's redis-server (any Redis >= 7 will do):
#   apt-get install -y redis-server        (as root; the package's own service is not used)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="$root/target/redis"
stop=0
while [ $# -gt 0 ]; do
    case "$1" in
        --dir) dir="$2"; shift 2 ;;
        --stop) stop=1; shift ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        *) echo "start-redis.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"

# Answers PING with +PONG on 127.0.0.1:$1 (bash's /dev/tcp; no redis-cli needed).
ping_port() {
    local reply=""
    { exec 3<>"/dev/tcp/127.0.0.1/$1"; } 2>/dev/null || return 1
    printf 'PING\r\n' >&3
    IFS= read -r -t 2 reply <&3 || true
    exec 3<&- 3>&-
    [ "${reply%$'\r'}" = "+PONG" ]
}

running_pid() {
    local pid
    [ -f "$dir/server.pid" ] && [ -f "$dir/port" ] || return 1
    pid="$(cat "$dir/server.pid")"
    kill -0 "$pid" 2>/dev/null && ping_port "$(cat "$dir/port")" && echo "$pid"
}

if [ "$stop" = 1 ]; then
    if pid="$(running_pid)"; then
        kill "$pid"
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        echo "stopped redis-server (pid $pid, dir $dir)"
    else
        echo "no redis-server running from $dir"
    fi
    rm -f "$dir/server.pid" "$dir/port"
    exit 0
fi

if pid="$(running_pid)"; then
    port="$(cat "$dir/port")"
    echo "reusing redis-server (pid $pid, dir $dir)"
    echo "REDIS_URL=redis://127.0.0.1:$port/0"
    exit 0
fi

server="$(command -v redis-server || true)"
if [ -z "$server" ]; then
    cat >&2 <<'EOF'
start-redis.sh: redis-server is not installed. On Debian/Ubuntu, as root:
    apt-get install -y redis-server
(any Redis >= 7 on PATH will do; this script starts its own private server, not the
package's service)
EOF
    exit 1
fi

for port in $(seq 17379 17479); do
    if { exec 3<>"/dev/tcp/127.0.0.1/$port"; } 2>/dev/null; then
        exec 3<&- 3>&-
        continue  # something listens there already
    fi
    cat > "$dir/redis.conf" <<EOF
# Written by scripts/start-redis.sh: a private server for tests.
bind 127.0.0.1
port $port
dir $dir
logfile $dir/redis.log
daemonize no
save ""
appendonly no
enable-debug-command yes
EOF
    : > "$dir/redis.log"
    setsid "$server" "$dir/redis.conf" < /dev/null > /dev/null 2>&1 &
    pid=$!
    for _ in $(seq 100); do
        if ping_port "$port"; then
            echo "$pid" > "$dir/server.pid"
            echo "$port" > "$dir/port"
            echo "started $("$server" --version | cut -d' ' -f1-3) (pid $pid, dir $dir)"
            echo "REDIS_URL=redis://127.0.0.1:$port/0"
            exit 0
        fi
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    kill "$pid" 2>/dev/null || true
    if ! grep -q "Address already in use" "$dir/redis.log"; then
        echo "start-redis.sh: redis-server did not start; its log ($dir/redis.log):" >&2
        tail -n 20 "$dir/redis.log" >&2
        exit 1
    fi
done
echo "start-redis.sh: no free port in 17379-17479" >&2
exit 1
