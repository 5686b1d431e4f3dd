#!/bin/bash
# A real S3 server for tests, CI and benchmarks: single-node OpenStack Swift with its s3api middleware, from
# Debian's packages, on 127.0.0.1 (as root). Not for production: one replica, tempauth, data on a tmpfs.
#
#   deploy/s3-swift.sh install   apt-get install swift + memcached (~1 min; once per machine)
#   deploy/s3-swift.sh start     start it (~3-15 s), wait until S3 answers; a no-op if it already answers
#   deploy/s3-swift.sh stop      stop it and drop its data
#   deploy/s3-swift.sh bucket B  make bucket B (a Swift container: Swift's API, no S3 client needed)
#
# S3: http://127.0.0.1:$S3_PORT (default 7480), region us-east-1, path-style, access key test:tester, secret
# testing. Limits (Swift's, kept in mind by openkvs.blobstore): no conditional PUT, DeleteObjects needs
# Content-MD5, object metadata lives in xattrs (ext4 caps them at ~4 KiB per file, hence the tmpfs).
set -euo pipefail
BASE=${SWIFT_BASE:-/tmp/openkvs-swift} S3_PORT=${S3_PORT:-7480}
P0=${SWIFT_PORT_BASE:-6200} MC_PORT=${MEMCACHED_PORT:-11311}  # not 11211: a system memcached may run there
ETC=$BASE/etc DEV=$BASE/node LOG=$BASE/log
export EVENTLET_NO_GREENDNS=yes   # skips dnspython import: about twice as fast a start

install() {
  command -v swift-proxy-server >/dev/null && command -v memcached >/dev/null && return 0
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    swift swift-proxy swift-object swift-account swift-container memcached
}

ready() {   # S3 answers a signed-free probe through all servers (Swift API PUT/DELETE of a container and object)
  /usr/bin/python3 - "$S3_PORT" 2>/dev/null <<'PY'
import sys, urllib.request as u
r = u.urlopen(u.Request("http://127.0.0.1:%s/auth/v1.0" % sys.argv[1],
              headers={"X-Auth-User": "test:tester", "X-Auth-Key": "testing"}), timeout=2)
h, url = {"X-Auth-Token": r.headers["X-Auth-Token"]}, r.headers["X-Storage-Url"] + "/probe"
for m, p in (("PUT", ""), ("PUT", "/o"), ("DELETE", "/o"), ("DELETE", "")):
    u.urlopen(u.Request(url + p, data=b"" if m == "PUT" else None, method=m, headers=h), timeout=5)
PY
}

defaults() {
  printf '[DEFAULT]\nbind_ip = 127.0.0.1\nbind_port = %s\nworkers = %s\nuser = root\nswift_dir = %s\nlog_level = WARNING\n' \
    "$1" "$2" "$ETC"
}

start() {
  local p t i=0
  if ready; then echo "S3 already up on :$S3_PORT"; return 0; fi
  # Not answering: a Swift of ours may still hold the ports (its memcached gone, or two starts at once left two
  # sets of servers); stopped first, then the ports must be free.
  pkill -f -- "$ETC/" 2>/dev/null || true
  pkill -f -- "memcached -u root -l 127.0.0.1 -p $MC_PORT " 2>/dev/null || true
  stop
  for p in "$S3_PORT" "$P0" $((P0 + 1)) $((P0 + 2)) "$MC_PORT"; do
    for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || break; sleep 0.1; done
    if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "port $p busy" >&2; return 1; fi
  done
  mkdir -p "$ETC" "$DEV" "$LOG" "$BASE/run"
  mountpoint -q "$DEV" || mount -t tmpfs -o size=${SWIFT_TMPFS_SIZE:-4g} openkvs-swift-data "$DEV" || echo "no tmpfs" >&2
  mkdir -p "$DEV/d1"
  printf '[swift-hash]\nswift_hash_path_suffix = openkvs\n' >"$ETC/swift.conf"
  for t in object container account; do
    { defaults $((P0 + i)) 1; echo "devices = $DEV"; echo "mount_check = false"
      echo "[pipeline:main]"; echo "pipeline = $t-server"
      echo "[app:$t-server]"; echo "use = egg:swift#$t"; } >"$ETC/$t-server.conf"
    i=$((i + 1))
  done
  /usr/bin/python3 - "$ETC" "$P0" <<'PY'
import sys; from swift.common.ring import RingBuilder
for i, t in enumerate(("object", "container", "account")):
    b = RingBuilder(8, 1, 1)   # 2^8 partitions, 1 replica, one device
    b.add_dev(dict(region=1, zone=1, ip="127.0.0.1", port=int(sys.argv[2]) + i, device="d1", weight=1))
    b.rebalance(); b.get_ring().save("%s/%s.ring.gz" % (sys.argv[1], t))
PY
  { defaults "$S3_PORT" 2; cat <<CONF
[pipeline:main]
pipeline = cache s3api tempauth slo proxy-server
[app:proxy-server]
use = egg:swift#proxy
account_autocreate = true
error_suppression_interval = 0
[filter:cache]
use = egg:swift#memcache
memcache_servers = 127.0.0.1:$MC_PORT
[filter:s3api]
use = egg:swift#s3api
[filter:tempauth]
use = egg:swift#tempauth
user_test_tester = testing .admin
[filter:slo]
use = egg:swift#slo
CONF
  } >"$ETC/proxy-server.conf"
  memcached -u root -l 127.0.0.1 -p "$MC_PORT" -U 0 >"$LOG/memcached.log" 2>&1 &
  echo $! >"$BASE/run/memcached.pid"
  for t in object container account proxy; do   # -v: log to stderr too
    "swift-$t-server" "$ETC/$t-server.conf" -v >"$LOG/$t.log" 2>&1 &
    echo $! >"$BASE/run/$t.pid"
  done
  for _ in $(seq 300); do
    if ready; then echo "S3 ready on :$S3_PORT"; return 0; fi
    for t in object container account proxy; do
      kill -0 "$(cat "$BASE/run/$t.pid")" 2>/dev/null || { echo "swift-$t-server died:" >&2; tail -n 5 "$LOG/$t.log" >&2; stop; return 1; }
    done
    sleep 0.2
  done
  echo "swift failed to start, see $LOG" >&2; return 1
}

bucket() {   # PUT of a container through Swift's own API: 201, or 202 when it exists already
  /usr/bin/python3 - "$S3_PORT" "$1" <<'PY'
import sys, urllib.request as u
r = u.urlopen(u.Request("http://127.0.0.1:%s/auth/v1.0" % sys.argv[1],
              headers={"X-Auth-User": "test:tester", "X-Auth-Key": "testing"}), timeout=5)
u.urlopen(u.Request(r.headers["X-Storage-Url"] + "/" + sys.argv[2], data=b"", method="PUT",
                    headers={"X-Auth-Token": r.headers["X-Auth-Token"]}), timeout=10)
print("bucket %s on :%s" % (sys.argv[2], sys.argv[1]))
PY
}

stop() {   # the servers setsid() themselves, so PID == PGID (parent and workers)
  local f pids=()
  for f in "$BASE"/run/*.pid; do
    [ -e "$f" ] || continue; pids+=("$(cat "$f")"); rm -f "$f"
    kill -- "-${pids[-1]}" 2>/dev/null || kill "${pids[-1]}" 2>/dev/null || true
  done
  if [ ${#pids[@]} -gt 0 ]; then
    for _ in $(seq 100); do kill -0 "${pids[@]}" 2>/dev/null || break; sleep 0.1; done
    for f in "${pids[@]}"; do kill -9 -- "-$f" 2>/dev/null || kill -9 "$f" 2>/dev/null || true; done
  fi
  if mountpoint -q "$DEV"; then umount "$DEV" || umount -l "$DEV"; fi  # lazily if a killed server still has it
}

case "${1:-}" in
  install|start|stop) "$1" ;;
  bucket) [ -n "${2:-}" ] || { echo "usage: $0 bucket NAME" >&2; exit 2; }; bucket "$2" ;;
  *) echo "usage: $0 install|start|stop|bucket NAME" >&2; exit 2 ;;
esac
