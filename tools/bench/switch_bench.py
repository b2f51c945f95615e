#!/usr/bin/python3
"""xvmq against the Linux bridge: frames per second, ping RTT and TCP.

Three copies of one topology, each in network namespaces of its own, so the
cases can alternate round after round without reconfiguring anything:

  ext: ext0 <-> up0 :sw                vmN: eth0 (02:00:00:00:00:0N) <-> vmN-host :sw

  ceiling  up0 drops every frame (XDP_DROP, tools/bench/drop.bpf.c)
  bridge   br0 in sw joins up0, vm1-host and vm2-host
  xvmq     switchd owns up0 (the uplink); vm1's NIC has a vmq, vm2's none

The generator (trafgen, qdisc bypass) runs in ext (or in vm1, VM to VM)
pinned to one CPU; a case's rate is the rx_packets delta of the receiving
VM's eth0, read inside its namespace, over the measured interval (for the
ceiling, up0's). Everything made here is removed at the end, on failure and
on Ctrl-C too. Nothing is sent in the root namespace.
"""

import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

from benchrun import Failure, add_switchd_arg, arg_parser, log, parse, run

NET = "10.231.0."
EXT_MAC = "02:00:00:00:00:fe"
EXT_IP = NET + "254"


def vm_mac(i):
    return "02:00:00:00:00:%02x" % i


def vm_ip(i):
    return NET + str(i)


class Bench:
    def __init__(self, args):
        self.a = args
        self.build = args.build
        tag = "xvsb%d" % (os.getpid() % 100000)
        self.tag = tag
        self.tmp = tempfile.mkdtemp(prefix="xvmq-bench-switch.")
        self.pin_root = "/sys/fs/bpf/" + tag
        self.namespaces = []
        self.procs = []  # Popen objects started here, each its own process group
        self.switchd = None
        self.switchd_log = os.path.join(self.tmp, "switchd.log")
        self.sock = os.path.join(self.tmp, "switchd.sock")
        self.gen_cpu = args.cpu
        self.switchctl_path = os.path.join(self.build, "tools/switchctl/switchctl")
        self.switchd_path = os.path.join(self.build, "switchd/switchd")
        self.drop_obj = os.path.join(self.build, "tools/bench/drop.bpf.o")

    # ---- running things ----------------------------------------------------

    def ns(self, world, name):
        return "%s-%s-%s" % (self.tag, world, name)

    def cmd_in(self, ns, argv):
        return ["nsenter", "--net=/run/netns/" + ns] + argv

    def run(self, argv, check=True, timeout=60, env=None):
        p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=timeout, env=env)
        if check and p.returncode != 0:
            raise Failure("%s: exit %d\n%s" % (" ".join(argv), p.returncode, p.stdout))
        return p.stdout

    def inns(self, ns, argv, **kw):
        return self.run(self.cmd_in(ns, argv), **kw)

    def start(self, argv, out=None, env=None):
        f = open(out, "w") if out else subprocess.DEVNULL
        p = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, start_new_session=True, env=env)
        self.procs.append(p)
        return p

    def stop(self, p, sig=signal.SIGINT, wait=5):
        if p.poll() is None:
            try:
                os.killpg(p.pid, sig)
            except ProcessLookupError:
                pass
            try:
                p.wait(wait)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        if p in self.procs:
            self.procs.remove(p)

    def teardown(self):
        log("==> tearing down")
        for p in list(self.procs):
            if p is not self.switchd:
                self.stop(p, signal.SIGKILL)
        if self.switchd is not None:
            self.stop(self.switchd, signal.SIGTERM, wait=10)
        for ns in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", ns], stderr=subprocess.DEVNULL)
        shutil.rmtree(self.pin_root, ignore_errors=True)
        shutil.rmtree(self.tmp, ignore_errors=True)

    # ---- topology ----------------------------------------------------------

    def add_ns(self, ns):
        self.run(["ip", "netns", "add", ns])
        self.namespaces.append(ns)
        self.inns(ns, ["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1",
                       "net.ipv6.conf.default.disable_ipv6=1"])
        self.inns(ns, ["ip", "link", "set", "lo", "up"])

    def offloads_off(self, ns, dev):
        # Segments that fit a frame on every path: AF_XDP carries no GSO.
        self.inns(ns, ["ethtool", "-K", dev, "tx", "off", "gso", "off", "tso", "off", "gro", "off"])

    def make_world(self, world, vms):
        ext, sw = self.ns(world, "ext"), self.ns(world, "sw")
        self.add_ns(ext)
        self.add_ns(sw)
        self.run(["ip", "-n", ext, "link", "add", "ext0", "address", EXT_MAC, "numrxqueues", "2",
                  "numtxqueues", "2", "type", "veth", "peer", "name", "up0", "netns", sw,
                  "numrxqueues", "2", "numtxqueues", "2"])
        self.offloads_off(ext, "ext0")
        self.run(["ip", "-n", ext, "addr", "add", EXT_IP + "/24", "dev", "ext0"])
        self.run(["ip", "-n", ext, "link", "set", "ext0", "up"])
        self.run(["ip", "-n", sw, "link", "set", "up0", "up"])
        for i in range(1, vms + 1):
            vm = self.ns(world, "vm%d" % i)
            self.add_ns(vm)
            self.run(["ip", "-n", sw, "link", "add", "vm%d-host" % i, "numrxqueues", "2", "numtxqueues", "2",
                      "type", "veth", "peer", "name", "eth0", "netns", vm, "address", vm_mac(i),
                      "numrxqueues", "2", "numtxqueues", "2"])
            self.offloads_off(vm, "eth0")
            self.run(["ip", "-n", vm, "addr", "add", vm_ip(i) + "/24", "dev", "eth0"])
            self.run(["ip", "-n", vm, "link", "set", "eth0", "up"])
            self.run(["ip", "-n", sw, "link", "set", "vm%d-host" % i, "up"])

    def make_ceiling(self):
        self.make_world("ceil", 0)
        self.run(["ip", "-n", self.ns("ceil", "sw"), "link", "set", "dev", "up0", "xdpdrv",
                  "obj", self.drop_obj, "sec", "xdp"])

    def make_bridge(self):
        self.make_world("br", 2)
        sw = self.ns("br", "sw")
        self.run(["ip", "-n", sw, "link", "add", "br0", "type", "bridge"])
        for dev in ("up0", "vm1-host", "vm2-host"):
            self.run(["ip", "-n", sw, "link", "set", dev, "master", "br0"])
        self.run(["ip", "-n", sw, "link", "set", "br0", "up"])
        # Known destinations, as xvmq's NICs are: no flooding while it learns.
        for i in (1, 2):
            self.inns(sw, ["bridge", "fdb", "replace", vm_mac(i), "dev", "vm%d-host" % i, "master", "static"])

    def switchctl(self, *argv):
        return self.run([self.switchctl_path, "--socket", self.sock] + list(argv))

    def make_xvmq(self):
        self.make_world("xv", 2)
        os.makedirs(self.pin_root, exist_ok=True)
        env = dict(os.environ, LIBXDP_BPFFS=self.pin_root)
        argv = [self.switchd_path, "--socket", self.sock, "--state-dir", os.path.join(self.tmp, "state"),
                "--pin-root", self.pin_root, "--max-vmqs", "2", "--detach-on-exit"]
        if self.a.queue_cpus:
            argv += ["--queue-cpus", self.a.queue_cpus]
        if self.a.rt_priority:
            argv += ["--rt-priority", str(self.a.rt_priority)]
        argv += self.a.switchd_args
        self.switchd = self.start(self.cmd_in(self.ns("xv", "sw"), argv), out=self.switchd_log, env=env)
        for _ in range(500):
            if os.path.exists(self.sock):
                break
            if self.switchd.poll() is not None:
                raise Failure("switchd exited:\n" + open(self.switchd_log).read())
            time.sleep(0.02)
        else:
            raise Failure("switchd's socket not ready")
        self.switchctl("uplink", "attach", "up0")
        for i, vmq in ((1, "auto"), (2, "off")):
            port = "vm%d" % i
            self.switchctl("port", "create", port)
            self.switchctl("nic", "create", port, "--mac", vm_mac(i), "--backend", port + "-host", "--vmq", vmq)
            self.switchctl("nic", "connect", port)
        show = json.loads(self.switchctl("--json", "show"))
        paths = {p["name"]: p["nic"]["path"] for p in show["ports"]}
        if paths != {"vm1": "vmq", "vm2": "default"}:
            raise Failure("unexpected paths: %s" % paths)
        self.xvmq_show = show

    # ---- counters ----------------------------------------------------------

    def netdev(self, ns, dev):
        """(rx_packets, tx_packets) of dev, from /proc/net/dev inside ns."""
        out = self.inns(ns, ["cat", "/proc/net/dev"])
        for line in out.splitlines():
            name, _, rest = line.partition(":")
            if name.strip() == dev:
                f = rest.split()
                return int(f[1]), int(f[9])
        raise Failure("no %s in %s" % (dev, ns))

    def switch_stats(self):
        return json.loads(self.switchctl("--json", "stats"))

    # ---- the frame cases ---------------------------------------------------

    def trafgen_conf(self, src, dst, src_ip, dst_ip, size):
        """One IPv4/UDP frame of `size` bytes (no FCS), pinned to the generator's CPU.

        The IPv4 checksum is valid (br_netfilter drops bad ones); the
        destination is an address nobody has, so the VM's stack drops the
        frame at once without answering."""
        mac = lambda m: ", ".join("0x" + b for b in m.split(":"))
        ip = lambda a: ", ".join(a.split("."))
        pad = size - 42
        return ("cpu(%d): { %s, %s, c16(0x0800),\n"
                "  0x45, 0x00, c16(%d), c16(0), c16(0), 64, 17, csumip(14, 33), %s, %s,\n"
                "  c16(9), c16(9), c16(%d), c16(0), fill(0x55, %d) }\n"
                % (self.gen_cpu, mac(dst), mac(src), size - 14, ip(src_ip), ip(dst_ip), pad + 8, pad))

    def frame_case(self, case, size):
        """Frames per second received by the case's counting netdev over the measured interval."""
        gen_ns, gen_dev, src, dst, src_ip, cnt_ns, cnt_dev = case["gen"]
        conf = os.path.join(self.tmp, "trafgen-%s-%d.cfg" % (case["id"], size))
        with open(conf, "w") as f:
            f.write(self.trafgen_conf(src, dst, src_ip, NET + "200", size))
        stats0 = self.switch_stats() if case["world"] == "xv" else None
        # trafgen forks one sender per CPU up to the one named: only that one has a frame to send.
        gen = self.start(self.cmd_in(gen_ns, ["trafgen", "-o", gen_dev, "-i", conf, "-P", str(self.gen_cpu + 1),
                                              "-Q", "--no-sock-mem"]),
                         out=os.path.join(self.tmp, "trafgen.out"))
        try:
            time.sleep(self.a.warmup)
            if gen.poll() is not None:
                raise Failure("trafgen exited:\n" + open(os.path.join(self.tmp, "trafgen.out")).read())
            t0 = time.monotonic()
            rx0, _ = self.netdev(cnt_ns, cnt_dev)
            _, tx0 = self.netdev(gen_ns, gen_dev)
            t1 = time.monotonic()
            time.sleep(self.a.seconds)
            t2 = time.monotonic()
            rx1, _ = self.netdev(cnt_ns, cnt_dev)
            _, tx1 = self.netdev(gen_ns, gen_dev)
            t3 = time.monotonic()
        finally:
            self.stop(gen)
        dt = ((t2 + t3) - (t0 + t1)) / 2
        r = {"pps": (rx1 - rx0) / dt, "sent_pps": (tx1 - tx0) / dt}
        if stats0 is not None:
            r["switch_counters"] = counter_delta(stats0, self.switch_stats())
        return r

    # ---- ping and iperf3 -----------------------------------------------------

    def ping(self, src_ns, dst_ip, count):
        self.inns(src_ns, ["ping", "-c", "3", "-i", "0.2", "-W", "1", dst_ip], check=False)  # ARP, caches
        out = self.inns(src_ns, ["ping", "-c", str(count), "-i", str(self.a.ping_interval), "-W", "1", dst_ip],
                        check=False, timeout=count * self.a.ping_interval + 30)
        rtts = [float(m) * 1000 for m in re.findall(r"time=([0-9.]+) ms", out)]
        if not rtts:
            raise Failure("no ping reply from %s in %s:\n%s" % (dst_ip, src_ns, out))
        return {"p50_us": percentile(rtts, 50), "p99_us": percentile(rtts, 99), "replies": len(rtts), "sent": count}

    def iperf(self, client_ns, server_ns, dst_ip, seconds):
        port = "5201"
        srv = self.start(self.cmd_in(server_ns, ["iperf3", "-s", "-1", "-B", dst_ip, "-p", port]))
        try:
            for _ in range(200):
                if ":" + port in self.inns(server_ns, ["ss", "-Hltn", "sport = :" + port]):
                    break
                time.sleep(0.025)
            out = self.inns(client_ns, ["iperf3", "-c", dst_ip, "-p", port, "-t", str(seconds), "-J",
                                        "--connect-timeout", "3000"], check=False, timeout=seconds + 30)
        finally:
            self.stop(srv, signal.SIGTERM)
        try:
            j = json.loads(out[out.index("{"):out.rindex("}") + 1])
            return {"mbps": j["end"]["sum_received"]["bits_per_second"] / 1e6,
                    "retransmits": j["end"]["sum_sent"].get("retransmits", 0)}
        except (ValueError, KeyError) as e:
            raise Failure("iperf3 %s -> %s: %s\n%s" % (client_ns, dst_ip, e, out))

    # ---- the run -------------------------------------------------------------

    def cases(self):
        n = self.ns
        return [
            {"id": "ceiling", "world": "ceil", "kind": "ext", "what": "ceiling: XDP_DROP on up0",
             "gen": (n("ceil", "ext"), "ext0", EXT_MAC, vm_mac(1), EXT_IP, n("ceil", "sw"), "up0")},
            {"id": "bridge", "world": "br", "kind": "ext", "what": "bridge: up0 -> br0 -> vm1",
             "gen": (n("br", "ext"), "ext0", EXT_MAC, vm_mac(1), EXT_IP, n("br", "vm1"), "eth0")},
            {"id": "xvmq_vmq", "world": "xv", "kind": "ext", "what": "xvmq VMQ path: up0 -> vmq -> vm1",
             "gen": (n("xv", "ext"), "ext0", EXT_MAC, vm_mac(1), EXT_IP, n("xv", "vm1"), "eth0")},
            {"id": "xvmq_default", "world": "xv", "kind": "ext", "what": "xvmq default path: up0 -> switch -> vm2",
             "gen": (n("xv", "ext"), "ext0", EXT_MAC, vm_mac(2), EXT_IP, n("xv", "vm2"), "eth0")},
            {"id": "bridge_vm2vm", "world": "br", "kind": "vm2vm", "what": "bridge VM to VM: vm1 -> br0 -> vm2",
             "gen": (n("br", "vm1"), "eth0", vm_mac(1), vm_mac(2), vm_ip(1), n("br", "vm2"), "eth0")},
            {"id": "xvmq_vm2vm", "world": "xv", "kind": "vm2vm", "what": "xvmq VM to VM: vm1 -> switch -> vm2",
             "gen": (n("xv", "vm1"), "eth0", vm_mac(1), vm_mac(2), vm_ip(1), n("xv", "vm2"), "eth0")},
        ]

    def main(self):
        a = self.a
        load0 = os.getloadavg()
        log("==> topology: ceiling, bridge and xvmq copies in namespaces %s-*" % self.tag)
        self.make_ceiling()
        self.make_bridge()
        self.make_xvmq()
        cases = [c for c in self.cases() if not a.cases or c["id"] in a.cases]
        sizes = a.sizes
        frames = {(c["id"], s): [] for c in cases for s in sizes}
        lat_keys = [] if a.no_latency else [("bridge", "ext_vm"), ("xvmq", "ext_vm"), ("bridge", "vm_vm"),
                                            ("xvmq", "vm_vm")]
        pings = {k: [] for k in lat_keys}
        iperfs = {k: [] for k in lat_keys}
        world = {"bridge": "br", "xvmq": "xv"}
        t_start = time.monotonic()
        for r in range(1, a.rounds + 1):
            for s in sizes:
                for c in cases:
                    res = self.frame_case(c, s)
                    res["round"] = r
                    frames[(c["id"], s)].append(res)
                    log("  round %d/%d  %-42s %4d B  %9.0f fps  (sent %9.0f)"
                        % (r, a.rounds, c["what"], s, res["pps"], res["sent_pps"]))
            for sys_, path in lat_keys:
                w = world[sys_]
                src, dst = (self.ns(w, "ext"), vm_ip(1)) if path == "ext_vm" else (self.ns(w, "vm1"), vm_ip(2))
                p = self.ping(src, dst, a.pings)
                p["round"] = r
                pings[(sys_, path)].append(p)
                log("  round %d/%d  ping   %-6s %-6s p50 %7.1f us  p99 %7.1f us  (%d/%d replies)"
                    % (r, a.rounds, sys_, path, p["p50_us"], p["p99_us"], p["replies"], p["sent"]))
            for sys_, path in lat_keys:
                w = world[sys_]
                cl, sv, dst = ((self.ns(w, "ext"), self.ns(w, "vm1"), vm_ip(1)) if path == "ext_vm"
                               else (self.ns(w, "vm1"), self.ns(w, "vm2"), vm_ip(2)))
                i = self.iperf(cl, sv, dst, a.iperf_seconds)
                i["round"] = r
                iperfs[(sys_, path)].append(i)
                log("  round %d/%d  iperf3 %-6s %-6s %9.1f Mbit/s  (%d retransmits)"
                    % (r, a.rounds, sys_, path, i["mbps"], i["retransmits"]))
            log("  round %d/%d done after %.0f s, load average %s"
                % (r, a.rounds, time.monotonic() - t_start, " ".join("%.2f" % x for x in os.getloadavg())))
        load1 = os.getloadavg()
        report = self.report(cases, frames, pings, iperfs, load0, load1)
        with open(a.json, "w") as f:
            json.dump(report, f, indent=2)
            f.write("\n")
        log("==> wrote %s" % a.json)
        return report

    # ---- the report ----------------------------------------------------------

    def report(self, cases, frames, pings, iperfs, load0, load1):
        a = self.a
        ref_of = {"ext": "bridge", "vm2vm": "bridge_vm2vm"}

        def ratio(cid, ref, s):
            # Per round: the cases of one round ran next to each other, on the
            # same machine load.
            xs = [x["pps"] / y["pps"] for x, y in zip(frames[(cid, s)], frames.get((ref, s), [])) if y["pps"] > 0]
            return statistics.median(xs) if xs else None

        rows = []
        for s in a.sizes:
            for c in cases:
                rates = [x["pps"] for x in frames[(c["id"], s)]]
                row = {"case": c["id"], "what": c["what"], "frame_bytes": s, "fps_median": statistics.median(rates),
                       "fps_min": min(rates), "fps_max": max(rates), "fps_runs": rates,
                       "sent_fps_median": statistics.median(x["sent_pps"] for x in frames[(c["id"], s)]),
                       "x_bridge": None if c["id"] == "ceiling" else ratio(c["id"], ref_of[c["kind"]], s),
                       "x_ceiling": ratio(c["id"], "ceiling", s)}
                counters = [x["switch_counters"] for x in frames[(c["id"], s)] if "switch_counters" in x]
                if counters:
                    row["switch_counters_last_run"] = counters[-1]
                rows.append(row)

        lat = []
        for path in ("ext_vm", "vm_vm") if pings else ():
            for sys_ in ("bridge", "xvmq"):
                ps, ips = pings[(sys_, path)], iperfs[(sys_, path)]
                bp, bi = pings[("bridge", path)], iperfs[("bridge", path)]
                lat.append({
                    "system": sys_, "path": path,
                    "ping_p50_us": statistics.median(p["p50_us"] for p in ps),
                    "ping_p99_us": statistics.median(p["p99_us"] for p in ps),
                    "ping_p99_us_runs": [p["p99_us"] for p in ps],
                    "ping_replies": sum(p["replies"] for p in ps), "ping_sent": sum(p["sent"] for p in ps),
                    "p50_x_bridge": statistics.median(x["p50_us"] / y["p50_us"] for x, y in zip(ps, bp)),
                    "p99_x_bridge": statistics.median(x["p99_us"] / y["p99_us"] for x, y in zip(ps, bp)),
                    "iperf_mbps": statistics.median(i["mbps"] for i in ips),
                    "iperf_mbps_runs": [i["mbps"] for i in ips],
                    "iperf_x_bridge": statistics.median(x["mbps"] / y["mbps"] for x, y in zip(ips, bi)),
                    "iperf_retransmits": sum(i["retransmits"] for i in ips)})

        def row_of(cid, s):
            return next((r for r in rows if r["case"] == cid and r["frame_bytes"] == s), {})

        def lat_of(sys_, path):
            return next((x for x in lat if x["system"] == sys_ and x["path"] == path), {})

        small = min(a.sizes)
        targets = [
            {"target": "VMQ path >= 1.5 x bridge at %d B" % small,
             "value": row_of("xvmq_vmq", small).get("x_bridge"), "limit": 1.5, "ok": None},
            {"target": "VMQ path >= 0.8 x ceiling at %d B" % small,
             "value": row_of("xvmq_vmq", small).get("x_ceiling"), "limit": 0.8, "ok": None},
        ]
        for s in a.sizes:
            targets.append({"target": "default path >= 1.0 x bridge at %d B" % s,
                            "value": row_of("xvmq_default", s).get("x_bridge"), "limit": 1.0, "ok": None})
        for path in ("ext_vm", "vm_vm"):
            targets.append({"target": "ping p99 %s <= 1.2 x bridge" % path.replace("_", " to "),
                            "value": lat_of("xvmq", path).get("p99_x_bridge"), "limit": 1.2, "ok": None, "at_most": True})
        for t in targets:
            v = t["value"]
            t["ok"] = v is not None and (v <= t["limit"] if t.get("at_most") else v >= t["limit"])

        return {
            "machine": machine(load0, load1),
            "config": {"rounds": a.rounds, "seconds": a.seconds, "warmup_seconds": a.warmup,
                       "frame_bytes": a.sizes, "generator": "trafgen (netsniff-ng), PACKET_QDISC_BYPASS, 1 process",
                       "generator_cpu": self.gen_cpu, "switchd_queue_cpus": self.a.queue_cpus, "switchd_rt_priority": self.a.rt_priority,
                       "pings": a.pings, "ping_interval_s": a.ping_interval, "iperf_seconds": a.iperf_seconds,
                       "offloads": "tx, gso, tso, gro off on ext0 and every eth0 (both systems)",
                       "counted": "rx_packets of the receiving VM's eth0 in its namespace (ceiling: up0's)"},
            "frames": rows, "latency_tcp": lat, "targets": targets}


def counter_delta(a, b):
    """The numeric leaves of b that differ from a, as b - a, flattened with dots."""
    out = {}

    def walk(x, y, path):
        if isinstance(y, dict):
            for k, v in y.items():
                walk(x.get(k) if isinstance(x, dict) else None, v, path + [str(k)])
        elif isinstance(y, list):
            for i, v in enumerate(y):
                walk(x[i] if isinstance(x, list) and i < len(x) else None, v, path + [str(i)])
        elif isinstance(y, (int, float)) and not isinstance(y, bool):
            d = y - (x if isinstance(x, (int, float)) else 0)
            if d:
                out[".".join(path)] = d
    walk(a, b, [])
    return out


def percentile(xs, p):
    xs = sorted(xs)
    k = (len(xs) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def machine(load0, load1):
    model = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu_model": model, "nproc": os.cpu_count(), "kernel": platform.release(),
            "loadavg_start": list(load0), "loadavg_end": list(load1),
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def fmt(x, spec):
    return "-" if x is None else spec % x


def print_table(rep):
    m = rep["machine"]
    print()
    print("xvmq against the Linux bridge: %s, %d CPUs, Linux %s, load average %s at start, %s at end"
          % (m["cpu_model"], m["nproc"], m["kernel"], " ".join("%.2f" % x for x in m["loadavg_start"]),
             " ".join("%.2f" % x for x in m["loadavg_end"])))
    c = rep["config"]
    print("%d rounds, %g s per case; frames per second received in the VM namespace (ceiling: on up0)"
          % (c["rounds"], c["seconds"]))
    print()
    hdr = ("case", "bytes", "kfps median", "min", "max", "x bridge", "x ceiling")
    lines = [hdr]
    for r in rep["frames"]:
        lines.append((r["what"], str(r["frame_bytes"]), "%.1f" % (r["fps_median"] / 1e3), "%.1f" % (r["fps_min"] / 1e3),
                      "%.1f" % (r["fps_max"] / 1e3), fmt(r["x_bridge"], "%.2f"), fmt(r["x_ceiling"], "%.2f")))
    print_aligned(lines)
    print()
    if rep["latency_tcp"]:
        hdr = ("system", "path", "ping p50 us", "p99 us", "p50 x br", "p99 x br", "iperf3 Mbit/s", "x bridge")
        lines = [hdr]
        for r in rep["latency_tcp"]:
            lines.append((r["system"], r["path"].replace("_", " to "), "%.1f" % r["ping_p50_us"],
                          "%.1f" % r["ping_p99_us"], "%.2f" % r["p50_x_bridge"], "%.2f" % r["p99_x_bridge"],
                          "%.0f" % r["iperf_mbps"], "%.2f" % r["iperf_x_bridge"]))
        print_aligned(lines)
        print()
    for t in rep["targets"]:
        print("  %-4s %-40s %s (limit %.1f)" % ("n/a" if t["value"] is None else "met" if t["ok"] else "MISS", t["target"], fmt(t["value"], "%.2f"),
                                                t["limit"]))


def print_aligned(lines):
    w = [max(len(l[i]) for l in lines) for i in range(len(lines[0]))]
    for n, l in enumerate(lines):
        cells = [l[0].ljust(w[0])] + [l[i].rjust(w[i]) for i in range(1, len(l))]
        print("  " + "  ".join(cells))
        if n == 0:
            print("  " + "  ".join("-" * x for x in w))


def parse_args():
    p = arg_parser("xvmq against the Linux bridge (frames/s, ping RTT, iperf3 TCP)",
                   "the build directory (switchd, switchctl, drop.bpf.o)")
    p.add_argument("--rounds", type=int, default=5, help="rounds of every case, alternating (default 5)")
    p.add_argument("--seconds", type=float, default=3.0, help="measured interval per case (default 3)")
    p.add_argument("--warmup", type=float, default=1.0, help="seconds of traffic before measuring (default 1)")
    p.add_argument("--sizes", default="60,1514",
                   help="frame lengths without FCS (default 60,1514: 64 and 1518 bytes on a wire)")
    p.add_argument("--pings", type=int, default=500, help="pings per run (default 500)")
    p.add_argument("--ping-interval", type=float, default=0.01, help="seconds between pings (default 0.01)")
    p.add_argument("--iperf-seconds", type=int, default=3, help="iperf3 -t (default 3)")
    p.add_argument("--cpu", type=int, default=None, help="the generator's CPU (default: the last)")
    p.add_argument("--queue-cpus", default=None,
                   help="switchd --queue-cpus (default 0:0,1:1 with 2 or more CPUs)")
    add_switchd_arg(p, "--switchd-arg=--nic-ring-size --switchd-arg=1024")
    p.add_argument("--rt-priority", type=int, default=10,
                   help="switchd --rt-priority: its workers at SCHED_FIFO, as the bridge forwards in softirq "
                        "ahead of every task (default 10; 0: the normal scheduler)")
    p.add_argument("--cases", default="",
                   help="only these frame cases (ids as in the JSON: ceiling,bridge,xvmq_vmq,xvmq_default,"
                        "bridge_vm2vm,xvmq_vm2vm), e.g. to profile one")
    p.add_argument("--no-latency", action="store_true", help="no ping and iperf3 runs")
    p.add_argument("--quick", action="store_true", help="a smoke run: 1 s cases, 0.3 s warm-up, 100 pings, 1 s iperf3")
    a = parse(p, "bench-switch.json")
    a.sizes = [int(x) for x in a.sizes.split(",")]
    a.cases = [x for x in a.cases.split(",") if x]
    known = {"ceiling", "bridge", "xvmq_vmq", "xvmq_default", "bridge_vm2vm", "xvmq_vm2vm"}
    if set(a.cases) - known:
        p.error("--cases: unknown %s" % ",".join(sorted(set(a.cases) - known)))
    if any(s < 60 or s > 1514 for s in a.sizes):
        p.error("--sizes: 60..1514")
    if a.quick:
        a.seconds, a.warmup, a.pings, a.iperf_seconds = 1.0, 0.3, 100, 1
    if a.rounds < 1:
        p.error("--rounds: at least 1")
    ncpu = os.cpu_count() or 1
    if a.cpu is None:
        a.cpu = ncpu - 1
    if a.queue_cpus is None and ncpu >= 2:
        a.queue_cpus = "0:0,1:1"
    return a


def main():
    a = parse_args()
    return run(("trafgen", "iperf3", "ping", "ethtool", "bridge", "nsenter"), lambda: Bench(a), print_table, lambda b: b.switchd_log, None)


if __name__ == "__main__":
    sys.exit(main())
