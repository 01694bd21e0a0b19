#!/usr/bin/env python
"""CPU seconds (process time, robust to the shared machine's contention) and wall seconds of one budget-curve
point: 1 epoch of each method on mnist5k (4,000 images, 500 held out, PGD-5, the budget_curve defaults), 1 thread;
APGD-CE + APGD-T on the same 500 test images for the shipped quick PGD-AT checkpoint (a robust model).

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/bench_budget_point.py [out.json]     # from the repository root

The measured figures (2026-12-01, a shared 2-core CPU) are in benchmarks/results/bench_budget_point_1thread.json.
"""
import json, os, sys, time, torch
torch.set_num_threads(1)
from clead_lite.course.datasets import load_dataset
from clead_lite.models import build_model
from clead_lite.course.profiles import get_profile
from clead_lite.course.profiles import train_config
from clead_lite.training import TrainConfig, train
from clead_lite.course.scoring import score_model
from clead_lite.course.checkpoints import load_checkpoint, load_model_state
prof = get_profile("quick", dataset="mnist5k")
x, y = load_dataset("mnist5k", "train")
xt, yt = load_dataset("mnist5k", "test", n=500, seed=0)
out = {"load_at_start": os.getloadavg()}
def clock(): return time.perf_counter(), time.process_time()
for method in ("pgd_at", "trades", "clead_online"):
    torch.manual_seed(0); m = build_model("smallcnn", num_classes=10)
    cfg = train_config(prof, method, epochs=1, seed=0, attack_steps=5)
    w, c = clock(); r = train(m, x, y, cfg, dataset="mnist5k", progress=False); w2, c2 = clock()
    out[f"{method}_1_epoch"] = dict(wall_s=w2 - w, cpu_s=c2 - c, train_epoch_s=r.history.epochs()[0]["seconds"])
    print(out, flush=True)
st = load_checkpoint("data/checkpoints/mnist5k_pgd_at_quick.pt", map_location="cpu")
m2 = build_model("smallcnn", num_classes=10); load_model_state(m2, st); m2.eval()
w, c = clock(); s = score_model(m2, xt, yt, 0.3, columns=("apgd",)); w2, c2 = clock()
out["apgd_shipped_pgd_at_500"] = dict(wall_s=w2 - w, cpu_s=c2 - c, acc=s["apgd"])
out["load_at_end"] = os.getloadavg()
print(json.dumps(out, indent=1), flush=True)
json.dump(out, open(sys.argv[1] if len(sys.argv) > 1 else "bench_budget_point.json", "w"), indent=1)
