"""The command line: each command once, its outputs, and exit code 2 with a clear message for bad input."""

from __future__ import annotations

import gzip
import json
import struct
import subprocess
import sys

import pytest

from classicnets import __version__
from classicnets.cli import build_parser, main
from classicnets.data.sources import load_split


def test_models_fast(cli):
    code, out, _ = cli("models", "--fast")
    assert code == 0
    assert "lenet5" in out and "resnet18" in out and "61,706" in out
    code, out, _ = cli("models", "resnet1*", "--fast", "--format", "json")
    assert code == 0 and {row["name"] for row in json.loads(out)} == {"resnet18", "resnet101", "resnet110", "resnet152"}


def test_summary_table_and_json(cli):
    code, out, _ = cli("summary", "lenet5")
    assert code == 0 and "28 x 28 x 6" in out and "61,706" in out
    code, out, _ = cli("summary", "lenet5", "--format", "json")
    summary = json.loads(out)
    assert code == 0 and summary["model"] == "lenet5" and summary["total_params"] == 61706
    assert summary["input_size"] == [1, 32, 32] and summary["rows"][0]["output"] == "28 x 28 x 6"


@pytest.mark.parametrize("layers, total", [
    (["16x1", "32x5"], ["12,443,648", "12.4 M"]),
    (["32x5"], ["120,422,400"]),
    ([], ["120,422,400"]),  # the default: the 5x5 layer alone
])
def test_cost_of_the_bottleneck_example(cli, layers, total):
    code, out, _ = cli("cost", *layers)
    assert code == 0
    assert all(t in out.splitlines()[-1] for t in total)


def test_datasets(cli):
    code, out, _ = cli("datasets")
    assert code == 0 and "digits" in out


# ---- train, then evaluate -----------------------------------------------------------------

@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", "lenet5", "--epochs", "1", "--train-limit", "256", "--out", str(out), "--quiet",
                 "--threads", "1"]) == 0
    return out


def test_train_command_writes_a_run(cli_run):
    for name in ("model.safetensors", "model.json", "train_state.safetensors", "metrics.jsonl", "curves.png"):
        assert (cli_run / name).is_file(), name
    config = json.loads((cli_run / "config.json").read_text())
    assert config["train_limit"] == 256 and config["epochs"] == 1 and config["threads"] == 1


def test_test_limit_tests_on_the_first_n_test_images(tmp_path):
    from classicnets.train import TrainConfig, train

    r = train(TrainConfig(model="lenet5", epochs=1, train_limit=64, test_limit=100, threads=1, quiet=True,
                          out=str(tmp_path / "run")))
    assert r.split_sizes["test"] == 100 and r.split_sizes["train"] == 64
    assert round(r.test_accuracy * 100) == pytest.approx(r.test_accuracy * 100)  # a whole number of 100 images
    with pytest.raises(SystemExit):  # a count, not zero
        main(["train", "lenet5", "--test-limit", "0"])


def test_evaluate_json(cli, cli_run):
    (cli_run / "confusion.png").unlink(missing_ok=True)
    code, out, _ = cli("evaluate", cli_run, "--format", "json")
    assert code == 0
    result = json.loads(out)
    confusion = result["confusion"]
    assert len(confusion) == 10 and all(len(row) == 10 for row in confusion)
    assert sum(map(sum, confusion)) == 1000 == result["count"]
    assert result["accuracy"] == pytest.approx(sum(confusion[i][i] for i in range(10)) / 1000)
    assert set(result["per_class_accuracy"]) == {str(i) for i in range(10)}
    assert (cli_run / "confusion.png").read_bytes()[:4] == b"\x89PNG"


def test_evaluate_table_and_out_dir(cli, cli_run, tmp_path):
    code, out, _ = cli("evaluate", cli_run, "--out", tmp_path / "report")
    assert code == 0 and "accuracy" in out and "confusion matrix" in out
    assert (tmp_path / "report" / "confusion.png").is_file()


def test_evaluate_ignores_a_folder_named_like_the_dataset(cli, cli_run, tmp_path, monkeypatch):
    """A run trained on the named dataset 'digits' is evaluated on it even where ./digits exists."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "digits").mkdir()
    code, out, err = cli("evaluate", cli_run, "--format", "json")
    assert code == 0, err
    assert json.loads(out)["count"] == 1000


def write_idx(path, array) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(gzip.compress(header + array.astype("uint8").tobytes()))


def test_evaluate_on_an_idx_pair_under_any_names(cli, cli_run, tmp_path):
    data = load_split("digits", None, "test", size=(28, 28), channels=1)
    images, labels = data.images[:200, 0].numpy(), data.labels[:200].numpy()
    folder = tmp_path / "mine"
    folder.mkdir()
    write_idx(folder / "foo-images-idx3-ubyte.gz", images)
    write_idx(folder / "foo-labels-idx1-ubyte.gz", labels)
    code, out, err = cli("evaluate", cli_run, "--data", folder, "--format", "json", "--out", tmp_path)
    assert code == 0, err
    result = json.loads(out)
    assert result["count"] == 200 and sum(map(sum, result["confusion"])) == 200
    # The same 200 digits as the first 200 of the named test split: the same predictions.
    from classicnets.predict import load

    predicted = load(cli_run).predict(images)
    assert result["accuracy"] == pytest.approx(float((predicted.numpy() == labels).mean()))


# ---- bad input: exit code 2 and a message naming what was wrong ---------------------------

@pytest.mark.parametrize("argv, names", [
    (["train", "nosuchnet"], "'nosuchnet'"),
    (["summary", "nosuchnet"], "'nosuchnet'"),
    (["train", "lenet5", "--epochs", "0"], "--epochs"),
    (["train", "lenet5", "--lr", "-1"], "--lr"),
    (["train", "lenet5", "--lr", "nan"], "--lr"),
    (["train", "lenet5", "--momentum", "-0.5"], "--momentum"),
    (["train", "lenet5", "--batch-size", "x"], "--batch-size"),
    (["train", "lenet5", "--data", "/nonexistent"], "/nonexistent"),
    (["train", "lenet5", "--resume"], "--resume"),
    (["train", "lenet5", "--augment", "rotate", "--train-limit", "64"], "--augment"),
    (["train", "lenet5", "--model-arg", "novalue"], "--model-arg"),
    (["evaluate", "{tmp}/missing-run"], "missing-run"),
    (["predict", "{tmp}/missing-run", "x.png"], "missing-run"),
    (["cost", "3y"], "'3y'"),
    (["export", "{tmp}/missing-run"], "missing-run"),
    (["nosuchcommand"], "nosuchcommand"),
])
def test_bad_input_exits_2_naming_it(cli, tmp_path, argv, names):
    code, out, err = cli(*[a.format(tmp=tmp_path) for a in argv])
    assert code == 2
    assert names in err and "Traceback" not in err


def test_resume_without_a_saved_epoch(cli, tmp_path):
    code, _, err = cli("train", "lenet5", "--out", tmp_path / "empty", "--resume", "--threads", "1")
    assert code == 2 and "--resume" in err and "does not exist" in err


@pytest.mark.parametrize("text", ["0", "0.0", "0.00", "0e0", "0.5"])
def test_zero_is_a_valid_momentum_and_weight_decay(text):
    args = build_parser().parse_args(["train", "lenet5", "--momentum", text, "--weight-decay", text])
    assert args.momentum == float(text) and args.weight_decay == float(text)


# ---- as a program ---------------------------------------------------------------------------

@pytest.mark.slow
def test_python_m_version():
    done = subprocess.run([sys.executable, "-m", "classicnets", "--version"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == f"classicnets {__version__}"


def test_closed_pipe_is_not_a_traceback():
    """``classicnets models | head -1``: the reader leaves early; no traceback, no error message."""
    proc = subprocess.Popen([sys.executable, "-m", "classicnets", "models", "--fast"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before anything is written
    err = proc.stderr.read().decode()
    proc.stderr.close()
    proc.wait(timeout=120)
    assert "Traceback" not in err and "BrokenPipe" not in err
    assert proc.returncode != 0
