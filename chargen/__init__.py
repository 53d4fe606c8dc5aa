"""chargen: character-level text generation with recurrent networks on PyTorch."""

from .version import __version__  # noqa: E402

from .corpus import Corpus, Vocabulary, read_text  # noqa: E402
from .errors import ChargenError, OptionError  # noqa: E402
from .evaluation import Report, evaluate  # noqa: E402
from .model import LanguageModel, ModelConfig  # noqa: E402
from .predict import WordPrediction  # noqa: E402
from .sample import Sampler, load  # noqa: E402
from .tokenizer import TokenVocabulary  # noqa: E402
from .config import CorpusOptions, TrainConfig  # noqa: E402
from .loop import Trainer, TrainResult  # noqa: E402
from .run import resume, train  # noqa: E402
from .prepared import prepare  # noqa: E402

__all__ = [
    "ChargenError", "OptionError", "Corpus", "Vocabulary", "TokenVocabulary", "read_text", "LanguageModel", "ModelConfig",
    "Sampler", "load", "WordPrediction", "Report", "evaluate", "CorpusOptions", "TrainConfig", "Trainer", "TrainResult", "train", "resume", "prepare",
]
