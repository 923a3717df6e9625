#!/usr/bin/env python
"""How far the recipe reaches: a sweep over phenotype and batch strength, recipes beside
the reference probes.

For every difficulty (``--effects`` x ``--batches``) a demo-sized synthetic screen is
made and packed (zstd-3: packing speed matters here, not size); then

  probes     cellblock.probes: the image-statistics probe (the floor) and the oracle on
             the cells' true traits (the ceiling), on the held-out treatment wells
  recipes    02_train/synthetic/tiny trained with each recipe's --set overrides for the
             same iterations, predicted on the test split (predict_scan.py, TTA flips
             unless the recipe says otherwise) and scored by ensemble.py (argmax,
             masked, assigned; treatment wells only)

so every row of one difficulty is scored on the same wells by the same plate step.
Writes scripts/bench/results/NAME.md, NAME.json and NAME.png (``--name``, default
science: accuracy after the assignment vs difficulty, one line per recipe and probe).
A benchmark, not a test: a full sweep takes hours on 2 cores; ``--effects 2.5
--batches 1 --recipes default --iterations 20 --image-size 32`` checks the plumbing.

    python scripts/bench/science.py [--effects 2.5,1.5,1.0,0.7] [--batches 1,2]
        [--recipes default,previous,...] [--iterations 1500] [--work DIR] [--name NAME]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cellblock.atomic import atomic_write_text
from cellblock.cli import comma_list, run
from cellblock.data.labels import n_classes
from cellblock.ensemble import run_ensemble
from cellblock.probes import reference_probes
from cellblock.store.omezarr import FieldCodec
from cellblock.store.pack import pack_dataset
from cellblock.store.packed import PackedDataset
from cellblock.synth import preset, write_dataset

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "scripts" / "bench" / "results"
SETUP = ROOT / "02_train" / "synthetic" / "tiny"

# Recipe variants worth knowing: name -> --set overrides of synthetic/tiny, and
#   tta         the prediction's TTA (default: flips)
#   pretrain    share of the iterations spent first on control wells only (stage I, the
#               controls of train and test plates), the rest on all classes (stage II)
#   iterations  factor on --iterations (a wider net gets fewer: the same CPU time)
#   seeds       train this many seeds (train.seed 0, 1, ...) and ensemble them (04_ensemble)
RECIPES: dict[str, dict] = {
    "default": {"sets": []},  # the setup as committed
    # batches that mix plates, BatchNorm with the trained statistics (before data.batch_by)
    "mixed_batches": {"sets": ["data.batch_by=null"]},
    "ensemble3": {"sets": [], "seeds": 3},  # three seeds, logits averaged: 3x the time
    # the recipe before the sweep: one experiment per cell type held out for validation
    # (half the training data), light augmentation and weight decay, 128-wide embedding,
    # mixed batches
    "previous": {"sets": ["data.val_experiments=[HEPG2-02,HUVEC-02,RPE-02,U2OS-02]",
                          "data.batch_by=null",
                          "data.augment.erase_p=0.0", "data.augment.crop_scale=[0.8,1.0]",
                          "train.weight_decay=0.05", "net.dropout=0.0",
                          "net.embedding_dim=128"]},
    "experiment_norm": {"sets": ["data.normalization=experiment"]},  # per experiment
    "global_norm": {"sets": ["data.normalization=global"]},  # one set of statistics
    "no_tta": {"sets": [], "tta": "none"},  # one view per site instead of four flips
    "controls_pretrain": {"sets": [], "pretrain": 1 / 3},  # stage I -> II, same iterations
    # twice the channels in every stage: ~1.5x the time per step, so 2/3 of the iterations
    "wider": {"sets": ["net.backbone_args={channels: [64, 96, 96, 192]}"],
              "iterations": 2 / 3},
}  # fmt: skip


def _screen(work: Path, effect: float, batch: float, args) -> Path:
    """Make and pack one screen (reused when already there); return the dataset."""
    folder = work / f"effect{effect}_batch{batch}"
    raw, dataset = folder / "raw", folder / "dataset"
    if not (raw / "synthetic.json").is_file():
        config = preset("demo").replace(effect_size=effect, batch_strength=batch,
                                        seed=args.seed, image_size=args.image_size,
                                        experiments_per_cell_type=args.experiments)  # fmt: skip
        write_dataset(config, raw, workers=args.workers, progress=False)
    pack_dataset(raw, dataset, workers=args.workers, progress=False, codec=FieldCodec(level=3))
    return dataset


def _train(
    dataset: Path, run: Path, its: int, sets: list[str], init: Path | None, image_size: int
) -> tuple[float, float]:
    """One train.py run; (wall seconds, CPU seconds of the child)."""
    sets = [f"train.schedule_iters={its}", f"train.checkpoint_every={its}",
            f"train.validate_every={its}", f"net.input_size={image_size}", *sets]  # fmt: skip
    cmd = [sys.executable, str(SETUP / "train.py"), str(its), "--data", str(dataset),
           "--out", str(run), *[a for s in sets for a in ("--set", s)]]  # fmt: skip
    if init is not None:
        cmd += ["--init-from", str(init)]
    before, start = os.times(), time.monotonic()
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    after = os.times()
    cpu = (after.children_user + after.children_system) - (
        before.children_user + before.children_system
    )
    return time.monotonic() - start, cpu


def _train_recipe(
    dataset: Path, run: Path, its: int, recipe: dict, sets: list[str], image_size: int
) -> tuple[float, float]:
    """Train one run of a recipe: stage I on the controls first if it pretrains."""
    if not recipe.get("pretrain"):
        return _train(dataset, run, its, sets, None, image_size)
    n_controls = n_classes(PackedDataset(dataset).metadata, "control")
    first = round(its * recipe["pretrain"])
    stage1 = ["data.label=control", "data.controls_only=true",
              f"net.num_classes={n_controls}", *sets]  # fmt: skip
    stage = run.parent / f"{run.name}_stage1"
    s1, c1 = _train(dataset, stage, first, stage1, None, image_size)
    s2, c2 = _train(dataset, run, its - first, sets, stage, image_size)
    return s1 + s2, c1 + c2


def _recipe(dataset: Path, name: str, args) -> dict:
    """Train (stage I first if the recipe pretrains), predict and score one recipe."""
    recipe = RECIPES[name]
    folder = dataset.parent / "recipes" / name
    # a finished run of the same recipe, iterations, size and setup config is reused
    key = {"recipe": recipe, "iterations": args.iterations, "image_size": args.image_size,
           "setup_config": (SETUP / "config.yaml").read_text()}  # fmt: skip
    done = folder / "result.json"
    if done.is_file() and (cached := json.loads(done.read_text()))["key"] == key:
        return cached["result"]
    shutil.rmtree(folder, ignore_errors=True)  # an unfinished or other run starts afresh
    its = round(args.iterations * recipe.get("iterations", 1.0))
    seconds = cpu = 0.0
    preds = []
    for seed in range(recipe.get("seeds", 1)):
        run = folder / ("run" if seed == 0 else f"run_seed{seed}")
        sets = [*recipe["sets"], f"train.seed={seed}"] if seed else recipe["sets"]
        s, c = _train_recipe(dataset, run, its, recipe, sets, args.image_size)
        seconds, cpu = seconds + s, cpu + c
        preds.append(run.parent / run.name.replace("run", "pred"))
        subprocess.run([sys.executable, str(ROOT / "03_predict" / "predict_scan.py"), "--run",
                        str(run), "--data", str(dataset), "--split", "test", "--out",
                        str(preds[-1]), "--tta", recipe.get("tta", "flips"), "--overwrite"],
                       check=True, capture_output=True, text=True)  # fmt: skip
    report = run_ensemble(preds, dataset, folder / "ensemble", null_size=100)
    result = {
        "accuracy": {k: v["overall"] for k, v in report["accuracy"].items() if v},
        "train_seconds": round(seconds, 1),
        "train_cpu_seconds": round(cpu, 1),
        "iterations": round(args.iterations * recipe.get("iterations", 1.0)),
        "sets": recipe["sets"],
    }
    atomic_write_text(done, json.dumps({"key": key, "result": result}, indent=2) + "\n")
    return result


def _members(dataset: Path, name: str) -> list[float]:
    """Assigned accuracy of each seed of an ensembled recipe on its own (its predictions
    scored alone by the same plate step)."""
    folder = dataset.parent / "recipes" / name
    preds = sorted(folder.glob("pred*"), key=lambda p: (p.name != "pred", p.name))
    return [run_ensemble([pred], dataset, folder / f"alone_{pred.name}", null_size=100)
            ["accuracy"]["assigned"]["overall"] for pred in preds]  # fmt: skip


def _plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r['effect']}/{r['batch']}" for r in rows]
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(rows) + 3), 4.5))
    names = list(rows[0]["models"])
    for name in names:
        style = "s--" if name.endswith("probe") else "o-"
        ax.plot(labels, [r["models"][name]["accuracy"].get("assigned") for r in rows], style,
                label=name)  # fmt: skip
    ax.set(xlabel="phenotype strength / batch strength (harder to the right)",
           ylabel="held-out treatment accuracy, assigned", ylim=(0, 1.02),
           title="recipes and reference probes vs difficulty")  # fmt: skip
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _markdown(result: dict, argv: list[str]) -> str:
    rows = result["rows"]
    names = list(rows[0]["models"])
    head = "| effect / batch | " + " | ".join(names) + " |"
    lines = [
        "# How far the recipe reaches: difficulty sweep",
        "",
        f"`python scripts/bench/science.py {' '.join(argv)}` (held-out treatment wells of the "
        "test split; each cell: argmax / masked / **assigned**; recipes trained "
        f"{result['iterations']} iterations each unless the recipe scales them; wall and CPU "
        "seconds of training in brackets)",
        "",
        head,
        "|---|" + "---:|" * len(names),
    ]
    for r in rows:
        cells = []
        for name in names:
            m = r["models"][name]
            acc = m["accuracy"]
            cell = " / ".join(f"{acc[k]:.3f}" for k in ("argmax", "masked") if k in acc)
            cell += f" / **{acc['assigned']:.3f}**" if "assigned" in acc else ""
            if "train_seconds" in m:
                cell += f" ({m['train_seconds']:.0f} s, {m['train_cpu_seconds']:.0f} cpu-s)"
            cells.append(cell)
        lines.append(f"| {r['effect']} / {r['batch']} | " + " | ".join(cells) + " |")
    for r in rows:
        for name, m in r["models"].items():
            if "members" in m:
                alone = ", ".join(f"{a:.3f}" for a in m["members"])
                lines.append(f"\n{name} at {r['effect']} / {r['batch']}: its seeds alone, "
                             f"assigned: {alone}")  # fmt: skip
    lines += ["", f"![sweep]({result['name']}.png)", "", f"Environment: {result['environment']}",
              ""]  # fmt: skip
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--effects", default="2.5,1.5,1.0,0.7", help="phenotype strengths")
    p.add_argument("--batches", default="1,2", help="batch-effect strengths")
    p.add_argument("--recipes", default=",".join(RECIPES), help=f"of {', '.join(RECIPES)}")
    p.add_argument("--iterations", type=int, default=1500, help="training iterations per run")
    p.add_argument("--image-size", type=int, default=64, help="site size (the demo's: 64)")
    p.add_argument("--experiments", type=int, default=3,
                   help="experiments per cell type (demo: 3, 1 held out)")  # fmt: skip
    p.add_argument("--seed", type=int, default=7, help="screen seed (not the demo's 0)")
    p.add_argument("--workers", type=int, default=2, help="processes making and packing")
    p.add_argument("--work", help="working folder (default: a temporary one, removed)")
    p.add_argument("--results", default=str(RESULTS), help="where NAME.md/json/png go")
    p.add_argument("--name", default="science", help="result files' name (NAME.md, ...)")
    args = p.parse_args()
    recipes = comma_list(args.recipes, what="--recipes")
    unknown = sorted(set(recipes) - set(RECIPES))
    if unknown:
        p.error(f"--recipes: unknown {unknown}; known: {', '.join(RECIPES)}")
    tmp = None if args.work else tempfile.TemporaryDirectory(prefix="science-")
    work = Path(args.work or tmp.name)
    rows = []
    for effect in comma_list(args.effects, what="--effects", type=float):
        for batch in comma_list(args.batches, what="--batches", type=float):
            dataset = _screen(work, effect, batch, args)
            # the former logistic probe: the committed tables were measured with it
            # (the default closed-form probe reads higher on these screens)
            probes = reference_probes(
                dataset,
                dataset.parent / "raw" / "site_traits.csv",
                workers=args.workers,
                progress=False,
                kind="logistic",
            )
            models = {}
            for name in recipes:
                models[name] = _recipe(dataset, name, args)
                if RECIPES[name].get("seeds", 1) > 1:
                    models[name]["members"] = _members(dataset, name)
                print(f"effect {effect} batch {batch} {name}: {models[name]['accuracy']}",
                      flush=True)  # fmt: skip
            for name, probe in probes["probes"].items():
                acc = {k: v["overall"] for k, v in probe["accuracy"].items() if v}
                models[f"{name} probe"] = {"accuracy": acc}
            rows.append({"effect": effect, "batch": batch, "models": models})
    result = {
        "name": args.name,
        "iterations": args.iterations,
        "rows": rows,
        "environment": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"python {platform.python_version()}, load {os.getloadavg()[0]:.1f}, "
        f"{time.strftime('%Y-%m-%d')}",
    }
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / f"{args.name}.json", json.dumps(result, indent=2) + "\n")
    _plot(rows, out / f"{args.name}.png")
    atomic_write_text(out / f"{args.name}.md", _markdown(result, sys.argv[1:]))
    print(_markdown(result, sys.argv[1:]))
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    run(main)
