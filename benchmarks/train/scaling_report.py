#!/usr/bin/env python3
"""Reads what benchmarks/train/scaling.sh left in OUT_DIR and writes
scaling.json and scaling.png (gnuplot), and prints the tables.

    scaling_report.py OUT_DIR GPU_KIND "RANKS" "RECIPES" EXTEND_TO
Python standard library only.
"""
import json
import os
import shutil
import statistics
import subprocess
import sys


def measured(out, mode, w):
    with open(os.path.join(out, f"{mode}-np{w}", "metrics.jsonl")) as f:
        recs = [json.loads(l) for l in f if '"train"' in l]
    timed = recs[3:] or recs
    return {"tokens_per_s": statistics.median(r["tokens_per_s"] for r in timed),
            "step_s": statistics.median(r["time"]["step"] for r in timed)}


def main():
    out, gpu, ranks, recipes, extend = sys.argv[1], sys.argv[2], sys.argv[3].split(), sys.argv[4].split(), int(sys.argv[5])
    ranks = [int(r) for r in ranks]
    report = {"measured": {}, "extension": {"device": gpu, "recipes": {}}}
    for mode in ("strong", "weak"):
        rows = []
        for w in ranks:
            m = measured(out, mode, w)
            with open(os.path.join(out, f"{mode}-np{w}.plan.json")) as f:
                p = json.load(f)
            rows.append({"ranks": w, "tokens_per_s": m["tokens_per_s"], "step_s": m["step_s"],
                         "predicted_tokens_per_s": p["tokens_per_s"], "predicted_step_s": p["step_s"]})
        base = rows[0]["tokens_per_s"] / rows[0]["ranks"]
        pbase = rows[0]["predicted_tokens_per_s"] / rows[0]["ranks"]
        for r in rows:
            r["efficiency"] = r["tokens_per_s"] / r["ranks"] / base
            r["predicted_efficiency"] = r["predicted_tokens_per_s"] / r["ranks"] / pbase
        report["measured"][mode] = rows
    for name in recipes:
        rows = []
        n = 8
        while n <= extend:
            with open(os.path.join(out, f"ext-{name}-{n}.plan.json")) as f:
                p = json.load(f)
            rows.append({"gpus": n, "tokens_per_s": p["tokens_per_s"], "step_s": p["step_s"],
                         "memory_total_gib": p["memory"]["total"] / 2**30, "fits": p["fits"],
                         "exposed_comm_s": p["time"]["exposed_comm_s"], "global_batch": p["run"]["global_batch"],
                         "assumes": p["assumes"]})
            n *= 2
        for r in rows:
            r["efficiency"] = r["tokens_per_s"] / r["gpus"] / (rows[0]["tokens_per_s"] / rows[0]["gpus"])
        report["extension"]["recipes"][name] = rows
    with open(os.path.join(out, "scaling.json"), "w") as f:
        json.dump(report, f, indent=1)

    for mode, rows in report["measured"].items():
        print(f"{mode} scaling on this machine (measured / planner)")
        print(f"{'ranks':>5} {'tokens/s':>10} {'predicted':>10} {'ratio':>6} {'efficiency':>10} {'predicted':>10}")
        for r in rows:
            print(f"{r['ranks']:>5} {r['tokens_per_s']:>10.1f} {r['predicted_tokens_per_s']:>10.1f} "
                  f"{r['predicted_tokens_per_s'] / r['tokens_per_s']:>6.2f} {r['efficiency']:>10.2f} "
                  f"{r['predicted_efficiency']:>10.2f}")
    for name, rows in report["extension"]["recipes"].items():
        print(f"{name} on {gpu} (planner, weak scaling; {rows[0]['assumes']})")
        print(f"{'GPUs':>5} {'global batch':>12} {'tokens/s':>12} {'efficiency':>10} {'step s':>7} {'GiB/GPU':>8}")
        for r in rows:
            print(f"{r['gpus']:>5} {r['global_batch']:>12} {r['tokens_per_s']:>12.0f} {r['efficiency']:>10.3f} "
                  f"{r['step_s']:>7.2f} {r['memory_total_gib']:>8.1f}")

    if shutil.which("gnuplot") is None:
        print("gnuplot not found: no plot (scaling.json has the numbers)")
        return 0
    dat = os.path.join(out, "scaling.dat")
    with open(dat, "w") as f:
        for mode in ("strong", "weak"):
            f.write(f"# {mode}: ranks tokens/s predicted\n")
            for r in report["measured"][mode]:
                f.write(f"{r['ranks']} {r['tokens_per_s']} {r['predicted_tokens_per_s']}\n")
            f.write("\n\n")
        for name in recipes:
            f.write(f"# {name}: gpus efficiency tokens/s\n")
            for r in report["extension"]["recipes"][name]:
                f.write(f"{r['gpus']} {r['efficiency']} {r['tokens_per_s']}\n")
            f.write("\n\n")
    png = os.path.join(out, "scaling.png")
    plots = ", ".join(f"'{dat}' index {2 + i} using 1:2 with linespoints lw 2 title '{name}'"
                      for i, name in enumerate(recipes))
    script = f"""
set terminal pngcairo size 1400,560 font ',11'
set output '{png}'
set multiplot layout 1,2
set title 'This machine: tokens/s vs ranks (points measured, lines planner)'
set xlabel 'ranks'; set ylabel 'tokens/s'; set key top left; set grid
set xtics ({", ".join(str(r) for r in ranks)})
plot '{dat}' index 0 using 1:2 with points pt 7 ps 1.5 lc 1 title 'strong, measured', \\
     '{dat}' index 0 using 1:3 with lines lw 2 lc 1 title 'strong, planner', \\
     '{dat}' index 1 using 1:2 with points pt 5 ps 1.5 lc 2 title 'weak, measured', \\
     '{dat}' index 1 using 1:3 with lines lw 2 lc 2 title 'weak, planner'
set title 'Planner: weak-scaling efficiency on {gpu} (NVLink x8, 400 Gb/s IB per GPU)'
set xlabel 'GPUs'; set ylabel 'tokens/s per GPU vs 8 GPUs'; set logscale x 2; set yrange [0:1.1]
unset xtics; set xtics
plot {plots}
unset multiplot
"""
    subprocess.run(["gnuplot"], input=script, text=True, check=True)
    print("wrote", os.path.join(out, "scaling.json"), "and", png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
