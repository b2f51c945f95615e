#!/usr/bin/python3
"""The switch benchmark's guest case end to end, once, in its smoke form
(--quick --guests-only, 1 round): three QEMU guests (bridge + tap, xvmq
vhost-user, xvmq tap) booted, KVM tried and the accelerator said, frames
offered to each.

It checks the tool, not the speed: ext0 sent frames in every case, the
backend placed frames into every guest's ring and every guest counted
frames, the bridge's guest gives the others a ratio, and the JSON holds the
accelerator and why. Needs root; skipped (77) without it, or without QEMU's
packages, unless CI=true.
"""
import json
import os
import subprocess
import sys
import tempfile

build, script = sys.argv[1], sys.argv[2]
ci = os.environ.get("CI") == "true"
if os.geteuid() != 0:
    print("bench_guests_test: needs root")
    sys.exit(1 if ci else 77)
if not os.path.exists("/usr/bin/qemu-system-x86_64") or not any(
        f.startswith("vmlinuz-") and f.endswith("-cloud-amd64") for f in os.listdir("/boot")):
    print("bench_guests_test: no qemu-system-x86 or linux-image-cloud-amd64")
    sys.exit(1 if ci else 77)

with tempfile.TemporaryDirectory(prefix="xvmq-bench-test.") as tmp:
    out = os.path.join(tmp, "bench.json")
    p = subprocess.run(["/usr/bin/python3", script, "--build", build, "--quick", "--guests-only", "--rounds", "1",
                        "--json", out], timeout=600)
    if p.returncode != 0:
        sys.exit("bench exited %d" % p.returncode)
    rep = json.load(open(out))

fails = []
rows = {r["case"]: r for r in rep.get("guests", [])}
if set(rows) != {"guest_bridge", "guest_vhost_user", "guest_tap"}:
    fails.append("guest cases %s" % sorted(rows))
for c, r in rows.items():
    if not (r["sent_pps"] > 0 and r["placed_pps"] > 0 and r["guest_pps"] > 0 and "lost_pps" in r):
        fails.append("%s: nothing sent, placed or received: %s" % (c, {k: v for k, v in r.items() if k != "runs"}))
    if c != "guest_bridge" and not r["x_bridge"]:
        fails.append("%s: no ratio to the bridge's guest" % c)
g = rep["config"].get("guests", {})
if g.get("accel") not in ("kvm", "tcg") or not g.get("kvm_probe"):
    fails.append("config.guests: %s" % g)
if g.get("accel") == "tcg" and not any("TCG" in n for n in rep["config"]["notes"]):
    fails.append("under TCG and no note says so: %s" % rep["config"]["notes"])
if rep["frames"] or rep["latency_tcp"] or rep["cpu_time"] or rep["hogs"]:
    fails.append("--guests-only ran other cases")
for f in fails:
    print("FAIL: " + f)
sys.exit(1 if fails else 0)
