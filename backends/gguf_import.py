"""GGUF -> safetensors, one tensor at a time, in the precision the user chose (bf16 by default).

transformers can load a GGUF file (``from_pretrained(gguf_file=...)``), but that builds the whole
model in memory before it can be saved. Here the file is read through gguf's memory-mapped
``GGUFReader``; each tensor is dequantised (``gguf.dequantize``), given transformers' own
name mapping and layout fix-ups (``transformers.modeling_gguf_pytorch_utils``: the same
``TensorProcessor`` that ``from_pretrained`` uses, e.g. Llama's q/k un-permute, Gemma's ``norm - 1``),
cast to the target dtype and appended to the output file. Peak memory is about one tensor in fp32
plus its cast copy, not the model (measured in the README's model-store section).

The output is a single ``model.safetensors`` (safetensors format: 8-byte little-endian header length,
a JSON header of ``{name: {dtype, shape, data_offsets}}``, then the raw little-endian data). Tensor
data is streamed to a side file first and the header is written in front of it at the end, since the
offsets are known only after every tensor is converted.
"""

from __future__ import annotations

import gc
import json
import shutil
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from backends.errors import UserInputError
from backends.model_store_info import DEFAULT_DTYPE, DTYPES


class SafetensorsStreamWriter:
    """Write tensors one by one into a safetensors file without holding them all in memory.

    ``add(name, tensor)`` appends a tensor's bytes to ``<path>.data``; ``close()`` writes the header
    and the data into ``path`` and removes the side file. Shapes are lists of ints, dtypes the
    safetensors names (``BF16``, ``F16``, ``F32``).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._data_path = self.path.with_name(self.path.name + ".data")
        self._data: BinaryIO = open(self._data_path, "wb")  # noqa: SIM115 (closed in close())
        self._header: dict[str, Any] = {}
        self._offset = 0

    def add(self, name: str, tensor: Any) -> None:
        """Append a CPU torch tensor (any dtype in ``DTYPES``) under ``name``."""
        import torch

        names = {torch.bfloat16: "BF16", torch.float16: "F16", torch.float32: "F32"}
        if name in self._header:
            raise ValueError(f"tensor {name!r} written twice")
        raw = tensor.contiguous().view(torch.uint8).numpy() if tensor.numel() else b""
        self._data.write(memoryview(raw))
        size = tensor.numel() * tensor.element_size()
        self._header[name] = {
            "dtype": names[tensor.dtype],
            "shape": list(tensor.shape),
            "data_offsets": [self._offset, self._offset + size],
        }
        self._offset += size

    def close(self, metadata: dict[str, str] | None = None) -> None:
        """Write ``path`` (header, then the data) and remove the side file."""
        self._data.close()
        header = dict(self._header)
        if metadata:
            header["__metadata__"] = metadata
        blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
        blob += b" " * (-len(blob) % 8)  # data starts 8-byte aligned, as the reference writer does
        with open(self.path, "wb") as out, open(self._data_path, "rb") as data:
            out.write(struct.pack("<Q", len(blob)))
            out.write(blob)
            shutil.copyfileobj(data, out, 16 * 1024 * 1024)
        self._data_path.unlink()


_CHUNK_ROWS = 4096


def _dequantize_in_rows(tensor: Any, dequantize: Callable[..., Any], np: Any) -> Any:
    """``gguf.dequantize`` of a whole tensor, done 4096 rows at a time into one preallocated fp32
    array: the dequantiser's temporaries are several times its output, which for a large embedding
    (Gemma 3: 262,144 x 640) would otherwise cost gigabytes."""
    data = tensor.data
    if data.ndim < 2 or data.shape[0] <= _CHUNK_ROWS:
        return dequantize(data, tensor.tensor_type)
    first = dequantize(data[:_CHUNK_ROWS], tensor.tensor_type)
    out = np.empty((data.shape[0], *first.shape[1:]), dtype=np.float32)
    out[:_CHUNK_ROWS] = first
    for start in range(_CHUNK_ROWS, data.shape[0], _CHUNK_ROWS):
        out[start : start + _CHUNK_ROWS] = dequantize(data[start : start + _CHUNK_ROWS], tensor.tensor_type)
    return out


def convert_gguf(
    src: Path, out: Path, dtype: str = DEFAULT_DTYPE, progress: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Write ``src`` (a GGUF file) as an HF folder in ``out``: config.json, tokenizer files and
    ``model.safetensors`` in ``dtype`` (``bf16`` | ``f16`` | ``fp32``).

    Returns ``{"tensors": n, "chat_template": bool}``. Raises UserInputError when the file is not a
    GGUF transformers understands (unknown architecture, truncated file) or a tensor has no place
    in the model.
    """
    import numpy as np
    import torch
    from gguf import GGUFReader, dequantize
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig
    from transformers.modeling_gguf_pytorch_utils import (
        TENSOR_PROCESSORS,
        TensorProcessor,
        get_gguf_hf_weights_map,
        read_field,
    )

    from backends.models import fix_config_for_mlx

    def say(message: str) -> None:
        if progress is not None:
            progress(message)

    if dtype not in DTYPES:
        raise UserInputError(f"unknown import precision {dtype!r}", field="dtype", hint="bf16, f16 or fp32")
    target = {"bf16": torch.bfloat16, "f16": torch.float16, "fp32": torch.float32}[dtype]
    try:
        # Config and tokenizer first: each parses the whole GGUF metadata (for a 262k-token
        # vocabulary that is ~1 GB of Python objects), freed before any weight is touched.
        safe = {"local_files_only": True, "trust_remote_code": False}  # no download, no model code
        config = AutoConfig.from_pretrained(src.parent, gguf_file=src.name, **safe)
        tokenizer = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name, **safe)
        has_template = bool(getattr(tokenizer, "chat_template", None))
        tokenizer.save_pretrained(out)
        del tokenizer
        gc.collect()
        reader = GGUFReader(src)
    except Exception as exc:  # gguf/transformers raise ValueError, KeyError, OSError... for bad files
        raise UserInputError(f"cannot read this GGUF file: {exc}", file=src) from None
    architecture = read_field(reader, "general.architecture")[0]
    reader.fields.clear()  # the metadata again (vocabulary...); the tensors are memory-mapped views
    gc.collect()
    with torch.device("meta"):  # the module tree only, for the name mapping: no memory for weights
        skeleton = AutoModelForCausalLM.from_config(config, trust_remote_code=False)
    config.architectures = [type(skeleton).__name__]
    config.dtype = target
    config.save_pretrained(out)
    GenerationConfig.from_model_config(config).save_pretrained(out)
    fix_config_for_mlx(out / "config.json")  # also drops a quantization_config marker
    processor = TENSOR_PROCESSORS.get(architecture, TensorProcessor)(config=config.to_dict())
    mapping = get_gguf_hf_weights_map(skeleton, processor)
    expected = set(skeleton.state_dict())
    del skeleton

    writer = SafetensorsStreamWriter(out / "model.safetensors")
    side: dict[str, Any] = {"tensors": {}}  # processors that merge experts collect them here
    written: set[str] = set()
    total = len(reader.tensors)
    step = max(1, total // 20)
    try:
        for i, tensor in enumerate(reader.tensors, 1):
            weights = _dequantize_in_rows(tensor, dequantize, np)
            result = processor.process(
                weights=weights, name=tensor.name, tensor_key_mapping=mapping, parsed_parameters=side
            )
            if result.name is not None and result.name in mapping:
                name = mapping[result.name]
                weights = np.ascontiguousarray(result.weights)
                if not weights.flags.writeable:  # a view of the memory-mapped file (F32/F16 tensors)
                    weights = weights.copy()
                writer.add(name, torch.from_numpy(weights).to(target))
                written.add(name)
            if i % step == 0 or i == total:
                say(f"Converting tensors to {dtype}: {100 * i // total}% ({i}/{total})")
        for name, merged in side["tensors"].items():
            writer.add(name, torch.as_tensor(merged).to(target))
            written.add(name)
    finally:
        writer.close(metadata={"format": "pt"})
    tied = getattr(config.get_text_config(), "tie_word_embeddings", False)
    missing = sorted(n for n in expected - written if not (tied and n.endswith("lm_head.weight")))
    if missing:
        raise UserInputError(
            f"the GGUF file lacks {len(missing)} of the model's tensors (first: {missing[0]})", file=src
        )
    return {"tensors": len(written), "chat_template": has_template}
