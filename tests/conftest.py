from pathlib import Path

import pytest
import torch

import chargen
from chargen.model import cpu_has_native_bf16

SHARED = Path(__file__).resolve().parents[2] / "shared" / "corpora"

TINY_TEXT = "the quick brown fox jumps over the lazy dog.\n" * 40

# Small enough to train in a second or two on a CPU.
TINY_OPTIONS = dict(layers=1, hidden=48, embedding_dim=16, batch_size=4, seq_len=16, precision="fp32", lr=1e-2, dropout=0.0)


# bf16 paths run only where the processor computes bf16 natively; elsewhere chargen refuses them in one line
needs_native_bf16 = pytest.mark.skipif(not cpu_has_native_bf16(), reason="this processor has no native bf16 (AVX-512 BF16 or AMX)")


def shared_corpus(name: str) -> Path:
    path = SHARED / name
    if not path.is_file():
        pytest.skip(f"{path} is not here")
    return path


@pytest.fixture(autouse=True, scope="session")
def private_cache(tmp_path_factory):
    """Encoded corpora go to a temporary cache, not the user's ~/.cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture
def tiny_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.txt"
    path.write_text(TINY_TEXT, encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> Path:
    """A tiny checkpoint trained once for the whole session."""
    folder = tmp_path_factory.mktemp("ckpt")
    corpus = folder / "tiny.txt"
    corpus.write_text(TINY_TEXT, encoding="utf-8")
    chargen.train(corpus, folder / "model", max_steps=60, eval_every=20, quiet=True, **TINY_OPTIONS)
    return folder / "model"


@pytest.fixture
def one_thread():
    """Tiny models on one CPU thread: on a shared machine more threads only wait for each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
