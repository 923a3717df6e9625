"""Block-wise mAP equals copairs' own pipeline exactly: activity and consistency."""

import numpy as np
import pandas as pd
import pytest
from copairs.map import average_precision, mean_average_precision
from copairs.matching import assign_reference_index

from cellblock.profiling.apchunks import block_average_precision
from cellblock.profiling.mapscore import copairs_map

LABEL = "Metadata_sirna"
RULES = {
    "activity": ([LABEL, "Metadata_reference_index"], [], [LABEL, "Metadata_reference_index"]),
    "consistency": ([LABEL], ["Metadata_experiment"], [LABEL]),
}


def screen(seed: int, n_sirnas: int = 12, experiments: int = 3, dim: int = 8):
    """Wells of ``n_sirnas`` siRNAs (signal of varying strength) and 3 negative controls
    per experiment; some profiles repeated exactly or scaled, so that similarities tie."""
    rng = np.random.default_rng(seed)
    rows, feats = [], []
    directions = rng.normal(size=(n_sirnas, dim))
    for e in range(experiments):
        for s in range(n_sirnas):
            for _ in range(int(rng.integers(1, 3))):
                rows.append((s, f"E{e}", "treatment"))
                feats.append(directions[s] * (s % 4) + rng.normal(size=dim))
        for _ in range(3):
            rows.append((n_sirnas, f"E{e}", "negative_control"))
            feats.append(rng.normal(size=dim))
    x = np.array(feats)
    x[5] = x[2]  # exact ties
    x[9] = 3.0 * x[7]  # the same direction: cosine ties up to rounding
    x[-1] = x[0]
    x[11] = 0.0  # an all-zero profile: NaN similarities
    meta = pd.DataFrame(rows, columns=[LABEL, "Metadata_experiment", "Metadata_well_type"])
    return meta, x


def copairs_ap(meta, x, kind):
    """copairs' average_precision as mapscore prepares its frame."""
    if kind == "activity":
        controls = "Metadata_well_type == 'negative_control'"
        meta = assign_reference_index(
            meta, controls, reference_col="Metadata_reference_index", default_value=-1
        )
    else:
        keep = (meta["Metadata_well_type"] == "treatment").to_numpy()
        meta, x = meta[keep].reset_index(drop=True), x[keep]
    pos_same, pos_diff, neg_diff = RULES[kind]
    ap = average_precision(meta, x, pos_same, pos_diff, [], neg_diff, progress_bar=False)
    return meta, x, ap


@pytest.mark.parametrize("kind", ["activity", "consistency"])
@pytest.mark.parametrize(
    ("seed", "n_sirnas", "experiments"),
    # few replicates (ranks by comparison) and over 32 (ranks by sorting)
    [(0, 12, 3), (1, 12, 3), (2, 12, 3), (3, 3, 25)],
)
def test_block_average_precision_is_copairs_exactly(kind, seed, n_sirnas, experiments):
    meta, x = screen(seed, n_sirnas, experiments)
    meta, x, expected = copairs_ap(meta, x, kind)
    # blocks of 1, 7 and all queries: the same values, bit for bit
    for block in (len(x), 7 * len(x), 10**9):
        got = block_average_precision(meta, x, RULES[kind], block_elements=block)
        for column in ("n_pos_pairs", "n_total_pairs"):
            np.testing.assert_array_equal(got[column], expected[column])
        for column in ("average_precision", "normalized_average_precision"):
            np.testing.assert_array_equal(got[column].to_numpy(), expected[column].to_numpy())
    assert expected["average_precision"].notna().sum() > 20  # the screen pairs wells


@pytest.mark.parametrize("kind", ["activity", "consistency"])
def test_copairs_map_equals_copairs_pipeline_with_p_values(kind):
    meta, x = screen(3, n_sirnas=20)
    paired, paired_x, ap = copairs_ap(meta, x, kind)
    treated = (ap["Metadata_well_type"] == "treatment") & ap["average_precision"].notna()
    ours = block_average_precision(paired, paired_x, RULES[kind])[treated.to_numpy()]
    ap = ap[treated]
    direct, same = (
        mean_average_precision(
            a, [LABEL], null_size=300, threshold=0.05, seed=0, progress_bar=False
        )
        for a in (ap, ours)
    )
    for column in ("mean_average_precision", "p_value", "corrected_p_value"):
        np.testing.assert_array_equal(same[column], direct[column])
    got = copairs_map(meta, x, kind, null_size=300)
    assert got is not None
    assert got["map"] == direct["mean_average_precision"].mean()
    assert got["fraction_significant"] == direct["below_corrected_p"].mean()
    assert 0 < got["fraction_significant"] < 1  # p-values decide it: some, not all, pass
    assert got["n_sirnas"] == len(direct) and got["n_wells"] == len(ap)


def test_copairs_map_is_none_without_pairs():
    meta, x = screen(0, experiments=1)
    # one experiment: no siRNA has a well in another, no consistency pair
    assert copairs_map(meta, x, "consistency", null_size=100) is None
    x[4, 0] = np.nan
    assert copairs_map(meta, x, "activity", null_size=100) is None
