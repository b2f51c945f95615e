"""The switch benchmark's report: medians and ratios of the rounds, the targets,
the JSON and the printed tables."""

import os
import platform
import statistics
import time

REF = {"ext": "bridge", "vm2vm": "bridge_vm2vm"}


def median_or_none(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def paired_ratio(xs, ys):
    """The median of the per-round ratios: the cases of one round ran next to
    each other, under the same load, which matters on a shared machine."""
    return median_or_none([x / y for x, y in zip(xs, ys) if x is not None and y is not None and x > 0 and y > 0])


def frame_rows(a, cases, frames):
    rows = []
    for s in a.sizes:
        for c in cases:
            runs = frames[(c["id"], s)]
            if not runs:
                continue
            rates = [x["pps"] for x in runs]
            ref = [x["pps"] for x in frames.get((REF[c["kind"]], s), [])]
            ceil = [x["pps"] for x in frames.get(("ceiling", s), [])]
            row = {"case": c["id"], "what": c["what"], "frame_bytes": s, "fps_median": statistics.median(rates),
                   "fps_min": min(rates), "fps_max": max(rates), "fps_runs": rates,
                   "sent_fps_median": statistics.median(x["sent_pps"] for x in runs),
                   "x_bridge": None if c["id"] == "ceiling" else paired_ratio(rates, ref),
                   "x_ceiling": paired_ratio(rates, ceil)}
            counters = [x["switch_counters"] for x in runs if "switch_counters" in x]
            if counters:
                row["switch_counters_last_run"] = counters[-1]
            rows.append(row)
    return rows


def latency_rows(pings, iperfs):
    rows = []
    for path in ("ext_vm", "vm_vm"):
        for sys_ in ("bridge", "xvmq"):
            ps, ips = pings.get((sys_, path), []), iperfs.get((sys_, path), [])
            bp, bi = pings.get(("bridge", path), []), iperfs.get(("bridge", path), [])
            if not ps:
                continue
            rows.append({
                "system": sys_, "path": path,
                "ping_p50_us": statistics.median(p["p50_us"] for p in ps),
                "ping_p99_us": statistics.median(p["p99_us"] for p in ps),
                "ping_p99_us_runs": [p["p99_us"] for p in ps],
                "ping_replies": sum(p["replies"] for p in ps), "ping_sent": sum(p["sent"] for p in ps),
                "p50_x_bridge": paired_ratio([p["p50_us"] for p in ps], [p["p50_us"] for p in bp]),
                "p99_x_bridge": paired_ratio([p["p99_us"] for p in ps], [p["p99_us"] for p in bp]),
                "iperf_mbps": statistics.median(i["mbps"] for i in ips),
                "iperf_mbps_runs": [i["mbps"] for i in ips],
                "iperf_x_bridge": paired_ratio([i["mbps"] for i in ips], [i["mbps"] for i in bi]),
                "iperf_retransmits": sum(i["retransmits"] for i in ips)})
    return rows


def per_frame_ns(seconds, frames):
    return seconds * 1e9 / frames if frames else None


def own_ns(runs, per):
    """Per 1-s window of every round: the CPU time left to the benchmark (every CPU's
    busy time less other programs' and its own reading), in ns per frame `per`."""
    return [per_frame_ns(w["own_busy_s"], w[per]) for x in runs for w in x["windows"] if w[per]]


def low(xs):
    """The 20th percentile: near the lowest, without resting on one window."""
    xs = sorted(xs)
    k = (len(xs) - 1) * 0.2
    i = int(k)
    return xs[i] + (xs[min(i + 1, len(xs) - 1)] - xs[i]) * (k - i)


def cpu_rows(cases, cpu):
    """CPU time per delivered frame above the ceiling's: the 20th percentile of the case's
    windows less the ceiling's (per frame sent: the generator, its wake-ups and the uplink
    veth's receive into XDP_DROP, at the same rate). Other programs' work only adds to a
    window, and what of it cannot be told apart (their softirq work, a process that ended)
    comes and goes: the low windows are those it left alone. The medians are kept too."""
    ceil = own_ns(cpu.get("ceiling", []), "sent")
    base = (low(ceil), statistics.median(ceil)) if ceil else (None, None)
    rows, ref = [], None
    for c in cases:
        runs = cpu.get(c["id"])
        if not runs:
            continue
        ns = own_ns(runs, "delivered")
        lo = low(ns) - base[0] if ns and base[0] is not None and c["id"] != "ceiling" else None
        med = statistics.median(ns) - base[1] if ns and base[1] is not None and c["id"] != "ceiling" else None
        if c["id"] == "bridge":
            ref = (lo, med)
        ws = [w for x in runs for w in x["windows"]]
        n = sum(w["delivered"] for w in ws)
        rows.append({"case": c["id"], "what": c["what"], "offered_pps": runs[0]["offered_pps"],
                     "ns_per_frame": lo, "ns_per_frame_from_medians": med,
                     "own_ns_per_frame_p20": low(ns) if ns else None, "own_ns_per_frame_windows": ns,
                     "delivered_pps": n / sum(w["seconds"] for w in ws),
                     "busy_ns_per_frame": per_frame_ns(sum(w["busy_s"] for w in ws), n),
                     "other_programs_ns_per_frame": per_frame_ns(sum(w["foreign_s"] for w in ws), n),
                     "generator_ns_per_frame": per_frame_ns(sum(w["generator_run_s"] for w in ws), n),
                     "busy_ticks_less_generator_ns_per_frame": per_frame_ns(
                         sum(w["busy_ticks_s"] - w["generator_s"] for w in ws), n),
                     "runs": runs})
    for r in rows:
        r["x_bridge"] = ratio(r["ns_per_frame"], ref and ref[0])
        r["x_bridge_from_medians"] = ratio(r["ns_per_frame_from_medians"], ref and ref[1])
    return rows


def ratio(x, y):
    return x / y if x is not None and y is not None and x > 0 and y > 0 else None


def hog_rows(cases, hogs, rates):
    rows = []
    for c in cases:
        runs = hogs.get(c["id"])
        if not runs:
            continue
        sent, got = sum(x["sent"] for x in runs), sum(x["received"] for x in runs)
        rows.append({"case": c["id"], "what": c["what"], "offered_pps": statistics.median(rates),
                     "sent": sent, "received": got, "lost": sent - got,
                     "lost_pct": 100.0 * (sent - got) / sent if sent else None,
                     "sent_pps_median": statistics.median(x["sent_pps"] for x in runs),
                     "lost_runs": [x["lost"] for x in runs], "runs": runs})
    return rows


def target(name, want, got, limit, at_most=False, hard=False):
    met = got is not None and (got <= limit if at_most else got >= limit)
    return {"name": name, "want": want, "got": got, "met": met, "hard": hard}


def targets(rows, lat, cpu, hogs):
    def fr(cid, s):
        return next((r["x_bridge"] for r in rows if r["case"] == cid and r["frame_bytes"] == s), None)

    def lt(path, key):
        return next((r[key] for r in lat if r["system"] == "xvmq" and r["path"] == path), None)
    t = [target("xvmq_kernel fps at 60 B", ">= 1.5 x bridge", fr("xvmq_kernel", 60), 1.5),
         target("xvmq_kernel fps at 1514 B", ">= 1.2 x bridge", fr("xvmq_kernel", 1514), 1.2)]
    for s in sorted({r["frame_bytes"] for r in rows}):
        t.append(target("xvmq VM to VM fps at %d B" % s, ">= 1.2 x bridge", fr("xvmq_vm2vm", s), 1.2))
    for path in ("ext_vm", "vm_vm"):
        for q in ("p50", "p99"):
            t.append(target("ping %s %s" % (q, path.replace("_", " to ")), "<= 1.0 x bridge",
                            lt(path, q + "_x_bridge"), 1.0, at_most=True))
    for path in ("ext_vm", "vm_vm"):
        for q in ("p50", "p99"):
            t.append(target("ping %s %s (hard)" % (q, path.replace("_", " to ")), "<= 1.2 x bridge",
                            lt(path, q + "_x_bridge"), 1.2, at_most=True, hard=True))
    for path in ("ext_vm", "vm_vm"):
        t.append(target("iperf3 TCP %s" % path.replace("_", " to "), ">= 1.0 x bridge",
                        lt(path, "iperf_x_bridge"), 1.0))
    kc = next((r["x_bridge"] for r in cpu if r["case"] == "xvmq_kernel"), None)
    t.append(target("xvmq_kernel CPU time per frame", "<= 0.7 x bridge", kc, 0.7, at_most=True))
    for cid in ("xvmq_kernel", "xvmq_xsk"):
        lost = next((r["lost"] for r in hogs if r["case"] == cid), None)
        t.append(target("%s frames lost with a hog per CPU" % cid, "0", lost, 0, at_most=True))
    return t


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


def config(b):
    a = b.a
    return {"rounds": a.rounds, "seconds": a.seconds, "warmup_seconds": a.warmup, "frame_bytes": a.sizes,
            "generator": "trafgen (netsniff-ng), PACKET_QDISC_BYPASS, 1 process",
            "paced_generator": "xvmq-pace (tools/bench/pace.cpp), PACKET_QDISC_BYPASS, token bucket, 60 B",
            "generator_cpu": b.gen_cpu, "cpu_rate_pps": a.cpu_rate, "cpu_seconds": a.cpu_seconds,
            "switchd_options": [{"option": o, "why": w} for o, w in b.switchd_options],
            "switchd_queue_cpus": b.queue_cpus,
            "xvmq_nics": b.xvmq_nics, "rps_cpus_mask": "%x" % b.rps_mask,
            "pings": a.pings, "ping_interval_s": a.ping_interval, "iperf_seconds": a.iperf_seconds,
            "offloads": "tx, gso, tso off and gro on, on ext0 and every eth0 (every world)",
            "counted": "rx_packets of the receiving VM's eth0 in its namespace (ceiling: up0's)",
            "notes": b.notes}


def report(b, cases, res, load0, load1):
    rows = frame_rows(b.a, cases, res["frames"])
    lat = latency_rows(res["pings"], res["iperfs"])
    cpu = cpu_rows(cases, res["cpu"])
    hogs = hog_rows(cases, res["hogs"], res["hog_rates"] or [0])
    return {"machine": machine(load0, load1), "config": config(b), "frames": rows, "latency_tcp": lat,
            "cpu_time": cpu,
            "cpu_background_ms_per_s": median_or_none([x["busy_per_s"] * 1e3 for x in res["cpu_background"]]),
            "cpu_background_own_ms_per_s": median_or_none([x["own_busy_per_s"] * 1e3 for x in res["cpu_background"]]),
            "cpu_background_runs": res["cpu_background"], "hogs": hogs,
            "bridge_max_measured_for_hogs": res["bridge_max"],
            "targets": targets(rows, lat, cpu, hogs)}


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


def fmt(x, spec):
    return "-" if x is None else spec % x


def print_aligned(lines):
    w = [max(len(l[i]) for l in lines) for i in range(len(lines[0]))]
    for n, l in enumerate(lines):
        cells = [l[0].ljust(w[0])] + [l[i].rjust(w[i]) for i in range(1, len(l))]
        print("  " + "  ".join(cells))
        if n == 0:
            print("  " + "  ".join("-" * x for x in w))


def print_header(rep):
    m, c = rep["machine"], rep["config"]
    print()
    print("xvmq against the Linux bridge: %s, %d CPUs, Linux %s, load average %s at start, %s at end"
          % (m["cpu_model"], m["nproc"], m["kernel"], " ".join("%.2f" % x for x in m["loadavg_start"]),
             " ".join("%.2f" % x for x in m["loadavg_end"])))
    opts = c["switchd_options"]
    print("switchd: %s" % ("; ".join("%s (%s)" % (o["option"], o["why"]) for o in opts) if opts else
                           "its defaults (no option but its socket, state and pin paths)"))
    print("switchd queue -> CPU: %s; generator on CPU %d" % (
        ", ".join("%s -> %s" % kv for kv in sorted(c["switchd_queue_cpus"].items())) or "-", c["generator_cpu"]))
    for port, nic in sorted(c["xvmq_nics"].items()):
        print("xvmq %s: %s" % (port, ", ".join("%s %s" % (k, v if v != "" else "-") for k, v in nic.items())))
    for n in c["notes"]:
        print("note: " + n)
    print()


def print_frames(rep):
    if not rep["frames"]:
        return
    c = rep["config"]
    print("%d rounds, %g s per case; frames per second received in the VM namespace (ceiling: on up0)"
          % (c["rounds"], c["seconds"]))
    lines = [("case", "bytes", "kfps median", "min", "max", "x bridge", "x ceiling")]
    for r in rep["frames"]:
        lines.append((r["what"], str(r["frame_bytes"]), "%.1f" % (r["fps_median"] / 1e3), "%.1f" % (r["fps_min"] / 1e3),
                      "%.1f" % (r["fps_max"] / 1e3), fmt(r["x_bridge"], "%.2f"), fmt(r["x_ceiling"], "%.2f")))
    print_aligned(lines)
    print()


def print_latency(rep):
    if not rep["latency_tcp"]:
        return
    lines = [("system", "path", "ping p50 us", "p99 us", "p50 x br", "p99 x br", "iperf3 Mbit/s", "x bridge")]
    for r in rep["latency_tcp"]:
        lines.append((r["system"], r["path"].replace("_", " to "), "%.1f" % r["ping_p50_us"],
                      "%.1f" % r["ping_p99_us"], fmt(r["p50_x_bridge"], "%.2f"), fmt(r["p99_x_bridge"], "%.2f"),
                      "%.0f" % r["iperf_mbps"], fmt(r["iperf_x_bridge"], "%.2f")))
    print_aligned(lines)
    print()


def print_cpu(rep):
    if not rep["cpu_time"]:
        return
    print("CPU time per delivered frame at %d fps offered (60 B), in 1 s windows: every CPU's busy time less other "
          "programs', above the ceiling's (20th percentile of the windows less the ceiling's; and the medians')"
          % rep["config"]["cpu_rate_pps"])
    print("with no traffic: %s ms busy per second, %s of them not other programs'"
          % (fmt(rep["cpu_background_ms_per_s"], "%.0f"), fmt(rep["cpu_background_own_ms_per_s"], "%.0f")))
    lines = [("case", "ns/frame", "x bridge", "medians", "x bridge", "own p20", "busy", "other programs'",
              "generator", "delivered fps")]
    for r in rep["cpu_time"]:
        lines.append((r["what"], fmt(r["ns_per_frame"], "%.0f"), fmt(r["x_bridge"], "%.2f"),
                      fmt(r["ns_per_frame_from_medians"], "%.0f"), fmt(r["x_bridge_from_medians"], "%.2f"),
                      fmt(r["own_ns_per_frame_p20"], "%.0f"), fmt(r["busy_ns_per_frame"], "%.0f"),
                      fmt(r["other_programs_ns_per_frame"], "%.0f"), fmt(r["generator_ns_per_frame"], "%.0f"),
                      "%.0f" % r["delivered_pps"]))
    print_aligned(lines)
    print()


def print_hogs(rep):
    if not rep["hogs"]:
        return
    print("With a CPU-bound process on every CPU, at %.0f fps offered (80%% of the bridge's 60 B maximum), "
          "all rounds" % rep["hogs"][0]["offered_pps"])
    lines = [("case", "sent", "received", "lost", "lost %", "sent fps")]
    for r in rep["hogs"]:
        lines.append((r["what"], str(r["sent"]), str(r["received"]), str(r["lost"]), fmt(r["lost_pct"], "%.3f"),
                      "%.0f" % r["sent_pps_median"]))
    print_aligned(lines)
    print()


def print_guests(rep):
    if not rep.get("guests"):
        return
    g = rep["config"]["guests"]
    print("QEMU guests at %d fps offered (%d B, %g s per case), under %s: frames per second sent by ext0, placed "
          "into the guest's ring by the backend (vhost-user: switchd's vhost_rx_frames; a tap: its tx_packets, "
          "what QEMU read), received by the guest (its eth0's rx_packets)"
          % (g["offered_pps"], g["frame_bytes"], g["seconds"], g["accel"].upper()))
    if g["accel"] == "tcg":
        print("UNDER TCG: these figures are functional, bound by the emulated CPU; not a performance comparison. "
              "(%s)" % g["kvm_probe"])
    lines = [("case", "backend", "sent fps", "into the ring", "in the guest", "lost/s", "x bridge")]
    for r in rep["guests"]:
        lines.append((r["what"], r["backend"], "%.0f" % r["sent_pps"], "%.0f" % r["placed_pps"],
                      "%.0f" % r["guest_pps"], "%.0f" % r["lost_pps"], fmt(r["x_bridge"], "%.2f")))
    print_aligned(lines)
    print("lost: sent less placed into the ring. Where, in the last round (xvmq: the NIC's drops by reason, where "
          "the bridge: its tap's "
          "tx_dropped): " + "; ".join("%s %s" % (r["case"], ", ".join("%s %d" % kv for kv in
                                                  sorted(r["drops_last_round"].items())) or "none")
                                                  for r in rep["guests"]))
    print()


def print_targets(rep):
    print("Targets (a measurement: the exit status does not depend on them)")
    lines = [("target", "want", "got", "")]
    for t in rep["targets"]:
        got = "-" if t["got"] is None else ("%d" % t["got"] if isinstance(t["got"], int) else "%.2f" % t["got"])
        lines.append((t["name"], t["want"], got, "not measured" if t["got"] is None else
                      "met" if t["met"] else "MISSED"))
    print_aligned(lines)


def print_table(rep):
    print_header(rep)
    print_frames(rep)
    print_latency(rep)
    print_cpu(rep)
    print_hogs(rep)
    print_guests(rep)
    if rep["frames"] or rep["latency_tcp"] or rep["cpu_time"] or rep["hogs"]:
        print_targets(rep)
