"""One-screen summary of a packed dataset: ``python -m cellblock.summary DATASET``."""

from __future__ import annotations

import argparse
from pathlib import Path

from cellblock.store.packed import PackedDataset

__all__ = ["summarize"]


def summarize(path: Path) -> str:
    """Plates, sites, classes, splits and bytes on disk of the dataset at ``path``."""
    ds = PackedDataset(path)
    meta = ds.metadata
    n_bytes = sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())
    lines = [
        f"dataset      {path}",
        f"plates       {len(ds.plate_keys())} ({ds.info.plate_wells}-well), "
        f"experiments {meta.experiment.nunique()}, cell types {meta.cell_type.nunique()}",
        f"sites        {len(meta)} (train {int((meta.split == 'train').sum())}, "
        f"test {int((meta.split == 'test').sum())}), image "
        f"{len(ds.info.channels)}x{ds.info.image_size[0]}x{ds.info.image_size[1]}",
        f"classes      {meta.sirna.nunique()} labels seen, "
        f"{meta[meta.well_type == 'treatment'].id_code.nunique()} treatment wells",
        f"bytes        {n_bytes / 1e6:.1f} MB",
    ]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("dataset", type=Path)
    p.add_argument("--seconds", type=float, help="wall time to report")
    args = p.parse_args()
    print(summarize(args.dataset))
    if args.seconds is not None:
        print(f"seconds      {args.seconds:.0f}")


if __name__ == "__main__":
    main()
