#!/usr/bin/env python3
"""Asset lookup: the appliance's longest-prefix index against netaddr, by inventory size.

    scripts/bench analysis [--lookups 200000] [--sizes 1000,10000,100000] [--scan-hosts 5000]

The inventory at each size is a realistic mix: /32 hosts, /24 and /16 networks nested in each
other (so longest-prefix matters). Lookups draw addresses of which about half fall in the
inventory. Figures: microseconds per lookup with the index's address cache cold (every lookup
parses and probes) and warm (addresses repeat, as they do in traffic), the index build time,
and, where it finishes in reasonable time, netaddr's ``smallest_matching_cidr`` (the library
the config already uses for CIDR checks; linear in the inventory). First, before anything else
grows the process, a generated Nessus report of ``--scan-hosts`` hosts x 20 findings is loaded:
seconds, and the process's peak RSS (reports are streamed host by host). Prints ONE JSON line.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

import netaddr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from appliance.analysis.assets import Asset, AssetIndex
from appliance.analysis.context import load_context


def write_nessus(path: Path, hosts: int) -> None:
    filler = "lorem ipsum " * 40  # plugin descriptions make most of a real report's bytes
    with path.open("w") as out:
        out.write('<?xml version="1.0" ?>\n<NessusClientData_v2><Report name="bench">\n')
        for h in range(hosts):
            ip = f"10.{h // 65536 % 256}.{h // 256 % 256}.{h % 256}"
            out.write(f'<ReportHost name="{ip}"><HostProperties><tag name="host-ip">{ip}</tag>'
                      "</HostProperties>\n")  # fmt: skip
            for i in range(20):
                cve = f"CVE-2024-{10000 + (h * 20 + i) % 5000}"
                out.write(
                    f'<ReportItem port="{1000 + i}" svc_name="s{i}" protocol="tcp"'
                    f' pluginID="{100000 + i}"><cvss3_base_score>7.5</cvss3_base_score>'
                    f"<cve>{cve}</cve><description>{filler}</description></ReportItem>\n"
                )
            out.write("</ReportHost>\n")
        out.write("</Report></NessusClientData_v2>\n")


def scan_load(hosts: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bench-analysis-") as tmp:
        path = Path(tmp) / "bench.nessus"
        write_nessus(path, hosts)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t = time.perf_counter()
        ctx = load_context([path])
        seconds = time.perf_counter() - t
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return {
            "hosts": hosts,
            "findings": ctx.vulns.findings,
            "file_mb": round(path.stat().st_size / 2**20, 1),
            "load_s": round(seconds, 2),
            "peak_rss_mb": round(peak / 1024, 1),
            "rss_before_mb": round(before / 1024, 1),
        }


def inventory(n: int, rng: random.Random) -> list[Asset]:
    out = [Asset(f"10.{i}.0.0/16", name=f"site{i}", criticality=2) for i in range(200)]
    nets = n // 10
    for i in range(nets):
        out.append(Asset(f"10.{i % 200}.{(i // 200) % 256}.0/24", name=f"net{i}", criticality=3))
    while len(out) < n:
        ip = f"10.{rng.randrange(200)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        out.append(Asset(f"{ip}/32", name=f"host{len(out)}", criticality=4))
    return out


def addresses(k: int, rng: random.Random) -> list[str]:
    return [
        f"10.{rng.randrange(200)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        if rng.random() < 0.5
        else f"198.{rng.randrange(18, 20)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        for _ in range(k)
    ]


def per_lookup_us(fn, addrs: list[str]) -> float:  # type: ignore[no-untyped-def]
    t = time.perf_counter()
    for a in addrs:
        fn(a)
    return round((time.perf_counter() - t) * 1e6 / len(addrs), 3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lookups", type=int, default=200_000)
    ap.add_argument("--sizes", default="1000,10000,100000")
    ap.add_argument("--scan-hosts", type=int, default=5000)
    args = ap.parse_args()
    scan = scan_load(args.scan_hosts)
    rng = random.Random(16)
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        assets = inventory(size, rng)
        t = time.perf_counter()
        index = AssetIndex(assets)
        build_s = time.perf_counter() - t
        cold = addresses(args.lookups, rng)  # nearly all distinct: the cache misses
        cold_index = AssetIndex(assets)
        cold_index.CACHE_MAX = 0  # type: ignore[misc]  # every lookup parses and probes
        warm = [cold[i % 1000] for i in range(args.lookups)]  # 1000 busy addresses
        row = {
            "assets": len(index),
            "build_s": round(build_s, 3),
            "cold_us": per_lookup_us(cold_index.lookup, cold),
            "warm_us": per_lookup_us(index.lookup, warm),
            "hit_share": round(sum(index.lookup(a) is not None for a in cold) / len(cold), 2),
        }
        if size <= 10_000:
            cidrs = [netaddr.IPNetwork(a.network) for a in assets]
            sample = cold[: max(50, 200_000 // size)]
            row["netaddr_smallest_matching_cidr_us"] = per_lookup_us(
                lambda a, c=cidrs: netaddr.smallest_matching_cidr(a, c), sample
            )
        rows.append(row)
    print(json.dumps({"mode": "analysis", "scan": scan, "lookups": args.lookups, "sizes": rows}))


if __name__ == "__main__":
    main()
