"""Run the standard AutoAttack once per shipped checkpoint on notebook 06's images and cache the outcomes.

    OMP_NUM_THREADS=1 python scripts/make_aa_cache.py [--profile quick] [--methods pgd_at clead_online ...]

Images: exactly what notebook 06 attacks: `load_data(profile)`'s test split, its first `profile.n_eval`
images, of which AutoAttack takes the seeded random subset of `profile.n_autoattack` (seed 0). The outcome
per image (robust or not) goes to data/checkpoints/autoattack_cache.json, keyed by the sha256 of the weights
and of the images (clead_lite.course.aa_cache). Re-run it after re-training a checkpoint or changing those images.
"""
from __future__ import annotations

import argparse
import shlex
import sys
import time

METHODS = ("standard", "pgd_at", "clead_online", "clead_faithful")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--out", default=None, help="the cache file (default: data/checkpoints/autoattack_cache.json)")
    args = parser.parse_args(argv)

    import torch
    from clead_lite.course.aa_cache import cache_path, record_result
    from clead_lite.course.checkpoints import find_checkpoint, load_pretrained, sha256_file
    from clead_lite.course.autoattack import autoattack_accuracy
    from clead_lite.course.notebook_setup import load_data
    from clead_lite.course.profiles import get_profile

    profile = get_profile(args.profile)
    if not profile.use_checkpoints:
        print(f"profile {profile.name!r} loads no shipped checkpoints: nothing to cache", file=sys.stderr)
        return 2
    _, _, x_test, y_test = load_data(profile)
    x_eval, y_eval = x_test[:profile.n_eval], y_test[:profile.n_eval]
    n = min(profile.n_autoattack, len(y_eval))
    command = "python scripts/make_aa_cache.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    for method in args.methods:
        path = find_checkpoint(profile.dataset, method, profile.name, profile.model)
        if path is None:
            print(f"{method}: no shipped checkpoint, skipped")
            continue
        model, entry = load_pretrained(profile.dataset, method, profile.name, profile.model, device="cpu")
        start = time.perf_counter()
        result = autoattack_accuracy(model, x_eval, y_eval, profile.eps, n=n, seed=0, return_details=True)
        record_result(result, model, x_eval, y_eval, label=f"{profile.dataset}/{method}/{profile.name}",
                      checkpoint=path.name, checkpoint_sha256=entry["sha256"], command=command, path=args.out,
                      images=f"{profile.dataset} test split (load_data), first {profile.n_eval}; "
                             f"seeded subset of {n} (seed 0)")
        print(f"{method}: AutoAttack {result.accuracy:.1%} on {n} images (clean {result.clean_accuracy:.1%}), "
              f"attacks run: {', '.join(result.attacks_run) or '-'}; {time.perf_counter() - start:.0f} s with "
              f"{torch.get_num_threads()} thread(s)", flush=True)
    print(f"wrote {args.out or cache_path()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
