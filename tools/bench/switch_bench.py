#!/usr/bin/python3
"""xvmq against the Linux bridge: frames per second, CPU time per frame, loss
under CPU load, ping RTT and TCP.

Copies of one topology, each in network namespaces of its own, so the cases
can alternate round after round without reconfiguring anything:

  ext: ext0 <-> up0 :sw                vmN: eth0 (02:00:00:00:00:0N) <-> vmN-host :sw

  ceil  up0 drops every frame (XDP_DROP, tools/bench/drop.bpf.c)
  br    br0 in sw joins up0, vm1-host and vm2-host
  brr   the same with vm1 only, whose eth0 steers its receive (RPS) to the
        CPUs other than the generator's
  xv    switchd owns up0 (the uplink), with its default options; vm1 and vm2
        have NICs with switchctl's defaults (a vmq, kernel delivery), vm3 a
        vmq with AF_XDP delivery (--delivery xsk), vm4 no vmq (--vmq off)

After the rounds, the guest case (tools/bench/switch_guests.py): QEMU guests
on br0 + a tap, on switchd's vhost-user socket and on a tap behind xvmq, at a
fixed offered rate, under KVM where it runs guests, else under TCG.

The generator (trafgen at full speed; xvmq-pace at a fixed rate) runs in ext
(or in vm1, VM to VM) pinned to one CPU; a case's rate is the rx_packets
delta of the receiving VM's eth0, read inside its namespace, over the
measured interval (for the ceiling, up0's). Everything made here is removed
at the end, on failure and on Ctrl-C too. Nothing is sent in the root
namespace.
"""

import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

from benchrun import Failure, add_switchd_arg, arg_parser, log, parse, run
from switch_guests import Guests, guest_rows
from switch_load import Load
from switch_report import counter_delta, print_table, report

NET = "10.231.0."
EXT_MAC = "02:00:00:00:00:fe"
EXT_IP = NET + "254"
DARK_IP = NET + "200"  # nobody has it: the VM's stack drops the frames without answering
PACED_BYTES = 60

# The xvmq world's NICs: vm1 and vm2 with switchctl's defaults, vm3 with
# AF_XDP delivery, vm4 without a vmq (the default queue and the software switch).
XV_NICS = (
    {"vm": 1, "opts": [], "path": "vmq", "delivery": "kernel"},
    {"vm": 2, "opts": [], "path": "vmq", "delivery": "kernel"},
    {"vm": 3, "opts": ["--delivery", "xsk"], "path": "vmq", "delivery": "xsk"},
    {"vm": 4, "opts": ["--vmq", "off"], "path": "default", "delivery": None},
)
CASE_IDS = ("ceiling", "bridge", "bridge_rps", "xvmq_kernel", "xvmq_xsk", "xvmq_default", "bridge_vm2vm",
            "xvmq_vm2vm")
CPU_CASES = ("bridge", "bridge_rps", "xvmq_kernel", "xvmq_xsk")
HOG_CASES = ("bridge", "xvmq_kernel", "xvmq_xsk")


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
        self.dark_ip = DARK_IP
        self.switchctl_path = os.path.join(self.build, "tools/switchctl/switchctl")
        self.switchd_path = os.path.join(self.build, "switchd/switchd")
        self.drop_obj = os.path.join(self.build, "tools/bench/drop.bpf.o")
        self.notes = []  # said once in the output and kept in the JSON
        self.switchd_options = []  # the non-default ones, each with why
        self.xvmq_nics = {}
        self.queue_cpus = {}
        self.rps_mask = 0
        self.holders = {}  # namespace -> a process in it (netdev)
        self.guests = None

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

    def start(self, argv, out=None, env=None, preexec=None):
        f = open(out, "w") if out else subprocess.DEVNULL
        p = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, start_new_session=True, env=env,
                             preexec_fn=preexec)
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
        if self.guests is not None:
            self.guests.teardown()
        for p in list(self.procs):
            if p is not self.switchd:
                self.stop(p, signal.SIGKILL)
        if self.switchd is not None:
            self.stop(self.switchd, signal.SIGTERM, wait=10)
        for ns in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", ns], stderr=subprocess.DEVNULL)
        shutil.rmtree(self.pin_root, ignore_errors=True)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def note(self, msg):
        log("  note: " + msg)
        self.notes.append(msg)

    # ---- topology ----------------------------------------------------------

    def add_ns(self, ns):
        self.run(["ip", "netns", "add", ns])
        self.namespaces.append(ns)
        self.inns(ns, ["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1",
                       "net.ipv6.conf.default.disable_ipv6=1"])
        self.inns(ns, ["ip", "link", "set", "lo", "up"])

    def offloads(self, ns, dev):
        # tx checksum, GSO and TSO off: every segment is a frame that fits, as AF_XDP (xsk delivery,
        # the default queue) carries no GSO. GRO on: kernel delivery redirects frames into a veth by
        # DEVMAP, which the kernel only accepts when the veth's peer has GRO on or an XDP program
        # (DESIGN.md, kernel fact 13): the VM's eth0 for frames to the VM, ext0 for the VMs' frames
        # that leave by the uplink up0. On in every world, bridges too, so that every case delivers
        # to receivers with the same settings (with GRO on, a veth receives by NAPI).
        self.inns(ns, ["ethtool", "-K", dev, "tx", "off", "gso", "off", "tso", "off", "gro", "on"])

    def make_world(self, world, vms):
        ext, sw = self.ns(world, "ext"), self.ns(world, "sw")
        self.add_ns(ext)
        self.add_ns(sw)
        self.run(["ip", "-n", ext, "link", "add", "ext0", "address", EXT_MAC, "numrxqueues", "2",
                  "numtxqueues", "2", "type", "veth", "peer", "name", "up0", "netns", sw,
                  "numrxqueues", "2", "numtxqueues", "2"])
        self.offloads(ext, "ext0")
        self.run(["ip", "-n", ext, "addr", "add", EXT_IP + "/24", "dev", "ext0"])
        self.run(["ip", "-n", ext, "link", "set", "ext0", "up"])
        self.run(["ip", "-n", sw, "link", "set", "up0", "up"])
        for i in range(1, vms + 1):
            vm = self.ns(world, "vm%d" % i)
            self.add_ns(vm)
            self.run(["ip", "-n", sw, "link", "add", "vm%d-host" % i, "numrxqueues", "2", "numtxqueues", "2",
                      "type", "veth", "peer", "name", "eth0", "netns", vm, "address", vm_mac(i),
                      "numrxqueues", "2", "numtxqueues", "2"])
            self.offloads(vm, "eth0")
            self.run(["ip", "-n", vm, "addr", "add", vm_ip(i) + "/24", "dev", "eth0"])
            self.run(["ip", "-n", vm, "link", "set", "eth0", "up"])
            self.run(["ip", "-n", sw, "link", "set", "vm%d-host" % i, "up"])

    def make_ceiling(self):
        self.make_world("ceil", 0)
        self.run(["ip", "-n", self.ns("ceil", "sw"), "link", "set", "dev", "up0", "xdpdrv",
                  "obj", self.drop_obj, "sec", "xdp"])

    def make_bridge(self, world, vms):
        self.make_world(world, vms)
        sw = self.ns(world, "sw")
        self.run(["ip", "-n", sw, "link", "add", "br0", "type", "bridge"])
        for dev in ["up0"] + ["vm%d-host" % i for i in range(1, vms + 1)]:
            self.run(["ip", "-n", sw, "link", "set", dev, "master", "br0"])
        self.run(["ip", "-n", sw, "link", "set", "br0", "up"])
        # Known destinations, as xvmq's NICs are: no flooding while it learns.
        for i in range(1, vms + 1):
            self.inns(sw, ["bridge", "fdb", "replace", vm_mac(i), "dev", "vm%d-host" % i, "master", "static"])

    def steer_rps(self, world, vm):
        """RPS on the VM's eth0: its receive (IP and up) on the CPUs other than the generator's."""
        ncpu = os.cpu_count() or 1
        mask = ((1 << ncpu) - 1) & ~(1 << self.gen_cpu)
        if not mask:
            raise Failure("bridge_rps needs 2 CPUs or more")
        # `ip netns exec` mounts the namespace's own /sys, where its eth0 is.
        script = "for f in /sys/class/net/eth0/queues/rx-*/rps_cpus; do echo %x > $f; done; " \
                 "cat /sys/class/net/eth0/queues/rx-*/rps_cpus" % mask
        out = self.run(["ip", "netns", "exec", self.ns(world, vm), "sh", "-c", script])
        if any(int(x, 16) != mask for x in out.split()):
            raise Failure("rps_cpus of %s's eth0: %s, wanted %x" % (vm, out.split(), mask))
        self.rps_mask = mask

    # ---- switchd -------------------------------------------------------------

    def switchctl(self, *argv):
        return self.run([self.switchctl_path, "--socket", self.sock] + list(argv))

    def max_vmqs_default(self):
        m = re.search(r"--max-vmqs [^\n]*?=(\d+)", self.run([self.switchd_path, "--help"]))
        return int(m.group(1)) if m else 0

    def switchd_argv(self):
        """switchd as a user runs it: where its files go, and only what the world needs."""
        argv = [self.switchd_path, "--socket", self.sock, "--state-dir", os.path.join(self.tmp, "state"),
                "--pin-root", self.pin_root, "--detach-on-exit"]
        vmqs = sum(1 for n in XV_NICS if n["path"] == "vmq")
        default = self.max_vmqs_default()
        if default < vmqs:
            self.switchd_options.append(("--max-vmqs 4", "%d NICs with a vmq; the default pool is %d"
                                         % (vmqs, default)))
        if self.a.queue_cpus:
            self.switchd_options.append(("--queue-cpus " + self.a.queue_cpus, "asked (--queue-cpus)"))
        if self.a.rt_priority is not None:
            self.switchd_options.append(("--rt-priority %d" % self.a.rt_priority, "asked (--rt-priority)"))
        if self.a.switchd_args:
            self.switchd_options.append((" ".join(self.a.switchd_args), "asked (--switchd-arg)"))
        for opt, _ in self.switchd_options:
            argv += opt.split()
        return argv

    def start_switchd(self):
        os.makedirs(self.pin_root, exist_ok=True)
        env = dict(os.environ, LIBXDP_BPFFS=self.pin_root)
        self.switchd = self.start(self.cmd_in(self.ns("xv", "sw"), self.switchd_argv()), out=self.switchd_log,
                                  env=env)
        for _ in range(500):
            if os.path.exists(self.sock):
                return
            if self.switchd.poll() is not None:
                raise Failure("switchd exited:\n" + open(self.switchd_log).read())
            time.sleep(0.02)
        raise Failure("switchd's socket not ready")

    def make_xvmq(self):
        self.make_world("xv", len(XV_NICS))
        self.start_switchd()
        self.switchctl("uplink", "attach", "up0")
        for n in XV_NICS:
            port = "vm%d" % n["vm"]
            self.switchctl("port", "create", port)
            self.switchctl("nic", "create", port, "--mac", vm_mac(n["vm"]), "--backend", port + "-host", *n["opts"])
            self.switchctl("nic", "connect", port)
        self.check_nics(json.loads(self.switchctl("--json", "show")))

    def check_nics(self, show):
        """Each NIC on the path it was made for; a delivery other than the one asked for is said."""
        self.xvmq_show = show
        queues = (show.get("uplink") or {}).get("queues", [])
        self.queue_cpus = {str(q["queue"]): "%s (%s)" % (q["cpu"], q.get("cpu_from", "?")) for q in queues}
        nics = {p["name"]: p["nic"] for p in show["ports"] if p.get("nic")}
        for n in XV_NICS:
            port = "vm%d" % n["vm"]
            nic = nics.get(port, {})
            if nic.get("path") != n["path"]:
                raise Failure("%s: path %s, expected %s" % (port, nic.get("path"), n["path"]))
            keep = ("path", "vmq", "delivery", "delivery_requested", "delivery_why", "vmq_cpu")
            self.xvmq_nics[port] = {k: nic[k] for k in keep if k in nic}
            got = nic.get("delivery")
            if n["delivery"] and got != n["delivery"]:
                self.note("%s: delivery %s, not %s (%s)" % (port, got, n["delivery"], nic.get("delivery_why") or
                                                             "no reason given"))

    # ---- counters ----------------------------------------------------------

    def holder(self, ns):
        """The pid of a process that stays in namespace ns, whose /proc/PID/net/dev is the
        namespace's: counters read without starting a process each time."""
        p = self.holders.get(ns)
        if p is None:
            p = self.holders[ns] = self.start(self.cmd_in(ns, ["sleep", "infinity"]))
            for _ in range(400):
                if open("/proc/%d/comm" % p.pid).read().strip() == "sleep":  # past setns and exec
                    break
                time.sleep(0.005)
            else:
                raise Failure("no sleep in %s" % ns)
        return p.pid

    def netdev(self, ns, dev):
        """(rx_packets, tx_packets, tx_dropped) of dev, from /proc/net/dev inside ns."""
        with open("/proc/%d/net/dev" % self.holder(ns)) as f:
            out = f.read()
        for line in out.splitlines():
            name, _, rest = line.partition(":")
            if name.strip() == dev:
                f = rest.split()
                return int(f[1]), int(f[9]), int(f[11])
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
            f.write(self.trafgen_conf(src, dst, src_ip, self.dark_ip, size))
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
            rx0, tx0 = self.netdev(cnt_ns, cnt_dev)[0], self.netdev(gen_ns, gen_dev)[1]
            t1 = time.monotonic()
            time.sleep(self.a.seconds)
            t2 = time.monotonic()
            rx1, tx1 = self.netdev(cnt_ns, cnt_dev)[0], self.netdev(gen_ns, gen_dev)[1]
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

        def ext_to(world, vm, cid, what):
            cnt = (n(world, "sw"), "up0") if vm is None else (n(world, "vm%d" % vm), "eth0")
            return {"id": cid, "world": world, "kind": "ext", "what": what,
                    "gen": (n(world, "ext"), "ext0", EXT_MAC, vm_mac(vm or 1), EXT_IP) + cnt}

        def vm_to_vm(world, cid, what):
            return {"id": cid, "world": world, "kind": "vm2vm", "what": what,
                    "gen": (n(world, "vm1"), "eth0", vm_mac(1), vm_mac(2), vm_ip(1), n(world, "vm2"), "eth0")}
        return [
            ext_to("ceil", None, "ceiling", "ceiling: XDP_DROP on up0"),
            ext_to("br", 1, "bridge", "bridge: up0 -> br0 -> vm1"),
            ext_to("brr", 1, "bridge_rps", "bridge, RPS in vm1: up0 -> br0 -> vm1"),
            ext_to("xv", 1, "xvmq_kernel", "xvmq kernel delivery: up0 -> vm1"),
            ext_to("xv", 3, "xvmq_xsk", "xvmq AF_XDP delivery: up0 -> vm3"),
            ext_to("xv", 4, "xvmq_default", "xvmq default path: up0 -> switch -> vm4"),
            vm_to_vm("br", "bridge_vm2vm", "bridge VM to VM: vm1 -> br0 -> vm2"),
            vm_to_vm("xv", "xvmq_vm2vm", "xvmq VM to VM: vm1 -> vm2"),
        ]

    def setup(self):
        log("==> topology: worlds ceil, br, brr and xv in namespaces %s-*" % self.tag)
        self.make_ceiling()
        self.make_bridge("br", 2)
        self.make_bridge("brr", 1)
        self.steer_rps("brr", "vm1")
        self.make_xvmq()
        log("  switchd options: %s" % ("; ".join("%s (%s)" % o for o in self.switchd_options) or
                                       "its defaults only"))
        for port, nic in sorted(self.xvmq_nics.items()):
            log("  %s: %s" % (port, ", ".join("%s %s" % (k, v) for k, v in nic.items())))

    def main(self):
        a = self.a
        load0 = os.getloadavg()
        self.setup()
        cases = [c for c in self.cases() if not a.cases or c["id"] in a.cases]
        res = {"frames": {(c["id"], s): [] for c in cases for s in a.sizes}, "cpu": {}, "hogs": {},
               "pings": {}, "iperfs": {}, "hog_rates": [], "bridge_max": [],
               "cpu_background": [], "guests": {}}
        self.load = Load(self)
        t_start = time.monotonic()
        for r in range(1, a.rounds + 1 if not a.guests_only else 1):
            if not a.no_frames:
                self.frame_round(r, cases, res)
            if not a.no_cpu:
                self.cpu_round(r, cases, res)
            if not a.no_hogs:
                self.hog_round(r, cases, res)
            if not a.no_latency:
                self.latency_round(r, res)
            log("  round %d/%d done after %.0f s, load average %s"
                % (r, a.rounds, time.monotonic() - t_start, " ".join("%.2f" % x for x in os.getloadavg())))
        if not a.no_guests:
            self.guest_rounds(res)
        rep = report(self, cases, res, load0, os.getloadavg())
        if self.guests is not None:
            rep["guests"] = guest_rows(self.guests, res["guests"])
            rep["config"]["guests"] = {"accel": self.guests.accel, "kvm_probe": self.guests.kvm_said,
                                       "offered_pps": self.a.guest_rate, "seconds": self.a.guest_seconds,
                                       "frame_bytes": PACED_BYTES, "boot_seconds": self.guests.boot_s}
        with open(a.json, "w") as f:
            json.dump(rep, f, indent=2)
            f.write("\n")
        log("==> wrote %s" % a.json)
        return rep

    def guest_rounds(self, res):
        """The guest case, after every other: idle guests under TCG take CPU time, which the other cases
        must not share. Its own rounds, the guests booted once."""
        self.guests = Guests(self, vm_mac, vm_ip, EXT_MAC, EXT_IP)
        self.guests.setup()
        for r in range(1, self.a.rounds + 1):
            self.guests.round(r, self.a.rounds, self.a.guest_rate, self.load, res["guests"])
        self.guests.teardown()

    def frame_round(self, r, cases, res):
        for s in self.a.sizes:
            for c in cases:
                x = self.frame_case(c, s)
                x["round"] = r
                res["frames"][(c["id"], s)].append(x)
                log("  round %d/%d  %-42s %4d B  %9.0f fps  (sent %9.0f)"
                    % (r, self.a.rounds, c["what"], s, x["pps"], x["sent_pps"]))

    def cpu_round(self, r, cases, res):
        """The CPU-time cases, after the machine's background, with the ceiling first: the others
        are measured above it (see switch_report.cpu_rows)."""
        chosen = [c for c in self.cases() if c["id"] == "ceiling"] + [c for c in cases if c["id"] in CPU_CASES]
        if len(chosen) == 1:
            return
        bg = self.load.background(1.0 if not self.a.quick else 0.5)
        res["cpu_background"].append(bg)
        log("  round %d/%d  cpu    background: %.0f ms busy per second, %.0f of them not other programs'"
            % (r, self.a.rounds, bg["busy_per_s"] * 1e3, bg["own_busy_per_s"] * 1e3))
        ncpu = os.cpu_count() or 1
        if bg["busy_per_s"] > 0.1 * ncpu and not any(n.startswith("CPU time:") for n in self.notes):
            self.note("CPU time: other programs kept the CPUs busy (%.0f ms per second of %d CPUs with no "
                      "traffic); their time is taken out, but not their softirq work" % (bg["busy_per_s"] * 1e3, ncpu))
        for c in chosen:
            x = self.load.cpu_case(c, self.a.cpu_rate, PACED_BYTES, self.a.cpu_seconds)
            x["round"] = r
            res["cpu"].setdefault(c["id"], []).append(x)
            ws, n = x["windows"], max(1, x["delivered"])
            log("  round %d/%d  cpu    %-14s %6.0f fps delivered; per frame: busy %5.0f ns, other programs' %5.0f, "
                "generator %5.0f, what is left in the best window %5.0f"
                % (r, self.a.rounds, c["id"], x["delivered"] / x["seconds"], sum(w["busy_s"] for w in ws) * 1e9 / n,
                   sum(w["foreign_s"] for w in ws) * 1e9 / n, sum(w["generator_run_s"] for w in ws) * 1e9 / n,
                   min(w["own_busy_s"] * 1e9 / max(1, w["delivered"]) for w in ws)))

    def hog_rate(self, res):
        """80% of the bridge's 60-byte maximum: the median of this run's rounds so far (or of a
        measurement of its own, made once, when the frame cases have no bridge at 60 bytes)."""
        got = [x["pps"] for x in res["frames"].get(("bridge", PACED_BYTES), [])]
        if not got:
            if not res["bridge_max"]:
                bridge = next(c for c in self.cases() if c["id"] == "bridge")
                res["bridge_max"].append(self.frame_case(bridge, PACED_BYTES)["pps"])
            got = res["bridge_max"]
        return 0.8 * statistics.median(got)

    def hog_round(self, r, cases, res):
        chosen = [c for c in cases if c["id"] in HOG_CASES]
        if not chosen:
            return
        rate = self.hog_rate(res)
        res["hog_rates"].append(rate)
        for c in chosen:
            x = self.load.hog_case(c, rate, PACED_BYTES, self.a.seconds)
            x["round"] = r
            res["hogs"].setdefault(c["id"], []).append(x)
            log("  round %d/%d  hogs   %-14s %6.0f pps offered, %7d sent, %7d received, %6d lost (%.2f%%)"
                % (r, self.a.rounds, c["id"], rate, x["sent"], x["received"], x["lost"], x["lost_pct"] or 0))

    def latency_round(self, r, res):
        keys = [("bridge", "ext_vm"), ("xvmq", "ext_vm"), ("bridge", "vm_vm"), ("xvmq", "vm_vm")]
        world = {"bridge": "br", "xvmq": "xv"}
        for sys_, path in keys:
            w = world[sys_]
            src, dst = (self.ns(w, "ext"), vm_ip(1)) if path == "ext_vm" else (self.ns(w, "vm1"), vm_ip(2))
            p = self.ping(src, dst, self.a.pings)
            p["round"] = r
            res["pings"].setdefault((sys_, path), []).append(p)
            log("  round %d/%d  ping   %-6s %-6s p50 %7.1f us  p99 %7.1f us  (%d/%d replies)"
                % (r, self.a.rounds, sys_, path, p["p50_us"], p["p99_us"], p["replies"], p["sent"]))
        for sys_, path in keys:
            w = world[sys_]
            cl, sv, dst = ((self.ns(w, "ext"), self.ns(w, "vm1"), vm_ip(1)) if path == "ext_vm"
                           else (self.ns(w, "vm1"), self.ns(w, "vm2"), vm_ip(2)))
            i = self.iperf(cl, sv, dst, self.a.iperf_seconds)
            i["round"] = r
            res["iperfs"].setdefault((sys_, path), []).append(i)
            log("  round %d/%d  iperf3 %-6s %-6s %9.1f Mbit/s  (%d retransmits)"
                % (r, self.a.rounds, sys_, path, i["mbps"], i["retransmits"]))


def percentile(xs, p):
    xs = sorted(xs)
    k = (len(xs) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def parse_args():
    p = arg_parser("xvmq against the Linux bridge (frames/s, CPU time per frame, loss under CPU load, "
                   "ping RTT, iperf3 TCP)", "the build directory (switchd, switchctl, drop.bpf.o, xvmq-pace)")
    p.add_argument("--rounds", type=int, default=5, help="rounds of every case, alternating (default 5)")
    p.add_argument("--seconds", type=float, default=3.0, help="measured interval per case (default 3)")
    p.add_argument("--warmup", type=float, default=1.0, help="seconds of traffic before measuring (default 1)")
    p.add_argument("--sizes", default="60,1514",
                   help="frame lengths without FCS (default 60,1514: 64 and 1518 bytes on a wire)")
    p.add_argument("--cpu-rate", type=int, default=50000,
                   help="offered frames per second of the CPU-time cases (default 50000)")
    p.add_argument("--cpu-seconds", type=float, default=5.0,
                   help="1 s windows measured per CPU-time case and round (default 5)")
    p.add_argument("--pings", type=int, default=500, help="pings per run (default 500)")
    p.add_argument("--ping-interval", type=float, default=0.01, help="seconds between pings (default 0.01)")
    p.add_argument("--iperf-seconds", type=int, default=3, help="iperf3 -t (default 3)")
    p.add_argument("--cpu", type=int, default=None, help="the generator's CPU (default: the last)")
    p.add_argument("--queue-cpus", default=None, help="switchd --queue-cpus (default: switchd's own choice)")
    add_switchd_arg(p, "--switchd-arg=--nic-ring-size --switchd-arg=1024")
    p.add_argument("--rt-priority", type=int, default=None,
                   help="switchd --rt-priority N (default: not given, switchd's own default; 0: the normal scheduler)")
    p.add_argument("--cases", default="", help="only these cases (ids as in the JSON: %s), e.g. to profile one"
                   % ",".join(CASE_IDS))
    p.add_argument("--no-frames", action="store_true", help="no cases at full speed (frames per second)")
    p.add_argument("--no-cpu", action="store_true", help="no CPU-time cases")
    p.add_argument("--no-hogs", action="store_true", help="no loss cases with a CPU hog per CPU")
    p.add_argument("--no-latency", action="store_true", help="no ping and iperf3 runs")
    p.add_argument("--no-guests", action="store_true", help="no guest case (QEMU guests)")
    p.add_argument("--guests-only", action="store_true", help="only the guest case")
    p.add_argument("--guest-rate", type=int, default=20000,
                   help="offered frames per second of the guest case (default 20000)")
    p.add_argument("--guest-seconds", type=float, default=5.0, help="seconds of traffic per guest case (default 5)")
    p.add_argument("--kvm-limit", type=int, default=20,
                   help="seconds a guest under -accel kvm has to come up before TCG is used (default 20)")
    p.add_argument("--boot-limit", type=int, default=150, help="seconds a guest has to come up (default 150)")
    p.add_argument("--quick", action="store_true",
                   help="a smoke run: 1 s cases, 0.3 s warm-up, one 1 s CPU-time window, 100 pings, 1 s iperf3; "
                        "no guest case unless --guests-only (then 2 s per case, a 10 s KVM limit)")
    a = parse(p, "bench-switch.json")
    check_args(p, a)
    return a


def check_args(p, a):
    a.sizes = [int(x) for x in a.sizes.split(",")]
    a.cases = [x for x in a.cases.split(",") if x]
    if set(a.cases) - set(CASE_IDS):
        p.error("--cases: unknown %s" % ",".join(sorted(set(a.cases) - set(CASE_IDS))))
    if any(s < 60 or s > 1514 for s in a.sizes):
        p.error("--sizes: 60..1514")
    if a.quick:
        a.seconds, a.warmup, a.pings, a.iperf_seconds, a.cpu_seconds = 1.0, 0.3, 100, 1, 1.0
        a.guest_seconds, a.kvm_limit = 2.0, 10
        # Booting guests under TCG takes 10 to 40 s: the smoke run of the rest leaves them out, and
        # bench_guests_test runs them alone (--quick --guests-only).
        if not a.guests_only:
            a.no_guests = True
    if a.guests_only:
        if a.no_guests:
            p.error("--guests-only with --no-guests")
        a.no_frames = a.no_cpu = a.no_hogs = a.no_latency = True
    if a.rounds < 1:
        p.error("--rounds: at least 1")
    ncpu = os.cpu_count() or 1
    if a.cpu is None:
        a.cpu = ncpu - 1
    if ncpu < 2:
        p.error("needs 2 CPUs or more (bridge_rps steers to a CPU other than the generator's)")


def main():
    a = parse_args()
    return run(("trafgen", "iperf3", "ping", "ethtool", "bridge", "nsenter"), lambda: Bench(a), print_table,
               lambda b: b.switchd_log, None)


if __name__ == "__main__":
    sys.exit(main())
