"""The shared command-line value parsers (``cellblock.cli.values``) and options built on them."""

import argparse

import pytest

from cellblock.blockwise.worker import FAULT_ENV, Fault
from cellblock.cli import parse_overrides
from cellblock.cli.values import comma_list, key_value, key_values
from cellblock.cluster.options import _key_value
from cellblock.errors import UserError
from cellblock.training.cli import _channels


def test_comma_list_strips_drops_empties_and_converts():
    assert comma_list(" HEPG2-01, U2OS-02/Plate1,,", what="--experiments") == [
        "HEPG2-01",
        "U2OS-02/Plate1",
    ]
    assert comma_list(None, what="--x") == [] and comma_list("  ", what="--x") == []
    assert comma_list("1, 2,3", what="--channels", type=int) == [1, 2, 3]
    assert comma_list("2,0.5", what="--weights", type=float) == [2.0, 0.5]
    with pytest.raises(UserError, match=r"--channels '1,x': 'x' is not an integer"):
        comma_list("1,x", what="--channels", type=int)
    with pytest.raises(UserError, match=r"--weights 'a': 'a' is not a number"):
        comma_list("a", what="--weights", type=float)
    with pytest.raises(UserError, match=r"--experiments ' , ': expected comma-separated"):
        comma_list(" , ", what="--experiments")


def test_key_values_and_bare_keys():
    assert key_values([" time = 1:00:00", "x=a=b", "x=c"], what="--o") == {
        "time": "1:00:00",
        "x": "c",
    }
    assert key_value("a=b=c", what="--o") == ("a", "b=c")
    assert key_value("exclusive", what="--sbatch", bare=True) == ("exclusive", "")
    with pytest.raises(UserError, match=r"--o 'exclusive': expected KEY=VALUE$"):
        key_value("exclusive", what="--o")
    with pytest.raises(UserError, match=r"--o '=1': expected KEY=VALUE or KEY"):
        key_value("=1", what="--o", bare=True)


def test_the_options_built_on_them_keep_their_behaviour():
    assert parse_overrides(["train.lr=0.01", "data.fold = 2", "net.pretrained="]) == {
        "train.lr": 0.01,
        "data.fold": 2,
        "net.pretrained": None,
    }
    with pytest.raises(UserError, match=r"--set 'train.lr': expected KEY=VALUE"):
        parse_overrides(["train.lr"])
    with pytest.raises(UserError, match=r"^--set data\.channels=\[1,2: not a YAML value \("):
        parse_overrides(["data.channels=[1,2"])
    assert parse_overrides(["train.lr=3e-4", "a=1E6", "b=1e", "c='2e3'"]) == {
        "train.lr": 3e-4,
        "a": 1e6,
        "b": "1e",
        "c": "2e3",
    }
    assert _key_value("--exclusive") == ("exclusive", "")
    assert _key_value("qos = low") == ("qos", "low")
    with pytest.raises(argparse.ArgumentTypeError, match="expected KEY=VALUE or KEY, got '=x'"):
        _key_value("=x")
    assert _channels("1,2,,3") == [1, 2, 3]
    with pytest.raises(argparse.ArgumentTypeError, match=r"expected e\.g\. 1,2,3,4,5"):
        _channels("1,two")
    fault = Fault.from_env({FAULT_ENV: " start, well=E/Plate1/B02 ,sleep=0.5,"})
    assert fault == Fault(True, frozenset({"E/Plate1/B02"}), 0.5)
    with pytest.raises(UserError, match="unknown directive 'stop'"):
        Fault.from_env({FAULT_ENV: "stop"})
