"""A run: train() and resume() check everything first, hold the checkpoint folder, choose the model, and keep the
folder current while the loop (loop.py) trains."""
from __future__ import annotations

import contextlib
import copy
import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import asdict, fields, replace
from pathlib import Path

import torch

from . import checkpoint, distributed, recipe, resume_file
from . import folder as store
from .config import CorpusOptions, TrainConfig
from .corpus import Corpus
from .embeddings import initialise_embedding
from .finetune import extend_model, fine_tuning_base, freeze_lower_layers
from .inputs import open_corpus, reopen
from .sources import names_of
from .errors import ChargenError, OptionError
from .loop import Keeper, Trainer, TrainResult
from .model import LanguageModel, ModelConfig, check_fits_in_memory
from .planning import plan_model
from .progress import TrainingDisplay
from .record import CorpusRecord, RunRecord
from .runtime import Runtime
from .sample import Sampler
from .state import State
from .vocabulary import RECORD_FILES, Vocab

TRAINING_BYTES_PER_PARAMETER = 4 * 8  # weights, gradients, two AdamW moments, best weights, and the copies a save makes
SMALLER = ": choose a smaller --hidden, --layers or --embedding-dim"
PACE_WARNING = 2.0  # a run this many times faster or slower than the recipe's probe says so


class RunFolder(Keeper):
    """Keeps a run's checkpoint folder current: each save replaces its files together (folder.py)."""

    def __init__(
        self, folder: Path, corpus: CorpusRecord, recipe: dict | None, embeddings: dict | None, vocab: Vocab, tensorboard: bool, init_from: dict | None = None
    ):
        self.folder, self.corpus, self.recipe, self.embeddings, self.init_from = folder, corpus, recipe, embeddings, init_from
        self.vocabulary_entry, self.vocabulary_files = vocab.to_record()
        self.tensorboard = open_tensorboard(folder) if tensorboard and distributed.is_writer_process() else None
        self.metrics: list[dict] = []  # every evaluation of the run, rewritten whole with each save
        self.saved = False  # the first save of a run replaces whatever the folder held, all of it
        self.saved_weights = False  # model.safetensors holds this run's weights
        self.pace_checked = False

    def resumed(self, step: int) -> None:
        """The folder holds this run already, up to step: later evaluations will be made again."""
        self.metrics = [r for r in checkpoint.read_metrics(self.folder) if r["step"] <= step]
        self.saved = True
        self.saved_weights = store.current(self.folder, checkpoint.WEIGHTS).is_file()
        self.pace_checked = True  # the recipe's probe was another session's

    def evaluated(self, trainer: Trainer, lanes: State | None, record: dict, improved: bool) -> None:
        self.metrics.append(record)
        self.commit(trainer, lanes, improved)
        self.check_pace(trainer)
        if self.tensorboard is not None:
            self.tensorboard.add_scalars("bits per character", {"train": record["train_bpc"], "validation": record["val_bpc"]}, record["chars"])
            self.tensorboard.flush()

    def stopped(self, trainer: Trainer, lanes: State | None) -> None:
        self.commit(trainer, lanes, weights=False)  # the weights too while the folder has none of this run's

    def stepped(self, trainer: Trainer) -> None:
        """A few lines from the model as it is now, every --sample-every steps, so the user watches it learn."""
        every, step = trainer.config.sample_every, trainer.progress.step
        if not every or step % every:
            return
        on_cpu = trainer.device.type == "cpu"
        model = trainer.model if on_cpu else copy.deepcopy(trainer.model).cpu()  # the sampler's steps run on the CPU
        text = Sampler(model, trainer.corpus.vocab, precision="fp32").generate(length=200, temperature=0.8, seed=step)
        trainer.model.train()
        trainer.display.log(f"sample at step {step}:\n{text.strip()}\n")

    def commit(self, trainer: Trainer, lanes: State | None, weights: bool) -> None:
        """Replace the checkpoint's files together; a failed write (a full disk, a folder gone) stops the run with the previous checkpoint whole."""
        files = {
            checkpoint.RESUME: resume_file.resume_bytes(trainer.model, trainer.optimizer, lanes, asdict(trainer.progress)),
            checkpoint.CONFIG: checkpoint.json_bytes(self.record(trainer).to_json()),
            checkpoint.METRICS: checkpoint.metrics_bytes(self.metrics),
        }
        if weights or not self.saved_weights:
            files[checkpoint.WEIGHTS] = checkpoint.weights_bytes(trainer.model)
        remove: tuple[str, ...] = ()
        if not self.saved:  # a run's first save replaces an --overwrite'n checkpoint whole
            files.update(self.vocabulary_files)
            remove = tuple(name for name in RECORD_FILES if name not in files)
        try:
            store.commit(self.folder, files, remove)
        except OSError as e:
            kept = "the previous one is kept" if self.saved else "nothing was saved"
            raise ChargenError(f"could not save the checkpoint in {self.folder} ({e.strerror or e}); {kept}") from None
        self.saved = self.saved_weights = True

    def check_pace(self, trainer: Trainer) -> None:
        """Say so, once, when the run trains far faster or slower than the speed the recipe chose its model by."""
        probe = (self.recipe or {}).get("tokens_per_s")
        p = trainer.progress
        if self.pace_checked or not probe or p.elapsed_s <= p.validation_s:
            return
        self.pace_checked = True
        pace = p.tokens / (p.elapsed_s - p.validation_s)
        if 1 / PACE_WARNING <= pace / probe <= PACE_WARNING:
            return
        trainer.display.log(
            f"note: this run trains at {pace:,.0f} tokens/s, {pace / probe:.1f}× the {probe:,.0f} the recipe measured before it chose "
            f"{trainer.model.config.hidden} units: the machine's load changed. To repeat a run exactly, pin its model "
            f"(chargen train --config {self.folder / checkpoint.CONFIG} ...)"
        )

    def record(self, trainer: Trainer) -> RunRecord:
        """What config.json says of the run as it stands."""
        p = trainer.progress
        progress = {"step": p.step, "chars": trainer.chars, "elapsed_s": round(p.elapsed_s, 3), "best_val_bpc": p.best_val, "last_val_bpc": p.last_val}
        return RunRecord(
            trainer.model.config, self.vocabulary_entry, trainer.config, trainer.precision, self.corpus, progress, self.recipe, self.embeddings, self.init_from
        )


def open_tensorboard(folder: Path):
    """A SummaryWriter into folder/tensorboard; tensorboard is an optional extra."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise OptionError("--tensorboard needs tensorboard: pip install 'chargen[tensorboard]'") from None
    return SummaryWriter(log_dir=str(folder / "tensorboard"))


def check_out(folder: Path, overwrite: bool) -> None:
    """Refuse to replace an existing checkpoint unless asked; nothing is replaced until the new run's first save."""
    if folder.exists() and not folder.is_dir():
        raise ChargenError(f"--out {folder} is a file, not a folder")
    if checkpoint.is_checkpoint(folder) and not overwrite:
        raise ChargenError(
            f"{folder} already holds a checkpoint: continue it with --resume {folder}, choose another --out, "
            "or pass --overwrite to replace it"
        )


@contextlib.contextmanager
def run_folder(folder: Path) -> Iterator[None]:
    """Create the checkpoint folder if need be and hold it for the run (folder.hold); a folder the run
    created and never saved into is removed again, so a refused or failed run leaves nothing behind."""
    created = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ChargenError(f"cannot write to {folder} ({e.strerror})") from None
    try:
        with store.hold(folder) if distributed.is_writer_process() else contextlib.nullcontext():
            yield
    finally:
        if created and distributed.is_writer_process() and not checkpoint.is_checkpoint(folder):
            (folder / store.LOCK).unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                folder.rmdir()


MODEL_OPTIONS = {f.name for f in fields(ModelConfig)} - {"vocab_size"}
LIMITS = {"max_steps", "max_epochs", "max_time", "patience", "device", "threads", "sample_every", "tensorboard"}  # what a resumed run may change


def check_space(folder: Path, model_config: ModelConfig) -> None:
    """Refuse to start a run whose checkpoint cannot fit on the disk."""
    # best weights and resume file (weights and two Adam moments), and the new set of both while a save replaces them
    needed = model_config.num_parameters() * 4 * (1 + 3) * 2
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise ChargenError(f"{folder} has {free / 1e6:,.1f} MB free; this model's checkpoint needs about {needed / 1e6:,.1f} MB")


def check_length(data: Corpus, config: TrainConfig, path: str) -> None:
    needed = config.batch_size * config.seq_len + 1
    if len(data.train) < needed:
        raise ChargenError(
            f"the training part of {path} has {len(data.train)} tokens, fewer than one batch window "
            f"(batch-size {config.batch_size} × seq-len {config.seq_len} + 1 = {needed}): "
            "use a longer text or a smaller --batch-size or --seq-len"
        )


def describe(trainer: Trainer, path: str, keeper: RunFolder) -> None:
    """The run in a line or two, as the trainer has set it up."""
    data, config, group = trainer.corpus, trainer.config, trainer.group
    unit = "characters" if data.vocab.kind == "char" else f"{data.vocab.kind} tokens"
    if group.world > 1:
        trainer.display.log(f"{group.world} processes: each trains {config.batch_size // group.world} of the {config.batch_size} lanes")
    trainer.display.log(
        f"{path}: {len(data.train):,} training and {len(data.val):,} validation {unit}, "
        f"{len(data.vocab):,} distinct; model {trainer.model.num_parameters():,} parameters; "
        f"precision {trainer.precision} on {trainer.device}; checkpoint in {keeper.folder}"
    )
    if keeper.recipe:
        r = keeper.recipe
        trainer.display.log(
            f"recipe: {r['hidden']} units per layer, dropout {r['dropout']:g}, learning rate {r['lr']:g}, {config.batch_size} lanes, "
            f"{'skip connections' if trainer.model.skip else 'no skip connections'} ({r['why']})"
        )


def train(
    corpus: str | Path | Sequence[str | Path],
    out: str | Path | None = None,
    *,
    overwrite: bool = False,
    embeddings: str | Path | None = None,
    freeze_embeddings: bool = False,
    init_from: str | Path | None = None,
    freeze: int | None = None,
    skip_non_text: bool = False,
    cache: bool = True,
    quiet: bool = False,
    **options,
) -> TrainResult:
    """Train a model on text files (a file, several, folders, globs) or a prepared folder, and write its checkpoint
    folder; options are fields of ModelConfig, TrainConfig and CorpusOptions, and those the recipe would choose
    (recipe.Choices) are kept as given. init_from starts from a trained checkpoint (fine-tuning), freeze keeps its
    lowest layers fixed."""
    unknown = set(options) - MODEL_OPTIONS - {f.name for f in fields(TrainConfig)} - {f.name for f in fields(CorpusOptions)}
    if unknown:
        raise OptionError(f"unknown option{'s' * (len(unknown) > 1)} {', '.join(sorted(unknown))}")
    names = names_of(corpus)
    for name in names or [None]:
        check_paths(corpus=name)
    check_paths(out=out, embeddings=embeddings, init_from=init_from, optional=("out", "embeddings", "init_from"))
    if freeze is not None and init_from is None:
        raise OptionError("freeze keeps layers of a trained model fixed: it needs --init-from CHECKPOINT")
    base = None if init_from is None else fine_tuning_base(Path(init_from), options, embeddings, freeze)  # its architecture becomes options
    chosen = recipe.Choices.take(options)  # what is not given, the recipe decides
    given = options | chosen.given()
    model_config = ModelConfig(vocab_size=1, **{k: v for k, v in given.items() if k in MODEL_OPTIONS})
    corpus_given = {f.name for f in fields(CorpusOptions)} & set(given)
    corpus_options = CorpusOptions.take(given)
    config = TrainConfig(**{k: v for k, v in given.items() if k not in MODEL_OPTIONS})
    if freeze_embeddings and embeddings is None:
        raise OptionError("freeze-embeddings needs --embeddings FILE: there is nothing pre-trained to keep fixed")
    if embeddings is not None and model_config.input != "embedding":
        raise OptionError("embeddings needs --input embedding")
    Runtime.resolve(config.device, config.precision)  # a device or precision this machine lacks is refused before any work
    data, corpus_record = open_corpus(names, corpus_options, corpus_given, cache, skip_non_text, None if base is None else base.vocab)
    check_length(data, config, corpus_record.name)
    folder = Path(out) if out is not None else checkpoint.DEFAULT_ROOT / default_name(names, corpus_record)
    check_out(folder, overwrite)
    model_config = replace(model_config, vocab_size=len(data.vocab))
    if chosen.hidden is not None:
        check_fits_in_memory(model_config, TRAINING_BYTES_PER_PARAMETER, "train", SMALLER)
    with run_folder(folder):
        try:
            runtime = Runtime.resolve(config.device, config.precision, config.threads, join=True)
            plan = None if chosen.complete else plan_model(model_config, data, config, runtime, chosen)
            if plan is not None:
                model_config = replace(model_config, hidden=plan.hidden, dropout=plan.dropout, skip_connections=plan.skip_connections)
                config = replace(config, lr=plan.lr, batch_size=plan.lanes)
            check_fits_in_memory(model_config, TRAINING_BYTES_PER_PARAMETER, "train", SMALLER)
            check_space(folder, model_config)
            torch.manual_seed(config.seed)
            model = LanguageModel(model_config) if base is None else extend_model(base.model, model_config)
            if base is not None:
                base.freeze(model, freeze)
            vectors = None
            if embeddings is not None:
                covered = initialise_embedding(model.embedding, embeddings, data.vocab.token_texts, freeze_embeddings)
                vectors = {"path": str(Path(embeddings).resolve()), "covered": covered, "frozen": freeze_embeddings}
            started = None if base is None else base.record(freeze, len(data.vocab))
            keeper = RunFolder(folder, corpus_record, None if plan is None else plan.to_dict(), vectors, data.vocab, config.tensorboard, started)
            trainer = Trainer(model, data, config, runtime, TrainingDisplay(quiet=quiet), keeper)
            if vectors is not None:
                frozen = " (frozen)" if freeze_embeddings else ""
                trainer.display.log(f"{embeddings}: vectors for {covered:,} of {len(data.vocab):,} vocabulary tokens{frozen}")
            if base is not None:
                trainer.display.log(base.describe(len(data.vocab), freeze))
            describe(trainer, corpus_record.name, keeper)
            result = trainer.run()
            distributed.shutdown(finished=True)
            return replace(result, folder=folder)
        finally:
            distributed.shutdown()


def default_name(names: list, corpus: CorpusRecord) -> str:
    """The checkpoint folder's name when --out is not given: the folder or prepared folder named, else the first file's stem."""
    if corpus.prepared is not None:
        return Path(corpus.prepared).name
    first = Path(names[0])
    return first.resolve().name if len(names) == 1 and first.is_dir() else Path(corpus.files[0].path).stem


def check_paths(optional: tuple[str, ...] = (), **paths: object) -> None:
    """The Python API's paths of the kinds the command line gives them (None only where a path is optional)."""
    for name, value in paths.items():
        if not (isinstance(value, (str, os.PathLike)) or name in optional and value is None):
            raise OptionError(f"{name} must be a path, not {value!r}")


def resume(
    folder: str | Path, corpus: str | Path | Sequence[str | Path] | None = None, *, cache: bool = True, quiet: bool = False, **limits
) -> TrainResult:
    """Continue a saved run exactly where it stopped; only its limits (max_steps, max_time, ...) may change.

    The limits count the whole run, earlier sessions included. corpus names the texts (or the prepared folder) if they have moved.
    """
    changed = set(limits) - LIMITS
    if changed:
        raise OptionError(f"a resumed run keeps its options; only {', '.join(sorted(LIMITS))} can change, not {', '.join(sorted(changed))}")
    moved = None if corpus is None else names_of(corpus)
    check_paths(folder=folder)
    for name in moved or ():
        check_paths(corpus=name)
    folder = Path(folder)
    ckpt = checkpoint.read(folder)
    with store.hold(folder) if distributed.is_writer_process() else contextlib.nullcontext():
        saved = resume_file.read_resume(folder, ckpt)
        record = ckpt.record
        data, corpus_record = reopen(record.corpus, moved, cache, ckpt.vocab if record.init_from else None)
        if data.vocab != ckpt.vocab:
            raise ChargenError(f"{corpus_record.name} no longer gives the vocabulary in {folder}: the run cannot continue on it")
        config = TrainConfig(**{**asdict(record.training), **limits})
        runtime = Runtime.resolve(config.device, config.precision, config.threads, join=True)
        model = ckpt.model
        if record.frozen_embeddings:
            model.embedding.weight.requires_grad_(False)
        if record.init_from and record.init_from.get("frozen_layers"):
            freeze_lower_layers(model, record.init_from["frozen_layers"], record.init_from.get("frozen_embedding", True))
        try:
            keeper = RunFolder(folder, corpus_record, record.recipe, record.embeddings, data.vocab, config.tensorboard, record.init_from)
            trainer = Trainer(model, data, config, runtime, TrainingDisplay(quiet=quiet), keeper)
            trainer.restore(saved)
            keeper.resumed(trainer.progress.step)
            describe(trainer, corpus_record.name, keeper)
            trainer.display.log(f"resuming at step {trainer.progress.step:,} ({trainer.progress.elapsed_s:.0f} s trained so far)")
            result = trainer.run()
            distributed.shutdown(finished=True)
            return replace(result, folder=folder)
        finally:
            distributed.shutdown()
