#!/usr/bin/python3
"""switchd with many VM NICs: the cost of each NIC's lifecycle, memory, reachability.

One topology in network namespaces of its own:

  ext: ext0 <-> up0 :sw (uplink, 2 queues)      vmN: eth0 (02:00:00:00:HH:LL) <-> vmN-host :sw

switchd runs in sw with its default buffer options (only --max-vmqs, and
--queue-cpus on 2 CPUs, are given). For each of --nics NICs, in order, the
benchmark times port.create + nic.create + nic.connect on one control
connection; then every VM is pinged once from ext; then each NIC's
nic.disconnect + nic.delete + port.teardown + port.delete is timed. switchd's
memory (/proc/PID/status) is read before the uplink is attached, with the
uplink and no NIC, and with every NIC connected. Namespaces and veths are
made in batches (ip -batch). Everything made here is removed at the end, on
failure and on Ctrl-C too. Nothing is sent in the root namespace.
"""

import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from benchrun import Failure, add_switchd_arg, arg_parser, log, parse, run

EXT_IP = "10.79.255.254"
EXT_MAC = "02:00:00:00:ff:fe"
BATCH = 250  # VMs pinged at once


def vm_mac(i):
    return "02:00:00:00:%02x:%02x" % ((i >> 8) & 0xff, i & 0xff)


def vm_ip(i):
    return "10.79.%d.%d" % (i // 256, i % 256)


def percentile(xs, p):
    if not xs:
        return 0.0
    s = sorted(xs)
    k = min(len(s) - 1, max(0, int(round(p / 100.0 * (len(s) - 1)))))
    return s[k]


class Control:
    """One connection to switchd's control socket (docs/protocol.md)."""

    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.connect(path)
        self.f = self.s.makefile("rwb")
        self.id = 0

    def call(self, op, **args):
        self.id += 1
        self.f.write((json.dumps({"v": 1, "id": self.id, "op": op, "args": args}) + "\n").encode())
        self.f.flush()
        line = self.f.readline()
        if not line:
            raise Failure("%s: switchd closed the control connection" % op)
        r = json.loads(line)
        if not r.get("ok"):
            raise Failure("%s %s refused: %s" % (op, args, r.get("error")))
        return r.get("result")

    def close(self):
        self.s.close()


class Bench:
    def __init__(self, a):
        self.a = a
        self.tag = "xvsc%d" % (os.getpid() % 100000)
        self.tmp = tempfile.mkdtemp(prefix="xvmq-bench-scale.")
        self.pin_root = "/sys/fs/bpf/" + self.tag
        self.namespaces = []
        self.switchd = None
        self.log_path = os.path.join(self.tmp, "switchd.log")
        self.sock = os.path.join(self.tmp, "switchd.sock")
        self.switchd_path = os.path.join(a.build, "switchd/switchd")

    def ns(self, name):
        return "%s-%s" % (self.tag, name)

    def run(self, argv, check=True, timeout=300, input=None):
        p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout,
                           input=input)
        if check and p.returncode != 0:
            raise Failure("%s: exit %d\n%s" % (" ".join(argv[:6]), p.returncode, p.stdout[-2000:]))
        return p.stdout

    def batch(self, lines, netns=None):
        argv = ["ip"] + (["-n", netns] if netns else []) + ["-batch", "-"]
        self.run(argv, input="".join(l + "\n" for l in lines))

    # ---- topology --------------------------------------------------------------

    def make(self):
        n = self.a.nics
        q = str(self.a.queues)
        names = [self.ns("sw"), self.ns("ext")] + [self.ns("vm%d" % i) for i in range(1, n + 1)]
        # Recorded first: a failure half-way still removes what was made.
        self.namespaces = names
        self.batch(["netns add " + x for x in names])
        sw, ext = self.ns("sw"), self.ns("ext")
        lines = ["link set lo up",
                 "link add up0 numrxqueues %s numtxqueues %s type veth peer name ext0 netns %s address %s "
                 "numrxqueues %s numtxqueues %s" % (q, q, ext, EXT_MAC, q, q),
                 "link set up0 addrgenmode none", "link set up0 up"]
        for i in range(1, n + 1):
            lines.append("link add vm%d-host numrxqueues %s numtxqueues %s type veth peer name eth0 netns %s "
                         "address %s numrxqueues %s numtxqueues %s" % (i, q, q, self.ns("vm%d" % i), vm_mac(i), q, q))
            lines.append("link set vm%d-host addrgenmode none" % i)
            lines.append("link set vm%d-host up" % i)
        self.batch(lines, sw)
        self.batch(["link set lo up", "link set ext0 addrgenmode none", "addr add %s/16 dev ext0" % EXT_IP,
                    "link set ext0 up"], ext)
        # One ip per VM: its namespace's own batch. The outside's MAC is a
        # permanent neighbour in every VM: the kernel's ARP table is shared by
        # all namespaces (gc_thresh3, 1024 entries by default), and a thousand
        # VMs each learning the outside would overflow it. ext still resolves
        # each VM by ARP through the switch, BATCH at a time, flushed between.
        script = os.path.join(self.tmp, "vms.sh")
        with open(script, "w") as f:
            f.write("set -e\n")
            for i in range(1, n + 1):
                f.write("printf 'link set lo up\\nlink set eth0 addrgenmode none\\naddr add %s/16 dev eth0\\n"
                        "link set eth0 up\\nneigh replace %s lladdr %s dev eth0 nud permanent\\n' | ip -n %s -batch -\n"
                        % (vm_ip(i), EXT_IP, EXT_MAC, self.ns("vm%d" % i)))
        self.run(["sh", script])

    def start_switchd(self):
        os.makedirs(self.pin_root, exist_ok=True)
        argv = ["nsenter", "--net=/run/netns/" + self.ns("sw"), self.switchd_path, "--socket", self.sock,
                "--state-dir", os.path.join(self.tmp, "state"), "--pin-root", self.pin_root,
                "--max-vmqs", str(self.a.max_vmqs), "--detach-on-exit"]
        if (os.cpu_count() or 1) >= 2:
            argv += ["--queue-cpus", "0:0,1:1"]
        argv += self.a.switchd_args
        env = dict(os.environ, LIBXDP_BPFFS=self.pin_root)
        self.switchd = subprocess.Popen(argv, stdout=open(self.log_path, "w"), stderr=subprocess.STDOUT,
                                        start_new_session=True, env=env)
        for _ in range(500):
            if os.path.exists(self.sock):
                try:
                    return Control(self.sock)
                except OSError:
                    pass
            if self.switchd.poll() is not None:
                raise Failure("switchd exited:\n" + open(self.log_path).read())
            time.sleep(0.02)
        raise Failure("switchd's socket not ready")

    def memory(self):
        out = {}
        with open("/proc/%d/status" % self.switchd.pid) as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("VmRSS", "VmPinned", "VmLck", "RssAnon", "VmHWM"):
                    out[k] = int(v.split()[0]) * 1024
        out["fds"] = len(os.listdir("/proc/%d/fd" % self.switchd.pid))
        # The kernel's side (the whole machine's: other work shows too):
        # each AF_XDP socket's buffer pool is in Slab or vmalloc.
        with open("/proc/meminfo") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("Slab", "VmallocUsed"):
                    out["kernel_" + k] = int(v.split()[0]) * 1024
        return out

    def teardown(self):
        log("==> tearing down")
        if self.switchd is not None and self.switchd.poll() is None:
            t0 = time.monotonic()
            os.killpg(self.switchd.pid, signal.SIGTERM)
            try:
                self.switchd.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.switchd.pid, signal.SIGKILL)
                self.switchd.wait()
            log("  switchd stopped in %.2f s" % (time.monotonic() - t0))
        if self.namespaces:
            subprocess.run(["ip", "-force", "-batch", "-"], input="".join("netns del %s\n" % x for x in self.namespaces),
                           text=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shutil.rmtree(self.pin_root, ignore_errors=True)
        shutil.rmtree(self.tmp, ignore_errors=True)

    # ---- measuring -------------------------------------------------------------

    def reachability(self):
        """Each VM pinged from ext (2 requests, up to 4 s), BATCH at a time: the VMs that answered."""
        n = self.a.nics
        answered = set()
        for lo in range(1, n + 1, BATCH):
            hi = min(n, lo + BATCH - 1)
            self.run(["ip", "-n", self.ns("ext"), "neigh", "flush", "dev", "ext0"], check=False)
            script = "".join("(ping -n -q -c 2 -i 0.2 -W 2 -w 4 %s >/dev/null 2>&1 && echo OK %d) &\n" % (vm_ip(i), i)
                             for i in range(lo, hi + 1)) + "wait\n"
            out = self.run(["nsenter", "--net=/run/netns/" + self.ns("ext"), "sh", "-c", script], check=False)
            for line in out.splitlines():
                if line.startswith("OK "):
                    answered.add(int(line[3:]))
        return answered

    def per_nic(self, done, steps):
        """Times steps(i, port) for each NIC in order; logs every 100th."""
        times = []
        for i in range(1, self.a.nics + 1):
            t0 = time.perf_counter()
            steps(i, "vm%d" % i)
            times.append(time.perf_counter() - t0)
            if i % 100 == 0:
                log("  %s %d/%d (last 100: median %.1f ms)" % (done, i, self.a.nics, 1e3 * statistics.median(times[-100:])))
        return times

    def main(self):
        a = self.a
        load0 = os.getloadavg()
        t = time.monotonic()
        log("==> %d VM NICs on a %d-queue uplink, namespaces %s-*" % (a.nics, a.queues, self.tag))
        self.make()
        setup_s = time.monotonic() - t
        log("  namespaces and veths: %.1f s" % setup_s)
        ctl = self.start_switchd()
        mem_start = self.memory()
        ctl.call("uplink.attach", name="up0")
        time.sleep(0.5)
        mem0 = self.memory()
        show0 = ctl.call("show")
        def connect_nic(i, port):
            ctl.call("port.create", name=port)
            ctl.call("nic.create", port=port, mac=vm_mac(i), backend=port + "-host", vmq="auto")
            ctl.call("nic.connect", port=port)
        connect = self.per_nic("connected", connect_nic)
        time.sleep(0.5)
        mem1 = self.memory()
        show1 = ctl.call("show")
        t0 = time.monotonic()
        answered = self.reachability()
        reach_s = time.monotonic() - t0
        log("  reachable from outside: %d/%d (%.1f s)" % (len(answered), a.nics, reach_s))
        stats = ctl.call("stats")
        def remove_nic(_, port):
            ctl.call("nic.disconnect", port=port)
            ctl.call("nic.delete", port=port)
            ctl.call("port.teardown", name=port)
            ctl.call("port.delete", name=port)
        disconnect = self.per_nic("removed", remove_nic)
        time.sleep(0.5)
        mem2 = self.memory()
        stats_end = ctl.call("stats")
        ctl.close()
        load1 = os.getloadavg()
        return self.report(setup_s, connect, disconnect, mem_start, mem0, mem1, mem2, answered, reach_s, show0, show1,
                           stats, stats_end, load0, load1)

    def report(self, setup_s, connect, disconnect, mem_start, mem0, mem1, mem2, answered, reach_s, show0, show1,
               stats, stats_end, load0, load1):
        a = self.a

        def timing(xs):
            return {"median_ms": 1e3 * statistics.median(xs), "p99_ms": 1e3 * percentile(xs, 99),
                    "max_ms": 1e3 * max(xs), "total_s": sum(xs)}

        up = show1["uplink"]
        nic_buf = next((p["nic"].get("buffers") for p in show1["ports"] if p["nic"]), None)
        silent = sorted(set(range(1, a.nics + 1)) - answered)
        drops = {}
        for n, s in stats["nics"].items():
            for k in ("xsk_rx_dropped", "xsk_vmq_rx_dropped"):
                if s["drops"].get(k):
                    drops[n + " " + k] = s["drops"][k]
        rep = {
            "nics": a.nics,
            "queues": a.queues,
            "switchd_options": {"max_vmqs": a.max_vmqs, "extra": a.switchd_args},
            "setup_s": setup_s,
            "create_connect": timing(connect),
            "disconnect_delete": timing(disconnect),
            "memory": {"before_attach": mem_start, "nics_0": mem0, "nics_all": mem1, "after_removal": mem2,
                       "rss_per_nic_bytes": (mem1["VmRSS"] - mem0["VmRSS"]) / a.nics,
                       "kernel_per_nic_bytes": (mem1["kernel_Slab"] + mem1["kernel_VmallocUsed"] - mem0["kernel_Slab"] -
                                                mem0["kernel_VmallocUsed"]) / a.nics,
                       "fds_per_nic": (mem1["fds"] - mem0["fds"]) / a.nics},
            "buffers": {"queue": up["queues"][0].get("buffers"), "pinned_bytes": up.get("pinned_bytes"),
                        "per_nic": nic_buf},
            "reachable": len(answered),
            "unreachable": ["vm%d" % i for i in silent[:50]],
            "reachability_s": reach_s,
            "socket_drops": drops,
            "pools_after_removal": [q["buffers"] for q in stats_end["queues"]],
            "machine": {"cpu_model": cpu_model(), "nproc": os.cpu_count(), "kernel": platform.release(),
                        "loadavg_start": load0, "loadavg_end": load1},
        }
        with open(a.json, "w") as f:
            json.dump(rep, f, indent=2)
            f.write("\n")
        log("==> wrote %s" % a.json)
        return rep


def cpu_model():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def mib(x):
    return "%.1f MiB" % (x / 1048576.0) if x is not None else "-"


def print_table(r):
    n = r["nics"]
    m = r["memory"]
    b = r["buffers"]
    rows = [
        ("NICs", "%d on a %d-queue uplink" % (n, r["queues"])),
        ("create+connect per NIC", "median %.1f ms, p99 %.1f ms, total %.1f s" %
         (r["create_connect"]["median_ms"], r["create_connect"]["p99_ms"], r["create_connect"]["total_s"])),
        ("disconnect+delete per NIC", "median %.1f ms, p99 %.1f ms, total %.1f s" %
         (r["disconnect_delete"]["median_ms"], r["disconnect_delete"]["p99_ms"], r["disconnect_delete"]["total_s"])),
        ("reachable from outside", "%d/%d (%.1f s)" % (r["reachable"], n, r["reachability_s"])),
        ("switchd VmRSS", "%s before attach, %s at 0 NICs, %s at %d, %s after removing them" %
         (mib(m["before_attach"]["VmRSS"]), mib(m["nics_0"]["VmRSS"]), mib(m["nics_all"]["VmRSS"]), n,
          mib(m["after_removal"]["VmRSS"]))),
        ("switchd VmPinned / VmLck", "%s / %s at %d NICs" % (mib(m["nics_all"].get("VmPinned")),
                                                             mib(m["nics_all"].get("VmLck")), n)),
        ("RSS per NIC", "%.1f KiB; fds per NIC %.1f" % (m["rss_per_nic_bytes"] / 1024.0, m["fds_per_nic"])),
        ("kernel memory per NIC", "%.2f MiB (Slab + VmallocUsed, whole machine, %s at 0 NICs -> %s at %d)" %
         (m["kernel_per_nic_bytes"] / 1048576.0, mib(m["nics_0"]["kernel_Slab"] + m["nics_0"]["kernel_VmallocUsed"]),
          mib(m["nics_all"]["kernel_Slab"] + m["nics_all"]["kernel_VmallocUsed"]), n)),
        ("UMEM per queue", "%s (%d frames), %s pinned in all" %
         (mib(b["queue"]["umem_bytes"]), b["queue"]["frames"], mib(b["pinned_bytes"]))),
        ("buffers reserved per NIC", "%s (%d frames over %d sockets)" %
         (mib(b["per_nic"]["reserved_bytes"]), b["per_nic"]["reserved_frames"], b["per_nic"]["sockets"])
         if b["per_nic"] else "-"),
        ("kernel drops at sockets", ", ".join("%s %d" % kv for kv in r["socket_drops"].items()) or "none"),
    ]
    w = max(len(k) for k, _ in rows)
    for k, v in rows:
        print("%-*s  %s" % (w, k, v))


def parse_args():
    p = arg_parser("switchd with many VM NICs: lifecycle cost per NIC, memory, reachability",
                   "the build directory (switchd)")
    p.add_argument("--nics", type=int, default=1000, help="VM NICs (default 1000)")
    p.add_argument("--queues", type=int, default=2, help="receive queues of the uplink and of each backend (default 2)")
    p.add_argument("--max-vmqs", type=int, default=8, help="switchd --max-vmqs (default 8)")
    add_switchd_arg(p, "--switchd-arg=--max-nics --switchd-arg=2048")
    a = parse(p, "bench-scale.json")
    if not 1 <= a.nics <= 60000:
        p.error("--nics: 1..60000")
    return a


def main():
    a = parse_args()
    return run(("ip", "ping", "nsenter"), lambda: Bench(a), print_table, lambda b: b.log_path, 30)


if __name__ == "__main__":
    sys.exit(main())
