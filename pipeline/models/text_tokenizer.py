"""A model's tokenizer.json run by the Rust `tokenizers` library: no transformers, so no torch.

Why not transformers: version 5 imports torch as soon as it loads a tokenizer, and the tokenize
stage's actors must stay light. The parity reference, FlagEmbedding, runs on transformers 4, whose
fast tokenizers are the saved tokenizer.json plus a few settings from tokenizer_config.json; this
module applies the same ones:

- `truncation_side`, and the BOS and pad tokens (read as transformers reads them: tokenizer_config.json,
  or special_tokens_map.json over it for older saves without `added_tokens_decoder`);
- BERT-family classes write `do_lower_case` / `strip_accents` / `tokenize_chinese_chars` over the
  saved BertNormalizer, and every class writes `add_prefix_space` (default off) over a saved
  pre-tokenizer that has one;
- `model_input_names` (the file's, else the class's) say whether the tokenizer returns token type ids.

The truncation and padding saved in tokenizer.json are switched off: the pair tokenizers cut
sequences themselves. (transformers 5 rebuilds some classes from their vocabulary instead, e.g.
XLM-R without its saved normalizer, so on some texts its ids differ from FlagEmbedding's.)

A hub id (not a local directory) is fetched with `huggingface_hub`, tokenizer files only, and then
loaded the same way, so a hub id and its downloaded directory give the same ids. tokenizer.json is
data: no code from the model repository runs here, whatever `trust_remote_code` says.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tokenizers import Tokenizer, normalizers, pre_tokenizers

from pipeline.errors import ModelLoadError
from pipeline.models.hf_config import local_model_dir, read_json

# The files of a saved tokenizer: what a hub download fetches and `save_pretrained` copies.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "chat_template.jinja",
    "chat_template.json",
    "tokenizer.model",
    "sentencepiece.bpe.model",
    "spiece.model",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
)

# transformers 4's text tokenizer classes whose model_input_names lack token_type_ids (any other
# class returns them, as PreTrainedTokenizerFast does).
NO_TOKEN_TYPE_CLASSES = frozenset(
    {
        "BartTokenizer",
        "BarthezTokenizer",
        "BigBirdTokenizer",
        "BloomTokenizer",
        "CamembertTokenizer",
        "CodeGenTokenizer",
        "CodeLlamaTokenizer",
        "CohereTokenizer",
        "DistilBertTokenizer",
        "GPT2Tokenizer",
        "GPTNeoXTokenizer",
        "GemmaTokenizer",
        "LEDTokenizer",
        "LayoutXLMTokenizer",
        "LlamaTokenizer",
        "LongformerTokenizer",
        "LukeTokenizer",
        "MBart50Tokenizer",
        "MBartTokenizer",
        "MPNetTokenizer",
        "MT5Tokenizer",
        "MvpTokenizer",
        "OpenAIGPTTokenizer",
        "Qwen2Tokenizer",
        "RobertaTokenizer",
        "T5Tokenizer",
        "XLMRobertaTokenizer",
    }
)

# transformers 4's classes that write tokenizer_config.json's casing flags over a saved
# BertNormalizer (MPNet: not the Chinese-characters one).
BERT_NORMALIZER_CLASSES = frozenset(
    {
        "BertTokenizer",
        "ConvBertTokenizer",
        "DistilBertTokenizer",
        "ElectraTokenizer",
        "FunnelTokenizer",
        "LayoutLMTokenizer",
        "LayoutLMv2Tokenizer",
        "LxmertTokenizer",
        "MobileBertTokenizer",
        "MPNetTokenizer",
        "RoFormerTokenizer",
        "SplinterTokenizer",
        "SqueezeBertTokenizer",
    }
)
# tokenizer_config.json key -> (BertNormalizer field, transformers' default when the key is absent)
BERT_NORMALIZER_FLAGS: dict[str, tuple[str, Any]] = {
    "do_lower_case": ("lowercase", True),
    "strip_accents": ("strip_accents", None),
    "tokenize_chinese_chars": ("handle_chinese_chars", True),
}
PREFIX_SPACE_FLAG: dict[str, tuple[str, Any]] = {"add_prefix_space": ("add_prefix_space", False)}


@dataclass(frozen=True)
class TextTokenizer:
    """tokenizer.json with the settings the pair tokenizers need; loaded by `TextTokenizer.load`."""

    backend: Tokenizer  # truncation and padding off
    source: Path  # the directory the tokenizer files came from
    truncation_side: Literal["left", "right"]
    bos_token_id: int | None
    pad_token_id: int | None
    has_token_type_ids: bool  # "token_type_ids" in transformers' model_input_names

    @classmethod
    def load(cls, name_or_path: str) -> TextTokenizer:
        """The tokenizer of a local model directory, or of a hub id (its tokenizer files fetched)."""
        directory = local_model_dir(name_or_path) or _fetch_tokenizer_files(name_or_path)
        path = directory / "tokenizer.json"
        if not path.is_file():
            raise ModelLoadError(
                f"--model {name_or_path!r} has no tokenizer.json; offline-rerank needs a tokenizer.json "
                "(fast tokenizer): save one into the model directory with transformers' "
                "AutoTokenizer.from_pretrained(...).save_pretrained(directory)"
            )
        try:
            backend = Tokenizer.from_file(str(path))
        except Exception as e:  # the Rust side raises a bare Exception for a malformed file
            raise ModelLoadError(f"cannot read the tokenizer {str(path)!r}: {e}") from e
        backend.no_truncation()
        backend.no_padding()
        config = _optional_json(directory / "tokenizer_config.json")
        special = _optional_json(directory / "special_tokens_map.json")
        _apply_class_settings(backend, config)
        side = config.get("truncation_side", "right")
        if side not in ("left", "right"):
            raise ModelLoadError(
                f"{str(directory / 'tokenizer_config.json')!r} has truncation_side={side!r}; "
                "it must be 'left' or 'right'"
            )
        names = config.get("model_input_names")
        if names is None:
            names = [] if _class_name(config) in NO_TOKEN_TYPE_CLASSES else ["token_type_ids"]
        return cls(
            backend=backend,
            source=directory,
            truncation_side=side,
            bos_token_id=_special_token_id(backend, "bos_token", config, special),
            pad_token_id=_special_token_id(backend, "pad_token", config, special),
            has_token_type_ids="token_type_ids" in names,
        )

    def ids(self, texts: list[str], max_length: int | None = None) -> list[list[int]]:
        """Token ids of each text, without special tokens, cut to `max_length` on `truncation_side`."""
        encoded = [e.ids for e in self.backend.encode_batch_fast(texts, add_special_tokens=False)]
        if max_length is None:
            return encoded
        if self.truncation_side == "left":
            return [x[len(x) - max_length :] if len(x) > max_length else x for x in encoded]
        return [x[:max_length] for x in encoded]

    def save_pretrained(self, directory: str) -> None:
        """Copies the tokenizer files as they were saved, so the copy loads exactly like the source."""
        target = Path(directory)
        target.mkdir(parents=True, exist_ok=True)
        for name in TOKENIZER_FILES:
            source = self.source / name
            if source.is_file() and (target / name).resolve() != source.resolve():
                shutil.copyfile(source, target / name)


def _fetch_tokenizer_files(repo_id: str) -> Path:
    """A hub id's tokenizer files in the local hub cache (which HF_HUB_OFFLINE and HF_TOKEN govern)."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, allow_patterns=list(TOKENIZER_FILES)))
    except Exception as e:  # invalid id, unknown repo, offline without a cached copy, ...
        raise ModelLoadError(
            f"cannot load the tokenizer of --model {repo_id!r}: {e}; pass a local model directory or "
            "a hub id this machine can reach"
        ) from e


def _optional_json(path: Path) -> dict[str, Any]:
    return read_json(path) if path.is_file() else {}


def _class_name(config: dict[str, Any]) -> str:
    """The tokenizer class saved in tokenizer_config.json, slow and fast spelled alike."""
    return str(config.get("tokenizer_class") or "").removesuffix("Fast")


def _special_token_id(
    backend: Tokenizer, key: str, config: dict[str, Any], special: dict[str, Any]
) -> int | None:
    """The id of a special token (e.g. `bos_token`), from the file transformers takes it from."""
    value = config.get(key) if "added_tokens_decoder" in config else special.get(key, config.get(key))
    content = value.get("content") if isinstance(value, dict) else value
    return None if content is None else backend.token_to_id(str(content))


def _apply_class_settings(backend: Tokenizer, config: dict[str, Any]) -> None:
    """What transformers 4's tokenizer classes write over tokenizer.json from tokenizer_config.json."""
    name = _class_name(config)
    if name in BERT_NORMALIZER_CLASSES and backend.normalizer is not None:
        flags = dict(BERT_NORMALIZER_FLAGS)
        if name == "MPNetTokenizer":
            del flags["tokenize_chinese_chars"]
        backend.normalizer = _with_flags(backend.normalizer, normalizers, flags, config)
    if backend.pre_tokenizer is not None:
        backend.pre_tokenizer = _with_flags(backend.pre_tokenizer, pre_tokenizers, PREFIX_SPACE_FLAG, config)


def _with_flags(
    component: Any, module: Any, flags: dict[str, tuple[str, Any]], config: dict[str, Any]
) -> Any:
    """`component` rebuilt with the configured flags if any differs, as transformers 4 does; a
    component without those fields (a Sequence, a custom one) is kept as it is."""
    try:
        state = json.loads(component.__getstate__())
    except Exception:  # not serializable: transformers 4 leaves it alone too
        return component
    wanted = {field: config.get(key, default) for key, (field, default) in flags.items()}
    if all(state.get(field, value) == value for field, value in wanted.items()):
        return component
    try:
        return getattr(module, state.pop("type"))(**(state | wanted))
    except Exception:  # a flag value the component refuses: keep the saved one
        return component
