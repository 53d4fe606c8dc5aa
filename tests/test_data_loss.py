"""Nothing a user had on disk is lost: stopped runs, refused runs, two runs at once, kills mid-save, full disks."""
import errno
import json
import os
import shutil
import signal
from pathlib import Path

import pytest

import chargen
from chargen import ChargenError, OptionError, model
from chargen import folder as store
from chargen.cli import cli
from chargen.loop import Trainer
from click.testing import CliRunner

from .conftest import TINY_OPTIONS, needs_native_bf16

OPTIONS = {**TINY_OPTIONS, "quiet": True}


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file of a checkpoint folder but its lock, by name."""
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and p.name != store.LOCK}


def stop_after(monkeypatch, steps: int, signum: int = signal.SIGINT) -> None:
    """The run receives signum after this many steps, as from Ctrl-C."""
    real = Trainer.train_step

    def step(self, x, y, state):
        if self.progress.step + 1 >= steps:
            self.stop_signal = signum
        return real(self, x, y, state)

    monkeypatch.setattr(Trainer, "train_step", step)


def test_a_run_stopped_before_its_first_validation_samples_and_resumes(tmp_path, tiny_file, monkeypatch):
    stop_after(monkeypatch, 3)
    result = chargen.train(tiny_file, tmp_path / "run", max_steps=50, eval_every=1000, **OPTIONS)
    monkeypatch.undo()
    assert result.interrupted and result.steps == 3
    assert (tmp_path / "run" / "model.safetensors").is_file()
    assert chargen.load(tmp_path / "run").generate("the", length=5, seed=0).startswith("the")
    runner = CliRunner()
    for command in (["info", str(tmp_path / "run")], ["list", "--root", str(tmp_path)], ["sample", "-c", str(tmp_path / "run"), "-n", "5"]):
        outcome = runner.invoke(cli, command)
        assert outcome.exit_code == 0, outcome.output
    assert chargen.resume(tmp_path / "run", max_steps=6, quiet=True).steps == 6


def test_a_run_stopped_before_its_first_step_leaves_nothing(tmp_path, tiny_file, monkeypatch):
    stop_after(monkeypatch, 0)
    monkeypatch.setattr(Trainer, "train_step", lambda *a: pytest.fail("trained after the signal"))
    real_run = Trainer.run

    def signalled_run(self):
        self.stop_signal = signal.SIGTERM
        return real_run(self)

    monkeypatch.setattr(Trainer, "run", signalled_run)
    with pytest.raises(ChargenError, match="stopped by SIGTERM before the first step: nothing was saved"):
        chargen.train(tiny_file, tmp_path / "run", max_steps=50, **OPTIONS)
    assert not (tmp_path / "run").exists()


def test_a_second_run_in_the_same_folder_is_refused(tmp_path, tiny_file, trained):
    folder = tmp_path / "run"
    shutil.copytree(trained, folder)
    before = snapshot(folder)
    with store.hold(folder):  # a run in progress there
        with pytest.raises(ChargenError, match=f"{folder} is in use by another chargen run \\(process {os.getpid()}\\)"):
            chargen.train(tiny_file, folder, overwrite=True, max_steps=5, **OPTIONS)
        with pytest.raises(ChargenError, match="in use by another chargen run"):
            chargen.resume(folder, max_steps=100, quiet=True)
    assert snapshot(folder) == before
    assert chargen.resume(folder, max_steps=65, quiet=True).steps == 65  # free again once the first run ends


def refuse_disk(monkeypatch, tmp_path):
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=1000))


@pytest.mark.parametrize(
    "refusal, options, message",
    [
        ("no device", {"device": "cuda"}, "device cuda is not available"),
        ("no embeddings file", {"embeddings": "missing.vec"}, "no such embeddings file"),
        ("no room", {}, "MB free"),
        ("too large", {"hidden": 60_000}, "GB free"),
        ("no bf16", {"precision": "bf16"}, "precision bf16 needs a processor"),
    ],
)
def test_an_overwrite_that_is_refused_keeps_the_old_checkpoint(tmp_path, tiny_file, trained, monkeypatch, refusal, options, message):
    if refusal == "no room":
        refuse_disk(monkeypatch, tmp_path)
    if refusal == "no bf16":
        monkeypatch.setattr(model, "cpu_has_native_bf16", lambda: False)
    if refusal == "no device" and chargen.model.torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    folder = tmp_path / "run"
    shutil.copytree(trained, folder)
    before = snapshot(folder)
    with pytest.raises(ChargenError, match=message):
        chargen.train(tiny_file, folder, overwrite=True, max_steps=5, **{**OPTIONS, **options})
    assert snapshot(folder) == before


def test_a_refused_new_run_leaves_no_empty_folder(tmp_path, tiny_file, monkeypatch):
    refuse_disk(monkeypatch, tmp_path)
    with pytest.raises(ChargenError, match="MB free"):
        chargen.train(tiny_file, tmp_path / "new", max_steps=5, **OPTIONS)
    assert not (tmp_path / "new").exists()


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs, no handler sees it."""


def kill_at(monkeypatch, folder: Path, operation: str, when: int) -> None:
    """The process dies at the when-th file write or rename into folder."""
    calls = {"n": 0}
    real = {"write": store.write_temporary, "rename": os.replace}[operation]

    def dying(*args, **kwargs):
        where = Path(args[0]) if operation == "write" else Path(args[1]).parent
        if where.resolve() == folder.resolve():
            calls["n"] += 1
            if calls["n"] == when:
                raise Killed
        return real(*args, **kwargs)

    if operation == "write":
        monkeypatch.setattr(store, "write_temporary", dying)
    else:
        monkeypatch.setattr(store.os, "replace", dying)


@pytest.mark.parametrize("operation, when", [("write", n) for n in range(1, 6)] + [("rename", n) for n in range(1, 6)])
def test_a_kill_during_an_overwrites_first_save_leaves_one_whole_checkpoint(tmp_path, tiny_file, trained, monkeypatch, operation, when):
    folder = tmp_path / "run"
    shutil.copytree(trained, folder)
    old_hidden = chargen.load(folder).model.config.hidden
    kill_at(monkeypatch, folder, operation, when)
    with pytest.raises(Killed):
        chargen.train(tiny_file, folder, overwrite=True, max_steps=4, eval_every=2, **{**OPTIONS, "hidden": 24, "layers": 2})
    monkeypatch.undo()
    lm = chargen.load(folder)  # the old checkpoint or the new one, never a mix
    assert lm.model.config.hidden in (old_hidden, 24)
    config = json.loads(store.current(folder, "config.json").read_text())
    assert config["model"]["hidden"] == lm.model.config.hidden
    assert lm.generate("the", length=5, seed=0).startswith("the")
    step = config["progress"]["step"]
    assert chargen.resume(folder, max_steps=step + 2, quiet=True).steps == step + 2
    assert not [p.name for p in folder.iterdir() if p.name.endswith(".tmp") or p.name == store.JOURNAL]


def test_a_full_disk_during_a_resumed_save_changes_nothing(tmp_path, trained, monkeypatch):
    folder = tmp_path / "run"
    shutil.copytree(trained, folder)
    before = snapshot(folder)
    calls = {"n": 0}
    real = store.write_temporary

    def fill_up(*args):
        calls["n"] += 1
        if calls["n"] == 2:  # the disk fills up in the middle of a save: one new file is written
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(*args)

    monkeypatch.setattr(store, "write_temporary", fill_up)
    with pytest.raises(ChargenError, match="No space left on device.*the previous one is kept"):
        chargen.resume(folder, max_steps=80, quiet=True)
    monkeypatch.undo()
    assert snapshot(folder) == before
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]
    assert chargen.resume(folder, max_steps=62, quiet=True).steps == 62


def test_a_read_only_folder_is_refused_before_training(tmp_path, tiny_file, trained, monkeypatch):
    """Write permission is what the kernel says, and root may write anywhere: the refusal is simulated."""
    folder = tmp_path / "run"
    shutil.copytree(trained, folder)
    real = store.write_temporary

    def read_only(where, name, data):
        if Path(where) == folder:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
        return real(where, name, data)

    monkeypatch.setattr(store, "write_temporary", read_only)
    monkeypatch.setattr(Trainer, "train_step", lambda *a: pytest.fail("trained into a folder it cannot save to"))
    with pytest.raises(ChargenError, match=f"cannot write to {folder} \\(Permission denied\\)"):
        chargen.resume(folder, max_steps=100, quiet=True)
    with pytest.raises(ChargenError, match=f"cannot write to {folder} \\(Permission denied\\)"):
        chargen.train(tiny_file, folder, overwrite=True, max_steps=5, **OPTIONS)


def test_a_cut_metrics_line_and_stale_temporary_files_are_cleaned_up(tmp_path, trained, capsys):
    folder = tmp_path / "run"
    shutil.copytree(trained, folder)
    with open(folder / "metrics.jsonl", "a") as f:
        f.write('{"step": 70, "chars": 12')  # a kill in the middle of an append, by an older chargen
    (folder / ".config.json.abc123.tmp").write_text("{")
    (folder / ".resume.safetensors.def456.tmp").write_bytes(b"\0" * 10)
    result = chargen.resume(folder, max_steps=80, quiet=True)
    assert result.steps == 80
    assert "metrics.jsonl line 4 is cut short; it is dropped" in capsys.readouterr().err
    steps = [json.loads(line)["step"] for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert steps == [20, 40, 60, 80]
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_the_corpus_is_recorded_where_it_is(tmp_path, tiny_file, monkeypatch):
    monkeypatch.chdir(tiny_file.parent)
    chargen.train(tiny_file.name, tmp_path / "run", max_steps=10, eval_every=5, **OPTIONS)
    monkeypatch.chdir("/")
    recorded = json.loads((tmp_path / "run" / "config.json").read_text())["corpus"]["files"][0]["path"]
    assert recorded == str(tiny_file.resolve())
    assert chargen.resume(tmp_path / "run", max_steps=12, quiet=True).steps == 12
    assert chargen.evaluate(tmp_path / "run").characters > 0


def test_patience_zero_never_stops(tmp_path, tiny_file):
    result = chargen.train(tiny_file, tmp_path / "run", max_steps=8, eval_every=1, patience=0, **{**OPTIONS, "lr": 1e-30})
    assert result.steps == 8 and "max-steps" in result.stopped_because


def test_a_loss_that_breaks_before_any_save_says_nothing_was_saved(tmp_path, tiny_file, monkeypatch):
    monkeypatch.setattr(Trainer, "train_step", lambda self, x, y, state: (float("nan"), state))
    with pytest.raises(ChargenError, match="the loss became nan at step 1.*\\(nothing was saved\\)"):
        chargen.train(tiny_file, tmp_path / "run", max_steps=5, **OPTIONS)
    assert not (tmp_path / "run").exists()


def test_bf16_is_refused_in_one_line_where_the_processor_lacks_it(tmp_path, tiny_file, monkeypatch):
    monkeypatch.setattr(model, "cpu_has_native_bf16", lambda: False)
    outcome = CliRunner().invoke(cli, ["train", str(tiny_file), "--out", str(tmp_path / "run"), "--precision", "bf16", "--max-steps", "2"])
    assert outcome.exit_code == 2
    assert "precision bf16 needs a processor that computes bf16 natively" in outcome.output
    assert not (tmp_path / "run").exists()
    assert model.resolve_precision("auto") == "fp32"


@needs_native_bf16
def test_a_bf16_run_saves_its_lanes_and_resumes(tmp_path, tiny_file):
    """Under bf16 autocast the lanes' state is bf16: the resume file keeps it so."""
    chargen.train(tiny_file, tmp_path / "run", max_steps=6, eval_every=3, **{**OPTIONS, "precision": "bf16"})
    from safetensors import safe_open

    with safe_open(str(tmp_path / "run" / "resume.safetensors"), framework="pt") as f:
        assert f.get_slice("lanes.0").get_dtype() == "BF16"
    assert chargen.resume(tmp_path / "run", max_steps=9, quiet=True).steps == 9


def test_a_config_json_with_a_bad_entry_is_named_as_such_not_as_bad_json(tmp_path, trained):
    from chargen.settings import read_options

    config = json.loads((trained / "config.json").read_text())
    del config["training"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ChargenError, match="lacks its 'training' entry") as caught:
        read_options(tmp_path / "config.json", {"hidden"})
    assert "not valid JSON" not in str(caught.value)
    config = json.loads((trained / "config.json").read_text())
    config["embeddings"] = {"path": "vectors.txt"}  # no "frozen": `train --config` would read it
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ChargenError, match="the embeddings entry's frozen must be bool"):
        read_options(tmp_path / "config.json", {"hidden"})


def test_resume_without_a_folder_is_an_option_error():
    with pytest.raises(OptionError, match="folder must be a path, not None"):
        chargen.resume(None)


def test_memory_that_cannot_be_read_refuses_nothing(monkeypatch):
    import builtins
    import sys

    real_open = builtins.open
    monkeypatch.setattr(builtins, "open", lambda path, *a, **k: (_ for _ in ()).throw(OSError("no /proc")) if path == "/proc/meminfo" else real_open(path, *a, **k))
    monkeypatch.setattr(model.os, "sysconf", lambda name: (_ for _ in ()).throw(ValueError(name)))  # macOS has no SC_AVPHYS_PAGES
    assert model.available_memory() == sys.maxsize
