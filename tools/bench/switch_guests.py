"""The switch benchmark's guest case: real QEMU guests (Debian's cloud kernel,
a busybox initramfs; tests/lib/qemu_guest.h), driven by xvmq-guest
(tests/lib/guest_tool.cpp), at a fixed offered rate from the outside host.

  br world: guest_bridge      a guest on the tap vmt5, a port of br0 (the baseline)
  xv world: guest_vhost_user  a guest on switchd's vhost-user socket (NIC vm5, a vmq, xsk delivery)
            guest_tap         a guest on the tap vmt6 (NIC vm6, a vmq, kernel delivery)

xvmq-pace sends 60-byte IPv4/UDP frames to the guest's MAC and an address
nobody has (the guest's stack drops them) at --guest-rate for
--guest-seconds. Counted with nothing in flight, before the generator starts
and after it stopped and the path drained: what ext0 sent; what the backend
placed into the guest's ring (vhost-user: switchd's vhost_rx_frames; a tap:
its tx_packets, the frames QEMU read from it to copy into the ring, beside
the NIC's fast_frames for xvmq); what the guest received (rx_packets of its
eth0, read in the guest).

KVM is used where it runs guests: a guest booted with -accel kvm must come
up within a short limit, or the cases run under TCG, where the figures are
functional (bound by the emulated CPU), not a performance comparison.
"""

import os
import signal
import statistics
import time

from benchrun import Failure, log
from switch_report import paired_ratio

GUEST_CASES = (
    {"id": "guest_bridge", "world": "br", "vm": 5, "backend": "tap vmt5 (a br0 port)",
     "what": "guest, bridge + tap: up0 -> br0 -> vmt5"},
    {"id": "guest_vhost_user", "world": "xv", "vm": 5, "backend": "vhost-user (switchd)",
     "what": "guest, xvmq vhost-user: up0 -> vmq -> ring"},
    {"id": "guest_tap", "world": "xv", "vm": 6, "backend": "tap vmt6 (kernel delivery)",
     "what": "guest, xvmq tap: up0 -> vmq -> vmt6"},
)
GUEST_CASE_IDS = tuple(c["id"] for c in GUEST_CASES)


class Guests:
    """The guest case of one Bench (b): its guests, their backends and counters."""

    def __init__(self, bench, vm_mac, vm_ip, ext_mac, ext_ip):
        self.b = bench
        self.tool = os.path.join(bench.build, "tests/xvmq-guest")
        self.vm_mac, self.vm_ip, self.ext_mac, self.ext_ip = vm_mac, vm_ip, ext_mac, ext_ip
        self.servers = {}  # case id -> (Popen, control socket)
        self.accel = None
        self.kvm_said = ""
        self.boot_s = {}

    # ---- guests --------------------------------------------------------------

    def serve(self, name, ns, backend, vm, accel, boot_limit):
        """Starts xvmq-guest serve in ns; returns (Popen, socket, log)."""
        sock = os.path.join(self.b.tmp, "guest-%s.ctl" % name)
        out = os.path.join(self.b.tmp, "guest-%s.log" % name)
        argv = [self.tool, "serve", "--socket", sock, backend[0], backend[1], "--mac", self.vm_mac(vm),
                "--addr", self.vm_ip(vm) + "/24", "--accel", accel, "--boot-limit", str(boot_limit)]
        return self.b.start(self.b.cmd_in(ns, argv), out=out), sock, out

    def wait_up(self, p, sock, out, limit):
        """True once the guest serves; False when xvmq-guest gave up (its reason in out)."""
        end = time.monotonic() + limit
        while time.monotonic() < end:
            if os.path.exists(sock):
                return True
            if p.poll() is not None:
                return False
            time.sleep(0.1)
        return False

    def stop_server(self, p):
        # SIGTERM to the group: xvmq-guest kills its QEMU and removes its files.
        self.b.stop(p, signal.SIGTERM, wait=10)

    def run(self, cid, cmd, timeout=30):
        _, sock = self.servers[cid]
        return self.b.run([self.tool, "run", "--socket", sock, "--timeout", str(timeout), "--", cmd],
                          timeout=timeout + 10)

    def guest_rx(self, cid):
        return int(self.run(cid, "cat /sys/class/net/eth0/statistics/rx_packets").split()[-1])

    def probe_kvm(self, limit):
        """-accel kvm where a guest comes up under it within `limit` seconds; else tcg, and why."""
        if not os.access("/dev/kvm", os.R_OK | os.W_OK):
            return "tcg", "no /dev/kvm"
        sw = self.b.ns("br", "sw")
        self.b.run(["ip", "-n", sw, "tuntap", "add", "dev", "kvmt0", "mode", "tap"])
        self.b.run(["ip", "-n", sw, "link", "set", "kvmt0", "up"])
        t0 = time.monotonic()
        p, sock, out = self.serve("kvm-probe", sw, ("--tap", "kvmt0"), 9, "kvm", limit)
        try:
            up = self.wait_up(p, sock, out, limit + 15)
        finally:
            self.stop_server(p)
            self.b.run(["ip", "-n", sw, "link", "del", "kvmt0"], check=False)
        if up:
            return "kvm", "a guest came up under -accel kvm in %.1f s" % (time.monotonic() - t0)
        said = open(out).read()
        console = [l.strip() for l in said.partition("console:")[2].splitlines() if l.strip()]
        why = ("its console's last line: " + console[-1][:120]) if console else \
            ("its console is empty" if "console:" in said else (said.strip().splitlines() or ["no output"])[0][:160])
        return "tcg", ("a guest did not come up under -accel kvm within %d s (%s): KVM cannot run "
                       "this guest here" % (limit, why))

    def setup(self):
        a = self.b.a
        log("==> guests: KVM or TCG?")
        self.accel, self.kvm_said = self.probe_kvm(a.kvm_limit)
        log("  %s: %s" % (self.accel, self.kvm_said))
        if self.accel == "tcg":
            self.b.note("guests under TCG: the guest figures are functional, bound by the emulated CPU, not a "
                        "performance comparison (%s)" % self.kvm_said)
        # The bridge's guest: a tap joined to br0, its MAC static in the FDB.
        br = self.b.ns("br", "sw")
        self.b.run(["ip", "-n", br, "tuntap", "add", "dev", "vmt5", "mode", "tap"])
        self.b.run(["ip", "-n", br, "link", "set", "vmt5", "master", "br0"])
        self.b.run(["ip", "-n", br, "link", "set", "vmt5", "up"])
        self.b.inns(br, ["bridge", "fdb", "replace", self.vm_mac(5), "dev", "vmt5", "master", "static"])
        # xvmq's guests: vm5 on vhost-user (connected now: switchd listens), vm6 on a tap
        # (connected once QEMU holds its queue, for kernel delivery).
        xv = self.b.ns("xv", "sw")
        vu = os.path.join(self.b.tmp, "vm5.vhost")
        self.b.run(["ip", "-n", xv, "tuntap", "add", "dev", "vmt6", "mode", "tap"])
        self.b.run(["ip", "-n", xv, "link", "set", "vmt6", "up"])
        for port, backend in (("vm5", "vhost-user:" + vu), ("vm6", "vmt6")):
            self.b.switchctl("port", "create", port)
            self.b.switchctl("nic", "create", port, "--mac", self.vm_mac(int(port[2:])), "--backend", backend)
        self.b.switchctl("nic", "connect", "vm5")
        backends = {"guest_bridge": (br, ("--tap", "vmt5")), "guest_vhost_user": (xv, ("--vhost-user", vu)),
                    "guest_tap": (xv, ("--tap", "vmt6"))}
        t0 = time.monotonic()
        started = {}
        for c in GUEST_CASES:
            ns, backend = backends[c["id"]]
            started[c["id"]] = self.serve(c["id"], ns, backend, c["vm"], self.accel, a.boot_limit)
            self.servers[c["id"]] = (started[c["id"]][0], started[c["id"]][1])
        for cid, (p, sock, out) in started.items():
            if not self.wait_up(p, sock, out, a.boot_limit + 15):
                raise Failure("guest %s did not come up:\n%s" % (cid, open(out).read()[-3000:]))
            self.boot_s[cid] = time.monotonic() - t0
        log("  3 guests up (%s) after %.0f s" % (self.accel, max(self.boot_s.values())))
        self.b.switchctl("nic", "connect", "vm6")
        # ARP and a first frame each way: every path warm before it is measured.
        for c in GUEST_CASES:
            ext = self.b.ns(c["world"], "ext")
            self.b.inns(ext, ["ping", "-c", "2", "-i", "0.3", "-W", "3", self.vm_ip(c["vm"])])

    def teardown(self):
        for p, _ in self.servers.values():
            self.stop_server(p)
        self.servers.clear()

    # ---- the case ------------------------------------------------------------

    def backend_count(self, c, stats):
        """Frames the backend has placed into the guest's ring so far, and the drops on the way by
        reason: for xvmq the NIC's; for the bridge its tap's tx_dropped."""
        if c["id"] == "guest_vhost_user":
            n = stats["nics"]["vm5"]
            return n["vhost_rx_frames"], dict(n.get("drops", {}))
        tap = "vmt5" if c["id"] == "guest_bridge" else "vmt6"
        _, tx, txd = self.b.netdev(self.b.ns(c["world"], "sw"), tap)
        if c["id"] == "guest_tap":
            return tx, dict(stats["nics"]["vm6"].get("drops", {}))
        return tx, {"tap_tx_dropped": txd}

    def case(self, c, rate, load):
        a = self.b.a
        ext = self.b.ns(c["world"], "ext")
        pace_case = {"id": c["id"], "gen": (ext, "ext0", self.ext_mac, self.vm_mac(c["vm"]), self.ext_ip, None, None)}

        def counts():
            stats = self.b.switch_stats() if c["world"] == "xv" else None
            placed, drops = self.backend_count(c, stats)
            fast = stats["nics"]["vm6"]["fast_frames"] if c["id"] == "guest_tap" else None
            return {"sent": self.b.netdev(ext, "ext0")[1], "placed": placed, "drops": drops,
                    "fast": fast, "guest": self.guest_rx(c["id"])}
        c0 = counts()
        p, out = load.start_pacer(pace_case, rate, 60)
        t0 = time.monotonic()
        try:
            time.sleep(a.guest_seconds)
            load.check_running(p, out)
        finally:
            self.b.stop(p)
        dt = time.monotonic() - t0
        time.sleep(1.0)  # what is queued drains into the guest
        c1 = counts()
        d = {k: (c1[k] - c0[k]) if c0[k] is not None else None for k in ("sent", "placed", "fast", "guest")}
        drops = {k: v - c0["drops"].get(k, 0) for k, v in c1["drops"].items() if v - c0["drops"].get(k, 0)}
        # The guest's own ARP and the readings' traffic are a handful of frames: not subtracted.
        return {"offered_pps": rate, "seconds": dt, "sent": d["sent"], "placed": d["placed"],
                "drops": drops, "fast_frames": d["fast"], "guest_rx": d["guest"],
                "sent_pps": d["sent"] / dt, "placed_pps": d["placed"] / dt, "guest_pps": d["guest"] / dt,
                "lost_pps": (d["sent"] - d["placed"]) / dt}

    def round(self, r, rounds, rate, load, res):
        for c in GUEST_CASES:
            x = self.case(c, rate, load)
            x["round"] = r
            res.setdefault(c["id"], []).append(x)
            log("  round %d/%d  guest  %-16s %6.0f fps offered, %6.0f sent, %6.0f into the ring, %6.0f in the "
                "guest (%s)" % (r, rounds, c["id"], rate, x["sent_pps"], x["placed_pps"], x["guest_pps"],
                                self.accel))


def guest_rows(guests, res):
    """One row per case: the medians of the rounds, and the guest's rate against the bridge's guest."""
    rows = []
    ref = [x["guest_pps"] for x in res.get("guest_bridge", [])]
    for c in GUEST_CASES:
        runs = res.get(c["id"])
        if not runs:
            continue
        med = lambda k: statistics.median(x[k] for x in runs)
        rows.append({"case": c["id"], "what": c["what"], "backend": c["backend"], "accel": guests.accel,
                     "offered_pps": runs[0]["offered_pps"], "sent_pps": med("sent_pps"),
                     "placed_pps": med("placed_pps"), "guest_pps": med("guest_pps"), "lost_pps": med("lost_pps"),
                     "drops_last_round": runs[-1]["drops"],
                     "x_bridge": paired_ratio([x["guest_pps"] for x in runs], ref), "runs": runs})
    return rows
