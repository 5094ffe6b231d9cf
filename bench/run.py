#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
#
# bench/run: runs every benchmark of issues 5 and 12, prints a table and writes JSON.
#
# Configured into the build directory as `run` (meson fills in the paths), so
# `meson compile -C build bench && build/bench/run` is the whole procedure.
# The C programs (bench-request, bench-update, bench-recovery, bench-scale)
# each print one JSON object; the restart and no-dropped-connections benchmarks drive
# kv-server, kv-client, redis-server and wrk from here.  Every benchmark puts
# luo's figure beside what a user would otherwise use, measured in the same
# run.  A benchmark that cannot run here (no wrk, no redis-server, too little
# memory, too low an fd limit) says why in its result instead of a number.
#
# --tiny runs everything at a size that takes seconds (and leaves the page
# cache alone, so that the test suite has no machine-wide effect); with
# --check the exit status says whether every benchmark produced its numbers
# (the bench-smoke test).  No timing is ever checked: the targets are reported, not asserted.

import argparse
import json
import statistics
import os
import platform
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

BUILD_ROOT = '@BUILD_ROOT@'
SOURCE_ROOT = '@SOURCE_ROOT@'
SANITIZE = '@SANITIZE@'

BENCH_DIR = os.path.join(BUILD_ROOT, 'bench')
LUOD = os.path.join(BUILD_ROOT, 'src', 'daemon', 'luod')
KV_SERVER = os.path.join(BUILD_ROOT, 'examples', 'kv-server')
KV_CLIENT = os.path.join(BUILD_ROOT, 'examples', 'kv-client')

ALL = ['request', 'batch', 'update', 'recovery', 'restart', 'wrk', 'conns', 'scale', 'load']
GIB = 1 << 30
MIB = 1 << 20


def log(msg):
    print(f'bench: {msg}', file=sys.stderr, flush=True)


def now():
    return time.monotonic()


# ---- helpers ----

def run_program(name, args, timeout, cpus=None):
    """Runs one of the C benchmark programs (on the given CPUs) and returns its JSON object."""
    path = os.path.join(BENCH_DIR, name)
    pin = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
    p = subprocess.run([path] + args, stdout=subprocess.PIPE, timeout=timeout, text=True,
                       preexec_fn=pin)
    if p.returncode != 0:
        raise RuntimeError(f'{name} exited with {p.returncode}')
    return json.loads(p.stdout.strip().splitlines()[-1])


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def mem_available():
    with open('/proc/meminfo') as f:
        for line in f:
            if line.startswith('MemAvailable:'):
                return int(line.split()[1]) * 1024
    return 0


def drop_caches():
    """Empties the page cache so that a read comes from the disk.  Returns whether it could."""
    try:
        os.sync()
        with open('/proc/sys/vm/drop_caches', 'w') as f:
            f.write('3\n')
        return True
    except OSError:
        return False


class Luod:
    """A luod of our own on a socket in a temporary directory."""

    def __init__(self, tmp):
        self.dir = tempfile.mkdtemp(prefix='luod-', dir=tmp)
        self.socket = os.path.join(self.dir, 'luod.sock')
        self.proc = subprocess.Popen([LUOD, '--foreground', '--socket', self.socket],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = now() + 10
        while now() < deadline:
            if os.path.exists(self.socket):
                try:
                    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as s:
                        s.connect(self.socket)
                    return
                except OSError:
                    pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.005)
        self.stop()
        raise RuntimeError('luod did not start')

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


class KvServer:
    """One kv-server process; restart() replaces it by a new one with the same arguments."""

    def __init__(self, args, tmp):
        self.ready = os.path.join(tmp, f'kv-ready-{os.getpid()}-{id(self)}')
        self.args = [KV_SERVER, '--ready-file', self.ready] + args
        self.proc = None
        self.port = self.http_port = None

    def start(self, wait=True):
        try:
            os.unlink(self.ready)
        except FileNotFoundError:
            pass
        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout=600):
        deadline = now() + timeout
        while not os.path.exists(self.ready):
            if self.proc.poll() is not None:
                raise RuntimeError(f'kv-server exited with {self.proc.returncode}')
            if now() > deadline:
                raise RuntimeError('kv-server did not get ready')
            time.sleep(0.0002)
        with open(self.ready) as f:
            fields = f.read().split()
        self.port, self.http_port = int(fields[1]), int(fields[2])
        return fields

    def terminate(self):
        """SIGTERM and wait for the exit (the handover or the snapshot happens in between)."""
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait()
        return self.proc.returncode

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def line_request(port, line, timeout=600):
    """Sends one line-protocol command and returns the reply line, retrying refused connects."""
    deadline = now() + timeout
    while True:
        try:
            with socket.create_connection(('127.0.0.1', port), timeout=timeout) as s:
                s.sendall(line.encode() + b'\n')
                buf = b''
                while not buf.endswith(b'\n'):
                    chunk = s.recv(4096)
                    if not chunk:
                        raise ConnectionResetError
                    buf += chunk
                return buf.decode().strip()
        except (ConnectionRefusedError, ConnectionResetError):
            if now() > deadline:
                raise
            time.sleep(0.0005)


def kv_count(port):
    reply = line_request(port, 'COUNT')
    m = re.search(r'(\d+)', reply)
    return int(m.group(1)) if m else -1


def kv_load(port, keys, size):
    subprocess.run([KV_CLIENT, '--port', str(port), '--keys', str(keys), '--size', str(size),
                    '--quiet', 'load'], check=True, stdout=subprocess.DEVNULL)


def kv_verify(port, keys, size):
    return subprocess.run([KV_CLIENT, '--port', str(port), '--keys', str(keys), '--size',
                           str(size), '--quiet', 'verify'],
                          stdout=subprocess.DEVNULL).returncode == 0


def redis_call(port, *words, timeout=600):
    """One RESP command on a fresh connection; returns the raw first reply line."""
    req = f'*{len(words)}\r\n' + ''.join(f'${len(w)}\r\n{w}\r\n' for w in words)
    with socket.create_connection(('127.0.0.1', port), timeout=timeout) as s:
        s.sendall(req.encode())
        buf = b''
        while b'\r\n' not in buf:
            chunk = s.recv(4096)
            if not chunk:
                raise ConnectionResetError
            buf += chunk
        return buf.split(b'\r\n')[0].decode()


# ---- 1. request cost ----

def bench_request(a):
    """Client and luod on one CPU (the main figures), and again free to spread.

    On a virtual machine a wake-up on an idle other vCPU can cost tens of
    microseconds (seen here: a plain ping-pong at 3.5 us on one CPU and 59 us
    across two while the machine was idle), which drowns the request itself;
    on one CPU the round trip is what luo costs.  Both runs carry their floor.
    """
    args = ['--count', '300' if a.tiny else '50000']
    r = run_program('bench-request', args, 600, cpus={min(os.sched_getaffinity(0))})
    r['placement'] = 'one CPU'
    spread = run_program('bench-request', args, 600)
    r['spread'] = {k: spread[k] for k in ('preserve_median_us', 'retrieve_median_us',
                                         'floor_send_fd_median_us', 'floor_recv_fd_median_us',
                                         'preserve_per_second', 'preserve_vs_floor',
                                         'retrieve_vs_floor') if k in spread}
    return r


# ---- 1b. batched preserve and retrieve ----

def bench_batch(a):
    """Whole batches through luod against the same batches by raw SCM_RIGHTS.

    Pinned to one CPU (client, luod and the floor's holder: the main figures,
    for the reason bench_request gives) and again free to spread.
    """
    args = ['--files', '600', '--rounds', '3'] if a.tiny else ['--files', '15000', '--rounds', '20']
    r = run_program('bench-batch', args, 900, cpus={min(os.sched_getaffinity(0))})
    r['placement'] = 'one CPU'
    spread = run_program('bench-batch', args, 900)
    r['spread'] = {k: spread[k] for k in spread if k.endswith('_ns_per_fd') or
                   k.endswith('_vs_floor') or k.endswith('_fds_per_second')}
    return r


# ---- 4b. every connection kept across restarts ----

def bench_conns(a, tmp):
    """kv-server with as many busy connections as the fd limit allows, restarted every second.

    Through luo (every established connection kept, with its parser's state),
    and beside it the usual scheme: only the listening socket passed
    (kv-server --no-connections), the connections closed and reconnected.
    """
    if not os.path.exists(KV_SERVER):
        return {'benchmark': 'conns', 'skipped': 'kv-server is not built'}
    n, seconds = ('200', '3') if a.tiny else ('15000', str(a.conns_seconds))
    args = ['--kv-server', KV_SERVER, '--connections', n, '--seconds', seconds, '--interval', '1']
    r = {'benchmark': 'conns'}
    r['luo'] = run_program('bench-conns', args, 600)
    r['listen_only'] = run_program('bench-conns', args + ['--listen-only'], 600)
    for k in ('connections', 'requested_connections', 'fd_limit', 'seconds', 'interval'):
        if k in r['luo']:
            r[k] = r['luo'][k]
    if r['connections'] < int(n):
        r['note'] = f" (asked {int(n):,}: fd limit {r['fd_limit']:,})"
    else:
        r['note'] = f" (fd limit {r['fd_limit']:,})"
    luo = r['luo']
    r['target_no_loss'] = luo['resets'] == 0 and luo['failed'] == 0 and \
        luo['restarts_unfinished'] == 0
    bm = luo.get('blackout_max_ms')
    r['target_20ms'] = bm is not None and bm == bm and bm <= 20
    return r


# ---- 2. luod live update blackout ----

def bench_update(a):
    args = ['--files', '0,10,100', '--repeat', '3'] if a.tiny else \
        ['--files', '0,100,1000,10000,100000', '--repeat', '7']
    return run_program('bench-update', args, 1800)


# ---- 2b. recovery after the worker is killed ----

def bench_recovery(a):
    args = ['--files', '0,10', '--repeat', '2'] if a.tiny else \
        ['--files', '0,1000,10000', '--repeat', '9']
    return run_program('bench-recovery', args, 1800)


# ---- 5. scale and footprint ----

def bench_scale(a):
    # 10,000: where the recovery and blackout targets are set.  luod's journal
    # is compacted when its log reaches 8 MiB (about 17,000 preserves), which
    # shrinks it; 10,000 files is before that, the journal at its largest.
    n = '500' if a.tiny else '10000'
    return run_program('bench-scale', ['--files', n, '--sessions', n], 900)


# ---- 6. many clients, live updates and a reboot: the exact ledger ----

def bench_load(a, tmp):
    """
    The suite's load test (tests/integration/test-luod-load) at full size:
    1,000 client processes each restarting a service over and over through
    luod, a live update every 2 s, a reboot at the end; it fails unless what
    luod holds is exactly what the clients were told.
    """
    out = os.path.join(tmp, 'load.json')
    clients, seconds = ('20', '3') if a.tiny else ('1000', '30')
    env = dict(os.environ, LUO_BUILD_ROOT=BUILD_ROOT, LUO_SOURCE_ROOT=SOURCE_ROOT,
               LUOD_LOAD_CLIENTS=clients, LUOD_LOAD_SECONDS=seconds,
               LUOD_LOAD_UPDATE_MS='2000', LUOD_LOAD_JSON=out,
               LUO_TEST_TIMEOUT=str(int(seconds) + 600))
    exe = os.path.join(BUILD_ROOT, 'tests', 'integration', 'test-luod-load')
    p = subprocess.run([exe], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                       env=env, timeout=int(seconds) + 900)
    if p.returncode != 0:
        raise RuntimeError('test-luod-load failed: ' +
                           ' '.join(l for l in p.stdout.splitlines() if l.startswith('#'))[-400:])
    with open(out) as f:
        r = json.load(f)
    r['benchmark'] = 'load'
    return r


# ---- 3. restart with large state ----

def restart_luo(tmp, size, keys, value, reps):
    """
    Two restarts through luo, each from a process that has touched all of its
    data (its exit has the whole mapping to tear down):
      - the successor started right after the SIGTERM: it waits for the
        handover by itself, so the old process's exit is off the critical
        path; this is how luo is meant to be used, and the headline figure;
      - the successor started only once the old process has exited, as a
        plain supervisor would.
    Between them every key is read back and compared (kv-client verify).
    """
    luod = Luod(tmp)
    srv = KvServer(['--port', '0', '--socket', luod.socket, '--session', 'bench-kv',
                    '--capacity', str(size + size // 8)], tmp)
    try:
        srv.start()
        kv_load(srv.port, keys, value)
        if kv_count(srv.port) != keys:
            raise RuntimeError('kv-server did not take every key')
        # The successors get the same listening socket from the session anyway.
        srv.args += ['--port', str(srv.port)]

        # Several restarts in a row, the median reported: one restart is a
        # few milliseconds, where a single sample is at the mercy of the
        # scheduler.
        times, exits, startups, restored = [], [], [], True
        for _ in range(reps):
            old = srv.proc
            t0 = now()
            old.send_signal(signal.SIGTERM)
            srv.start(wait=False)
            # Once the successor is ready the old process has handed over and no
            # longer accepts: the COUNT below is answered by the new one.
            fields = srv.wait_ready()
            n = kv_count(srv.port)
            t1 = now()
            old.wait()
            exits.append((now() - t0) * 1e3)
            times.append((t1 - t0) * 1e3)
            startups.append(float(fields[6]))
            restored = restored and fields[4] == 'restored' and n == keys
        verified = kv_verify(srv.port, keys, value)

        t2 = now()
        srv.terminate()
        t_exit = now()
        srv.start(wait=False)
        while kv_count(srv.port) != keys:
            pass
        t3 = now()
        fields2 = srv.wait_ready()
        restored = restored and fields2[4] == 'restored'
        return {'restart_ms': statistics.median(times), 'restart_runs_ms': times,
                'old_exit_ms': statistics.median(exits),
                'startup_ms': statistics.median(startups),
                'restart_after_exit_ms': (t3 - t2) * 1e3, 'stop_ms': (t_exit - t2) * 1e3,
                'restored': restored, 'verified': verified}
    finally:
        srv.kill()
        luod.stop()


def restart_snapshot(tmp, size, keys, value, cold):
    snap = os.path.join(tmp, 'kv-snapshot')
    port = free_port()
    srv = KvServer(['--no-luo', '--snapshot', snap, '--port', str(port),
                    '--capacity', str(size + size // 8)], tmp)
    try:
        srv.start()
        kv_load(srv.port, keys, value)
        t0 = now()
        srv.terminate()                 # writes and fsyncs the snapshot
        t_exit = now()
        dropped = cold and drop_caches()  # not timed: the next read comes from the disk
        t2 = now()
        srv.start(wait=False)
        while kv_count(port) != keys:
            pass
        t3 = now()
        return {'restart_ms': ((t_exit - t0) + (t3 - t2)) * 1e3, 'write_ms': (t_exit - t0) * 1e3,
                'read_ms': (t3 - t2) * 1e3, 'cold_cache': dropped,
                'file_bytes': os.path.getsize(snap)}
    finally:
        srv.kill()
        try:
            os.unlink(snap)
        except FileNotFoundError:
            pass


def restart_redis(tmp, keys, value, cold):
    exe = shutil.which('redis-server')
    if not exe:
        return {'skipped': 'redis-server is not installed (apt-get install redis-server)'}
    d = tempfile.mkdtemp(prefix='redis-', dir=tmp)
    port = free_port()
    args = [exe, '--port', str(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no',
            '--dir', d, '--dbfilename', 'dump.rdb', '--rdbcompression', 'no',
            '--enable-debug-command', 'yes', '--daemonize', 'no', '--protected-mode', 'no',
            '--logfile', '']
    proc = None

    def start():
        return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def dbsize():
        while True:
            try:
                r = redis_call(port, 'DBSIZE')
            except (ConnectionRefusedError, ConnectionResetError):
                time.sleep(0.0005)
                continue
            if r.startswith(':'):
                return int(r[1:])
            time.sleep(0.0005)          # -LOADING while it reads the RDB

    try:
        proc = start()
        dbsize()
        # Same number of keys, values of the same size (not compressible by the RDB writer).
        r = redis_call(port, 'DEBUG', 'POPULATE', str(keys), 'key', str(value))
        if not r.startswith('+'):
            return {'skipped': f'DEBUG POPULATE refused: {r}'}
        if not redis_call(port, 'SAVE').startswith('+'):
            return {'skipped': 'SAVE failed'}
        rdb = os.path.getsize(os.path.join(d, 'dump.rdb'))
        t0 = now()
        proc.terminate()
        proc.wait()
        t_exit = now()
        dropped = cold and drop_caches()
        t2 = now()
        proc = start()
        n = dbsize()
        t3 = now()
        if n != keys:
            return {'skipped': f'redis came back with {n} keys of {keys}'}
        return {'restart_ms': ((t_exit - t0) + (t3 - t2)) * 1e3, 'stop_ms': (t_exit - t0) * 1e3,
                'load_ms': (t3 - t2) * 1e3, 'cold_cache': dropped, 'rdb_bytes': rdb}
    finally:
        if proc and proc.poll() is None:
            proc.kill()
            proc.wait()
        shutil.rmtree(d, ignore_errors=True)


def bench_restart(a, tmp):
    if a.tiny:
        sizes, value = [4 * MIB, 16 * MIB], 4096
    else:
        sizes, value = [s * GIB for s in a.restart_gib], 64 * 1024
    out = {'benchmark': 'restart', 'value_bytes': value, 'sizes': []}
    for size in sizes:
        keys = size // value
        # kv-server's memfd plus the loader's and the snapshot's buffers must fit at once.
        need = size * 5 // 4 + 512 * MIB
        entry = {'bytes': size, 'keys': keys}
        if mem_available() < need:
            entry['skipped'] = (f'{mem_available() >> 20} MiB available, {need >> 20} MiB '
                                'needed')
            out['sizes'].append(entry)
            log(f'restart: {size >> 20} MiB: {entry["skipped"]}')
            continue
        log(f'restart: {size >> 20} MiB in {keys} keys: luo')
        entry['luo'] = restart_luo(tmp, size, keys, value, 1 if a.tiny else 7)
        log(f'restart: {size >> 20} MiB: snapshot')
        entry['snapshot'] = restart_snapshot(tmp, size, keys, value, not a.tiny)
        log(f'restart: {size >> 20} MiB: redis')
        entry['redis'] = restart_redis(tmp, keys, value, not a.tiny)
        out['sizes'].append(entry)
    done = [e for e in out['sizes'] if 'luo' in e]
    if done:
        small, big = done[0], done[-1]
        out['luo_growth'] = big['luo']['restart_ms'] / small['luo']['restart_ms']
        out['snapshot_vs_luo_at_largest'] = (big['snapshot']['restart_ms'] /
                                             big['luo']['restart_ms'])
        out['largest_bytes'] = big['bytes']
        out['target_flat_1.2x'] = out['luo_growth'] <= 1.2
        out['target_1000x_snapshot'] = out['snapshot_vs_luo_at_largest'] >= 1000
    return out


# ---- 4. no dropped connections ----

def parse_wrk(text):
    r = {'requests': 0, 'errors_connect': 0, 'errors_read': 0, 'errors_write': 0,
         'errors_timeout': 0, 'non_2xx': 0}
    m = re.search(r'(\d+) requests in', text)
    if m:
        r['requests'] = int(m.group(1))
    m = re.search(r'Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)', text)
    if m:
        (r['errors_connect'], r['errors_read'], r['errors_write'],
         r['errors_timeout']) = map(int, m.groups())
    m = re.search(r'Non-2xx or 3xx responses: (\d+)', text)
    if m:
        r['non_2xx'] = int(m.group(1))
    m = re.search(r'Requests/sec:\s+([\d.]+)', text)
    if m:
        r['requests_per_second'] = float(m.group(1))
    scale = {'us': 1e-3, 'ms': 1.0, 's': 1e3, 'm': 6e4}
    for pct, val, unit in re.findall(r'^\s+(\d+)%\s+([\d.]+)(us|ms|s|m)\s*$', text, re.M):
        r[f'latency_p{pct}_ms'] = float(val) * scale[unit]
    m = re.search(r'Latency\s+([\d.]+)(us|ms|s|m)\s+[\d.]+\w+\s+([\d.]+)(us|ms|s|m)', text)
    if m:
        r['latency_mean_ms'] = float(m.group(1)) * scale[m.group(2)]
        r['latency_max_ms'] = float(m.group(3)) * scale[m.group(4)]
    r['errors'] = (r['errors_connect'] + r['errors_read'] + r['errors_write'] +
                   r['errors_timeout'] + r['non_2xx'])
    return r


def wrk_under_restarts(tmp, with_luo, seconds, interval):
    luod = Luod(tmp) if with_luo else None
    port, http = free_port(), free_port()
    args = ['--port', str(port), '--http-port', str(http)]
    args += ['--socket', luod.socket, '--session', 'bench-wrk'] if with_luo else ['--no-luo']
    srv = KvServer(args, tmp)
    restarts, failures = 0, []
    stop = threading.Event()

    def restarter():
        nonlocal restarts
        while not stop.wait(interval):
            try:
                if with_luo:
                    # The successor starts at once and takes over from the session.
                    old = srv.proc
                    old.send_signal(signal.SIGTERM)
                    srv.start()
                    old.wait()
                else:
                    srv.kill()
                    srv.start()
                restarts += 1
            except Exception as e:      # reported, and the run goes on with what it has
                failures.append(str(e))
                return

    try:
        srv.start()
        th = threading.Thread(target=restarter)
        th.start()
        p = subprocess.run(['wrk', '-t2', '-c32', f'-d{seconds}s', '--latency', '--timeout', '5s',
                            f'http://127.0.0.1:{http}/ping'], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=seconds + 60)
        stop.set()
        th.join()
        r = parse_wrk(p.stdout)
        r['restarts'] = restarts
        if failures:
            r['restart_failure'] = failures[0]
        return r
    finally:
        stop.set()
        srv.kill()
        if luod:
            luod.stop()


def bench_wrk(a, tmp):
    if not shutil.which('wrk'):
        return {'benchmark': 'wrk', 'skipped': 'wrk is not installed (apt-get install wrk)'}
    seconds = 3 if a.tiny else a.wrk_seconds
    log(f'wrk: {seconds} s through luo, a restart every second')
    luo = wrk_under_restarts(tmp, True, seconds, 1.0)
    log(f'wrk: {seconds} s with plain stop and start, a restart every second')
    plain = wrk_under_restarts(tmp, False, seconds, 1.0)
    return {'benchmark': 'wrk', 'seconds': seconds, 'luo': luo, 'plain': plain,
            'target_zero_errors': luo['errors'] == 0 and luo['restarts'] > 0}


# ---- machine, table, main ----

def source_commit():
    try:
        head = subprocess.run(['git', '-C', SOURCE_ROOT, 'rev-parse', '--short', 'HEAD'],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(['git', '-C', SOURCE_ROOT, 'status', '--porcelain', '--', 'src',
                                'examples'], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               text=True, timeout=10).stdout.strip()
        return head + ('-dirty' if dirty else '') if head else None
    except (OSError, subprocess.SubprocessError):
        return None


def machine():
    cpu = ''
    with open('/proc/cpuinfo') as f:
        for line in f:
            if line.startswith('model name'):
                cpu = line.split(':', 1)[1].strip()
                break
    return {'nproc': os.cpu_count(), 'memory_bytes': os.sysconf('SC_PAGE_SIZE') *
            os.sysconf('SC_PHYS_PAGES'), 'kernel': platform.release(), 'cpu': cpu,
            'fd_hard_limit': resource.getrlimit(resource.RLIMIT_NOFILE)[1],
            'root': os.geteuid() == 0, 'sanitize': SANITIZE, 'commit': source_commit(),
            'date': time.strftime('%Y-%m-%d %H:%M:%S %Z')}


def fmt(v, unit=''):
    if v is None:
        return '-'
    if isinstance(v, bool):
        return 'yes' if v else 'NO'
    if isinstance(v, float):
        return f'{v:,.2f}{unit}' if abs(v) < 100 else f'{v:,.0f}{unit}'
    return f'{v:,}{unit}'


def table(results):
    rows = []

    def row(*cols):
        rows.append(cols)

    for r in results:
        b = r.get('benchmark')
        if 'skipped' in r:
            row(b, 'skipped', r['skipped'], '')
            continue
        if 'error' in r:
            row(b, 'FAILED', r['error'], '')
            continue
        if b == 'request':
            row('request', 'preserve median / p99', f"{fmt(r['preserve_median_us'])} / "
                f"{fmt(r['preserve_p99_us'])} us",
                f"floor {fmt(r['floor_send_fd_median_us'])} / {fmt(r['floor_send_fd_p99_us'])} us"
                f" ({fmt(r['preserve_vs_floor'])}x)")
            row('', 'retrieve median / p99', f"{fmt(r['retrieve_median_us'])} / "
                f"{fmt(r['retrieve_p99_us'])} us",
                f"floor {fmt(r['floor_recv_fd_median_us'])} / {fmt(r['floor_recv_fd_p99_us'])} us"
                f" ({fmt(r['retrieve_vs_floor'])}x)")
            if 'session_call_shared_median_us' in r:
                row('', 'session call: shared / own reply socket',
                    f"{fmt(r['session_call_shared_median_us'])} / "
                    f"{fmt(r['session_call_own_socket_median_us'])} us",
                    f"p99 {fmt(r['session_call_shared_p99_us'])} / "
                    f"{fmt(r['session_call_own_socket_p99_us'])} us")
            row('', 'preserves per second', fmt(r['preserve_per_second']),
                f"target >= 100,000: {fmt(r['target_100k_preserves_per_second'])}; "
                f"median <= 2x floor: {fmt(r['target_median_2x_floor'])}")
            sp = r.get('spread')
            if sp:
                row('', 'on any CPU: preserve / retrieve',
                    f"{fmt(sp.get('preserve_median_us'))} / {fmt(sp.get('retrieve_median_us'))} us",
                    f"floor {fmt(sp.get('floor_send_fd_median_us'))} / "
                    f"{fmt(sp.get('floor_recv_fd_median_us'))} us "
                    f"({fmt(sp.get('preserve_vs_floor'))}x / {fmt(sp.get('retrieve_vs_floor'))}x)")
        elif b == 'batch':
            note = f" (asked {r['requested_files']:,}: fd limit)" if 'requested_files' in r else ''
            row('batch', f"{r['files']:,} files per batch{note}",
                f"{r['rounds']} rounds, {r['per_message']} per message", 'one CPU')
            row('', 'preserve per fd', f"{fmt(r['preserve_ns_per_fd'])} ns",
                f"floor {fmt(r['floor_send_ns_per_fd'])} ns ({fmt(r['preserve_vs_floor'])}x); "
                f"{fmt(r['preserve_fds_per_second'])} fds/s")
            row('', 'retrieve per fd', f"{fmt(r['retrieve_ns_per_fd'])} ns",
                f"floor {fmt(r['floor_recv_ns_per_fd'])} ns ({fmt(r['retrieve_vs_floor'])}x); "
                f"{fmt(r['retrieve_fds_per_second'])} fds/s")
            row('', 'targets', f"<= 1.5x floor: {fmt(r['target_1.5x_floor'])}",
                f">= 500,000 fds/s: {fmt(r['target_500k_per_second'])}")
            sp = r.get('spread')
            if sp:
                row('', 'on any CPU: preserve / retrieve',
                    f"{fmt(sp.get('preserve_ns_per_fd'))} / {fmt(sp.get('retrieve_ns_per_fd'))} ns",
                    f"floor {fmt(sp.get('floor_send_ns_per_fd'))} / "
                    f"{fmt(sp.get('floor_recv_ns_per_fd'))} ns "
                    f"({fmt(sp.get('preserve_vs_floor'))}x / {fmt(sp.get('retrieve_vs_floor'))}x)")
        elif b == 'conns':
            row('conns', f"{r['connections']:,} connections{r.get('note', '')}",
                f"{r['seconds']} s, restart every {r['interval']} s", '')
            for mode in ('luo', 'listen_only'):
                m = r[mode]
                late = f"; {m['restarts_unfinished']} not done in {m['restart_wait_max_s']:g} s " \
                    f"(at least {m['unfinished_answered_min']:,} answered)" \
                    if m.get('restarts_unfinished') else ''
                row('', f"{mode.replace('_', ' ')}: {m['restarts']} restarts",
                    f"{m['resets']} resets, {m['failed']} failed of {m['requests']:,}",
                    f"blackout median {fmt(m.get('blackout_median_ms'))} max "
                    f"{fmt(m.get('blackout_max_ms'))} ms{late}")
                row('', '', f"first answer median {fmt(m.get('first_answer_median_ms'))} "
                    f"max {fmt(m.get('first_answer_max_ms'))} ms",
                    f"round (no restart) {fmt(m.get('round_median_ms'))} ms; blackout less "
                    f"round {fmt(m.get('blackout_over_round_median_ms'))} ms")
            row('', 'targets', f"0 resets, 0 failed: {fmt(r.get('target_no_loss'))}",
                f"blackout <= 20 ms: {fmt(r.get('target_20ms'))}")
        elif b == 'update':
            row('update', 'bare exec of luod', f"{fmt(r['bare_exec_us'])} us", '')
            for s in r['sizes']:
                note = f" (asked {s['requested_files']:,}: fd limit)" if 'requested_files' in s \
                    else ''
                row('', f"{s['files']:,} files{note}", f"{fmt(s['blackout_us'])} us",
                    f"stop {fmt(s['stop_us'])} exec {fmt(s['exec_us'])} restore "
                    f"{fmt(s['restore_us'])} us, journal {s['journal_size']:,} B")
            row('', 'slope', f"{fmt(r['slope_us_per_file'])} us/file",
                f"r^2 {fmt(r['fit_r2'])}; 0 files = {fmt(r['blackout_0_vs_bare_exec'])}x bare exec")
            row('', 'targets', f"<= 3 ms at 10,000: {fmt(r.get('target_3ms_at_10000'))}",
                f"<= 2x bare exec at 0: {fmt(r.get('target_2x_bare_exec_at_0'))}")
        elif b == 'recovery':
            row('recovery', 'bare exec of luod', f"{fmt(r['bare_exec_us'])} us",
                f"median of {r['repeat']} SIGKILLs of the worker per size")
            for s in r['sizes']:
                note = f" (asked {s['requested_files']:,}: fd limit)" if 'requested_files' in s \
                    else ''
                row('', f"{s['files']:,} files{note}", f"{fmt(s['recovery_us'])} us",
                    f"worker's own {fmt(s['worker_recover_us'])} us, "
                    f"{fmt(s['records_replayed'])} records, journal {s['journal_size']:,} B, "
                    f"{fmt(s['vs_bare_exec'])}x bare exec")
            row('', 'targets', f"<= 5 ms at 10,000: {fmt(r.get('target_5ms_at_10000'))}",
                f"<= 3x bare exec at 0: {fmt(r.get('target_3x_bare_exec_at_0'))}")
        elif b == 'restart':
            for s in r['sizes']:
                name = f"{s['bytes'] / GIB:g} GiB" if s['bytes'] >= GIB else \
                    f"{s['bytes'] >> 20} MiB"
                if 'skipped' in s:
                    row('restart', name, 'skipped', s['skipped'])
                    continue
                red = s['redis']
                red_s = red['skipped'] if 'skipped' in red else f"{fmt(red['restart_ms'])} ms"
                row('restart', f"{name}, {s['keys']:,} keys",
                    f"luo {fmt(s['luo']['restart_ms'])} ms "
                    f"({fmt(s['luo']['restart_after_exit_ms'])} after exit)",
                    f"snapshot {fmt(s['snapshot']['restart_ms'])} ms "
                    f"(write {fmt(s['snapshot']['write_ms'])}, read {fmt(s['snapshot']['read_ms'])}"
                    f"{'' if s['snapshot']['cold_cache'] else ', warm cache'}), redis {red_s}")
            if 'luo_growth' in r:
                row('', 'targets', f"largest/smallest {fmt(r['luo_growth'])}x "
                    f"(<= 1.2x: {fmt(r['target_flat_1.2x'])})",
                    f"snapshot/luo {fmt(r['snapshot_vs_luo_at_largest'])}x "
                    f"(>= 1000x: {fmt(r['target_1000x_snapshot'])})")
        elif b == 'wrk':
            for mode in ('luo', 'plain'):
                w = r[mode]
                row('wrk' if mode == 'luo' else '', f"{mode}: {w['restarts']} restarts",
                    f"{w['errors']} errors ({w['errors_connect']} connect)",
                    f"{w['requests']:,} req; p50 {fmt(w.get('latency_p50_ms'))} p99 "
                    f"{fmt(w.get('latency_p99_ms'))} max {fmt(w.get('latency_max_ms'))} ms")
        elif b == 'load':
            row('load', f"{r['clients']:,} clients, {r['seconds']} s",
                f"{r['updates']} live updates, 1 reboot",
                f"{r['requests']:,} requests ({fmt(r['requests_per_second'])}/s), "
                f"{r['rounds']:,} restarts; longest update answer "
                f"{fmt(r['update_answer_ms_max'])} ms; ledger exact: "
                f"{fmt(r['ledger_exact'])}")
        elif b == 'scale':
            row('scale', f"{r['file']:,} files", f"{fmt(r['pss_bytes_per_file'])} B/file",
                f"of which journal {fmt(r['journal_bytes_per_file'])}; with VmRSS "
                f"{fmt(r['bytes_per_file'])} B/file; {fmt(r['file_per_second'])}/s")
            row('', f"{r['session']:,} sessions", f"{fmt(r['pss_bytes_per_session'])} B/session",
                f"of which journal {fmt(r['journal_bytes_per_session'])}; with VmRSS "
                f"{fmt(r['bytes_per_session'])} B/session; {fmt(r['session_per_second'])}/s")
            row('', 'target <= 512 B/file', fmt(r['target_512_bytes_per_file']),
                f"fd limit {r['fd_limit']:,}")
    widths = [max(len(str(c[i])) for c in rows) for i in range(4)] if rows else [0] * 4
    for c in rows:
        print('  '.join(str(x).ljust(w) for x, w in zip(c, widths)).rstrip())


# What --check requires of each benchmark that was not skipped.
REQUIRED = {
    'request': ['preserve_median_us', 'retrieve_median_us', 'floor_send_fd_median_us',
                'floor_recv_fd_median_us', 'preserve_per_second',
                'session_call_shared_median_us', 'session_call_own_socket_median_us'],
    'batch': ['preserve_ns_per_fd', 'retrieve_ns_per_fd', 'floor_send_ns_per_fd',
              'floor_recv_ns_per_fd'],
    'conns': ['luo', 'listen_only'],
    'update': ['bare_exec_us', 'sizes', 'slope_us_per_file'],
    'recovery': ['bare_exec_us', 'sizes'],
    'restart': ['sizes'],
    'wrk': ['luo', 'plain'],
    'load': ['clients', 'updates', 'requests', 'ledger_exact'],
    'scale': ['pss_bytes_per_file', 'bytes_per_file', 'bytes_per_session',
              'file_create_seconds'],
}


def check(results):
    ok = True
    for r in results:
        b = r.get('benchmark')
        if 'error' in r:
            log(f'check: {b} failed: {r["error"]}')
            ok = False
            continue
        if 'skipped' in r:
            if not r['skipped']:
                log(f'check: {b} skipped without a reason')
                ok = False
            continue
        for k in REQUIRED[b]:
            v = r.get(k)
            if v is None or (isinstance(v, float) and v != v):
                log(f'check: {b} has no {k}')
                ok = False
        if b in ('update', 'recovery') and len(r.get('sizes', [])) < 2:
            log(f'check: {b} measured fewer than two sizes')
            ok = False
        if b == 'recovery':
            for s in r.get('sizes', []):
                v = s.get('recovery_us')
                if v is None or v != v:
                    log(f'check: recovery has no time at {s.get("files")} files')
                    ok = False
        if b == 'restart':
            for s in r['sizes']:
                if 'skipped' in s:
                    continue
                if not s['luo'].get('restored') or s['luo'].get('verified') is False:
                    log(f'check: restart lost data at {s["bytes"]} bytes')
                    ok = False
                for k in ('luo', 'snapshot'):
                    if not s[k].get('restart_ms'):
                        log(f'check: restart has no {k} time at {s["bytes"]} bytes')
                        ok = False
        if b == 'conns':
            # Not a timing: a restart through luo must lose no connection and no request.
            m = r['luo']
            if m['restarts'] <= 0 or m['resets'] or m['failed'] or m['connect_failed']:
                log(f"check: conns through luo: {m['restarts']} restarts, {m['resets']} resets, "
                    f"{m['failed']} failed requests")
                ok = False
        if b == 'wrk':
            for k in ('luo', 'plain'):
                if r[k]['requests'] <= 0 or r[k]['restarts'] <= 0:
                    log(f'check: wrk {k} made no requests or no restarts')
                    ok = False
    return ok


def main():
    ap = argparse.ArgumentParser(description='Run the luo benchmarks.')
    ap.add_argument('--json', default=os.path.join(BENCH_DIR, 'results.json'),
                    help='where to write the results (default %(default)s)')
    ap.add_argument('--only', help='comma-separated subset of ' + ','.join(ALL))
    ap.add_argument('--tiny', action='store_true', help='tiny sizes: seconds, for the test suite')
    ap.add_argument('--check', action='store_true',
                    help='exit 1 unless every benchmark produced its numbers')
    ap.add_argument('--restart-gib', default='1,4,8',
                    help='kv-server state sizes in GiB (default %(default)s)')
    ap.add_argument('--wrk-seconds', type=int, default=30)
    ap.add_argument('--conns-seconds', type=int, default=30,
                    help='how long the conns benchmark restarts kv-server (default %(default)s)')
    a = ap.parse_args()
    a.restart_gib = [int(x) for x in a.restart_gib.split(',')]
    only = a.only.split(',') if a.only else ALL
    for o in only:
        if o not in ALL:
            ap.error(f'unknown benchmark {o}')

    tmp = tempfile.mkdtemp(prefix='luo-bench-', dir=BENCH_DIR if os.path.isdir(BENCH_DIR)
                           else None)
    results = []
    try:
        for name in ALL:
            if name not in only:
                results.append({'benchmark': name, 'skipped': 'not selected (--only)'})
                continue
            log(f'{name} ...')
            t0 = now()
            try:
                if name == 'request':
                    r = bench_request(a)
                elif name == 'batch':
                    r = bench_batch(a)
                elif name == 'conns':
                    r = bench_conns(a, tmp)
                elif name == 'update':
                    r = bench_update(a)
                elif name == 'recovery':
                    r = bench_recovery(a)
                elif name == 'restart':
                    r = bench_restart(a, tmp)
                elif name == 'wrk':
                    r = bench_wrk(a, tmp)
                elif name == 'load':
                    r = bench_load(a, tmp)
                else:
                    r = bench_scale(a)
            except Exception as e:
                r = {'benchmark': name, 'error': f'{type(e).__name__}: {e}'}
            r['elapsed_seconds'] = round(now() - t0, 2)
            results.append(r)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    out = {'machine': machine(), 'tiny': a.tiny, 'results': results}
    with open(a.json, 'w') as f:
        json.dump(out, f, indent=1)
        f.write('\n')
    m = out['machine']
    print(f"luo benchmarks on {m['cpu']}, {m['nproc']} CPUs, {m['memory_bytes'] / GIB:.1f} GiB, "
          f"Linux {m['kernel']}, source {m['commit']}{' (tiny sizes)' if a.tiny else ''}")
    table(results)
    print(f'results: {a.json}')
    if a.check and not check(results):
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
