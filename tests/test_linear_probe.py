"""The closed-form linear probe: scikit-learn's LDA where they coincide, near the former probe."""

import numpy as np
import pandas as pd
import pytest
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

from cellblock.profiling.lda import SharedLDA
from cellblock.profiling.probes import batch_probe, linear_probe


def screen(seed=0, experiments=4, sirnas=40, dim=24, strength=1.0):
    """Each experiment holds every siRNA twice; a per-siRNA direction, an experiment offset."""
    rng = np.random.default_rng(seed)
    labels = np.tile(np.repeat(np.arange(sirnas), 2), experiments)
    experiment = np.repeat(np.arange(experiments), 2 * sirnas)
    directions = rng.normal(size=(sirnas, dim)) * strength
    offsets = rng.normal(size=(experiments, dim))
    x = directions[labels] + offsets[experiment] + rng.normal(size=(len(labels), dim))
    meta = pd.DataFrame(
        {
            "Metadata_sirna": labels,
            "Metadata_well_type": "treatment",
            "Metadata_experiment": [f"E{e}" for e in experiment],
            "Metadata_plate": [f"E{e}P{i % 2}" for i, e in enumerate(experiment)],
        }
    )
    return meta, x


@pytest.mark.parametrize("shrinkage", [0.0, 0.3])
def test_shared_lda_is_sklearn_lda_at_a_fixed_shrinkage(shrinkage):
    meta, x = screen()
    y = meta["Metadata_sirna"].to_numpy()
    ours = SharedLDA(shrinkage=shrinkage).fit(x, y)
    theirs = LinearDiscriminantAnalysis(solver="lsqr", shrinkage=shrinkage).fit(x, y)
    np.testing.assert_allclose(ours.coef_, theirs.coef_, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(ours.intercept_, theirs.intercept_, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(
        ours.predict_log_proba(x), theirs.predict_log_proba(x), rtol=1e-6, atol=1e-6
    )
    assert (ours.predict(x) == theirs.predict(x)).all()


def test_the_probe_reads_like_the_former_logistic_probe():
    for strength, low, high in ((0.6, 0.15, 0.35), (1.0, 0.5, 0.8)):
        meta, x = screen(strength=strength)
        lda = linear_probe(meta, x)
        logistic = linear_probe(meta, x, kind="logistic")
        assert lda is not None and logistic is not None
        # leave-one-experiment-out on 320 wells: a few wells either way
        assert abs(lda["accuracy"] - logistic["accuracy"]) < 0.05
        assert low < lda["accuracy"] < high
    batch = batch_probe(meta, x)
    assert batch["experiment"]["accuracy"] > 0.9  # the offsets give experiments away
    with pytest.raises(ValueError, match="probe 'svm'"):
        linear_probe(meta, x, kind="svm")
