"""Fine-tuning: a trained model carried over to a new text, its vocabulary grown by the tokens the text adds.

Every old token keeps its id, so the old weights keep their meaning; the tokens the new text adds take the
ids after them, and their rows start from what the old rows hold on average (docs of `extend_model`).
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from . import checkpoint
from .corpus import file_sha256
from .errors import ChargenError, OptionError
from .folder import current
from .model import LanguageModel, ModelConfig
from .tokenizer import UNK, TokenVocabulary
from .vocabulary import Vocab, Vocabulary


def extend_vocabulary(old: Vocab, new: Vocab) -> Vocab:
    """The old vocabulary with the tokens of new that it lacks appended, so every old token keeps its id.

    Characters are appended sorted by code point, words in the order of their ids in new. A BPE vocabulary
    is returned unchanged: its byte-level tokens encode any text with no unknown token, and new merges would
    split the old text differently from how the model learnt it.
    """
    if old.kind != new.kind:
        raise ChargenError(f"the model's vocabulary is {old.kind} and the new text's {new.kind}: fine-tuning cannot switch to another tokenizer kind")
    if old.kind == "char":
        known = set(old.chars)
        added = sorted((c for c in new.chars if c not in known), key=ord)
        return Vocabulary(old.chars + added) if added else old
    if old.kind == "word":
        return _extend_words(old, new)
    return old


def _extend_words(old: TokenVocabulary, new: TokenVocabulary) -> TokenVocabulary:
    """The old tokenizer.json with the new words added to its inline vocabulary, read back through chargen's own checks."""
    data = json.loads(old.to_json())
    vocab = data["model"]["vocab"]
    added = [word for word, _ in sorted(new.tokenizer.get_vocab().items(), key=lambda item: item[1]) if word not in vocab and word != UNK]
    if not added:
        return old
    for word in added:
        vocab[word] = len(vocab)
    return TokenVocabulary.from_json("word", json.dumps(data, ensure_ascii=False))


def _mean(part: torch.Tensor, dim: int) -> torch.Tensor:
    """A new token's weights: the old tokens' average, a token the model knows nothing particular about."""
    return part.mean(dim=dim, keepdim=True)


def _lowest(part: torch.Tensor, dim: int) -> torch.Tensor:
    """A new token's output bias: the lowest old one, so it starts as rare as the rarest token the model knows."""
    return part.amin(dim=dim, keepdim=True)


def _vocab_axes(model: LanguageModel) -> dict[str, tuple[int, Callable[[torch.Tensor, int], torch.Tensor]]]:
    """Each parameter with one slice per token: the axis of the tokens, and how a new token's slice starts."""
    axes = {"head.weight": (0, _mean), "head.bias": (0, _lowest)}
    if model.embedding is not None:
        axes["embedding.weight"] = (0, _mean)
    else:  # a one-hot input picks the first layer's input-weight column of its token
        first = model.input_weight()
        axes[next(name for name, p in model.named_parameters() if p is first)] = (1, _mean)
    return axes


def _grow(tensor: torch.Tensor, dim: int, start: Callable[[torch.Tensor, int], torch.Tensor], new_size: int) -> torch.Tensor:
    """The tensor with slices for new tokens appended along dim, each started from the old slices."""
    extra = new_size - tensor.shape[dim]
    if not extra:
        return tensor.clone()
    shape = list(tensor.shape)
    shape[dim] = extra
    return torch.cat([tensor, start(tensor, dim).expand(shape)], dim=dim)


def extend_model(model: LanguageModel, config: ModelConfig) -> LanguageModel:
    """A copy of the model as config says (a vocabulary as large or larger, the dropout of the new run; the same
    architecture), the old tokens' ids 0 .. old size - 1 with exactly their weights.

    A new token's input row (for one-hot input: the first layer's input column) and output row are the means of
    the old ones, and its output bias the lowest old bias: it starts rare, as a token never seen is. Tied weights
    stay one matrix. The copy keeps the model's device, dtype, train or eval mode and which parameters train;
    the global random numbers are left as they were.
    """
    old_size, new_size = model.config.vocab_size, config.vocab_size
    if dataclasses.replace(config, vocab_size=old_size, dropout=model.config.dropout) != model.config:
        raise ChargenError("a fine-tuned model keeps its architecture: only its vocabulary and dropout may change")
    if new_size < old_size:
        raise ChargenError(f"a fine-tuned vocabulary cannot shrink: {new_size:,} tokens is fewer than the model's {old_size:,}")
    like = next(model.parameters())
    with torch.random.fork_rng(devices=[]):  # its fresh weights are all overwritten: a seeded run draws the same numbers after
        extended = LanguageModel(config).to(device=like.device, dtype=like.dtype)
    axes = _vocab_axes(model)
    with torch.no_grad():
        weights = {name: _grow(t, *axes[name], new_size) if name in axes else t for name, t in model.state_dict().items()}
        extended.load_state_dict(weights)  # copies into the new model's tensors: a tied matrix stays shared
    trains = dict(model.named_parameters())
    for name, parameter in extended.named_parameters():
        parameter.requires_grad_(trains[name].requires_grad)
    return extended.train(model.training)


def check_freeze(layers: object, most: int) -> None:
    if isinstance(layers, bool) or not isinstance(layers, int) or not 1 <= layers <= most:
        raise OptionError(f"freeze must be between 1 and {most} (the model's layers), not {layers!r}")


def freeze_lower_layers(model: LanguageModel, layers: int, embedding: bool = True) -> None:
    """Keep the input embedding (unless embedding is False) and the lowest `layers` recurrent layers fixed: only the
    layers above and the head learn.

    layers may be every layer, which leaves only the head to learn. A fine-tune whose text adds tokens keeps the
    embedding learning, since its new rows start as the old rows' mean and would stay there. With tied weights
    the embedding is also the output layer, which must learn the new text's tokens: it stays trainable too.
    """
    check_freeze(layers, model.config.layers)
    if embedding and model.embedding is not None and not model.config.tie_weights:
        model.embedding.weight.requires_grad_(False)
    for layer in range(layers):
        for weights in model.layer_parameters(layer):
            weights.requires_grad_(False)


ARCHITECTURE = ("cell", "layers", "hidden", "input", "embedding_dim", "nonlinearity", "tie_weights", "skip_connections")


@dataclass
class Base:
    """The trained checkpoint a fine-tune starts from: its model and vocabulary, and the sha256 of its weights."""

    folder: Path
    model: LanguageModel
    vocab: Vocab
    weights_sha256: str

    def record(self, frozen_layers: int | None, vocab_size: int) -> dict:
        """What config.json keeps of where the run started, and which of its weights stay fixed."""
        frozen = {"frozen_layers": frozen_layers or 0, "frozen_embedding": bool(frozen_layers) and not self.adds_tokens(vocab_size)}
        return {"path": str(self.folder.resolve()), "sha256": self.weights_sha256, **frozen}

    def adds_tokens(self, vocab_size: int) -> bool:
        return vocab_size > len(self.vocab)

    def freeze(self, model: LanguageModel, layers: int | None) -> None:
        """--freeze on the extended model: a one-hot input's new columns are the first layer's, which cannot freeze."""
        if not layers:
            return
        if self.adds_tokens(model.config.vocab_size) and model.embedding is None:
            raise OptionError(
                "freeze would keep the first layer fixed, and with --input onehot it holds the inputs of the tokens the new "
                "text adds, which would never learn: fine-tune without --freeze"
            )
        freeze_lower_layers(model, layers, embedding=not self.adds_tokens(model.config.vocab_size))

    def describe(self, vocab_size: int, frozen_layers: int | None) -> str:
        added = vocab_size - len(self.vocab)
        frozen = f"; its lowest {frozen_layers} layer{'s' * (frozen_layers > 1)} frozen" if frozen_layers else ""
        return f"fine-tuning {self.folder}: its {self.model.num_parameters():,} weights, and {added:,} tokens the new text adds to its {len(self.vocab):,}{frozen}"


def fine_tuning_base(folder: Path, options: dict, embeddings: object, freeze: int | None) -> Base:
    """The checkpoint at folder, read before anything is trained; options take its architecture and tokenizer kind,
    and any given that differ are refused in one line."""
    if embeddings is not None:
        raise OptionError("--init-from starts the whole model from a checkpoint; --embeddings starts only a new model's embeddings: give one")
    ckpt = checkpoint.read(folder)
    config, kind = ckpt.model.config, ckpt.vocab.kind
    for name in ARCHITECTURE:
        if name in options and options[name] is not None and options[name] != getattr(config, name):
            raise OptionError(f"--init-from keeps the checkpoint's model: its {name.replace('_', '-')} is {getattr(config, name)!r}, not {options[name]!r}")
        options[name] = getattr(config, name)
    if options.setdefault("tokenizer", kind) != kind:
        raise ChargenError(f"{folder} holds a {kind} model: fine-tuning keeps its tokenizer, not --tokenizer {options['tokenizer']}")
    if freeze is not None:
        check_freeze(freeze, config.layers)  # now: the run freezes its extended copy
    return Base(folder, ckpt.model, ckpt.vocab, file_sha256(current(folder, checkpoint.WEIGHTS)))
