"""The one run-config schema shared by both backends, the CLI and the GUI.

A config is loaded from YAML (``load_config``), overridden by ``--set key=value`` pairs
(``apply_overrides``), optionally on top of a named preset (``PRESETS``), and validated by pydantic.
Every model forbids unknown keys, so a misspelt option is an error naming the key, never silently
ignored. ``RunConfig.model_dump(mode="json")`` is the fully resolved config written to a run folder.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from backends.errors import UsageError, UserInputError

DEFAULT_MODEL = "SmolLM2-135M-Instruct"

DataFormat = Literal[
    "auto", "messages", "sharegpt", "alpaca", "prompt_completion", "text", "preference", "feedback"
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Strict):
    """Where the training data is and how to read it."""

    train_file: Path | None = Field(
        None,
        description="Training data file (JSONL, JSON, CSV, Parquet, .txt/.md) or a folder of .txt/.md "
        "files. Empty: the built-in sample data.",
    )
    validation_file: Path | None = Field(
        None, description="Separate validation file; overrides the fraction."
    )
    validation_fraction: float = Field(
        0.05,
        ge=0.0,
        lt=1.0,
        description="Share of training rows held out for validation when no file is given (0: off).",
    )
    validation_max_rows: int = Field(
        200,
        ge=0,
        description="Most validation rows (0: no limit). A larger held-out share is cut to this many "
        "(the rest stay in training); a validation file is sampled down to it. Keeps each "
        "validation pass short on a CPU.",
    )
    format: DataFormat = Field("auto", description="Dataset format; 'auto' detects it from the first row.")
    strict: bool = Field(
        False, description="Any invalid row is an error (default: invalid rows are dropped and listed)."
    )
    train_on: Literal["completion", "all", "last_turn"] = Field(
        "completion",
        description="Which tokens carry loss: every assistant turn (completion-only), all tokens, or the last assistant turn.",
    )
    chat_template: Literal["model", "chatml"] = Field(
        "model", description="Chat template: the model's own, or ChatML for a model that has none."
    )
    packing: bool = Field(
        False, description="Pack several short rows into one sequence (attention kept within each row)."
    )
    pack_text: bool = Field(
        True,
        description="Plain text (format text, for continued pre-training): documents joined with EOS "
        "between them and cut into full sequences of training.max_seq_length, so no token is lost "
        "(off: each row is one sequence, cut at max_seq_length).",
    )
    system_prompt: str | None = Field(None, description="System prompt added to rows that have none.")
    replay: float = Field(
        0.0,
        ge=0.0,
        le=0.5,
        description="Share of training examples that are general ones mixed in against forgetting "
        "(e.g. 0.1; 0: off). From data.replay_file, else TuneDesk's own.",
    )
    replay_file: Path | None = Field(
        None, description="General examples for data.replay (any training format); empty: TuneDesk's own."
    )
    literal_special_tokens: Literal["text", "control"] = Field(
        "text",
        description="Special-token strings typed inside messages (a literal <|im_end|>): tokenised as "
        "plain text (default), or as the control tokens (opt-in).",
    )
    columns: dict[str, str] | None = Field(
        None,
        description="Column mapping {role: your column}, e.g. {prompt: question, completion: answer} "
        "(roles: the fields of the formats: prompt, completion, system, chosen, rejected, messages, "
        "conversations, text, label, instruction, input, output, ...). Empty: detected.",
    )

    @field_validator("columns", mode="before")
    @classmethod
    def _columns(cls, value: Any) -> Any:
        from backends.data.columns import parse_columns

        if value is None or value == "" or value == {}:
            return None
        try:
            return parse_columns(value if isinstance(value, str | dict) else str(value))
        except UserInputError as exc:
            raise ValueError(exc.reason) from None


class LoraConfig(_Strict):
    """LoRA adapter settings (Hu et al. 2021; peft's LoraConfig names)."""

    rank: int = Field(16, ge=1, le=1024, description="LoRA rank r: inner dimension of the low-rank update.")
    alpha: float = Field(32.0, gt=0, le=4096, description="LoRA alpha: the update is scaled by alpha / rank.")
    dropout: float = Field(0.05, ge=0.0, lt=1.0, description="Dropout on the LoRA input during training.")
    target_modules: Literal["attention", "all-linear"] | list[str] = Field(
        "all-linear",
        description="Layers that get adapters: preset 'attention', 'all-linear', or a list of module names.",
    )
    use_dora: bool = Field(False, description="Weight-decomposed LoRA (DoRA, Liu et al. 2024).")
    quantize: Literal[4, 8] | None = Field(
        None,
        description="Load the frozen base model quantised to 4 or 8 bits (QLoRA, Dettmers et al. 2023); "
        "the adapter stays full precision. Torch: bitsandbytes (4: nf4 with double quantisation); "
        "MLX: mlx's own affine quantisation. Empty: the base in the compute precision.",
    )

    @field_validator("target_modules")
    @classmethod
    def _non_empty(cls, value: Any) -> Any:
        if isinstance(value, list) and (not value or not all(isinstance(v, str) and v for v in value)):
            raise ValueError("must be 'attention', 'all-linear' or a non-empty list of module names")
        return value


class DPOConfig(_Strict):
    """Direct Preference Optimization (Rafailov et al. 2023) settings, used when method is 'dpo'."""

    beta: float = Field(
        0.1, gt=0, le=10, description="DPO beta: strength of the KL penalty to the reference model."
    )
    label_smoothing: float = Field(
        0.0, ge=0, lt=0.5, description="Conservative DPO label smoothing (0: plain sigmoid loss)."
    )
    precompute_ref_log_probs: bool = Field(
        False, description="Compute the reference model's log-probabilities once before training."
    )


class ORPOConfig(_Strict):
    """Odds Ratio Preference Optimization (Hong et al. 2024) settings, used when method is 'orpo'."""

    beta: float = Field(
        0.1, gt=0, le=10, description="ORPO lambda: weight of the odds-ratio term beside the NLL loss."
    )


class KTOConfig(_Strict):
    """Kahneman-Tversky Optimization (Ethayarajh et al. 2024) settings, used when method is 'kto'."""

    beta: float = Field(0.1, gt=0, le=10, description="KTO beta: strength of the pull to the reference.")
    desirable_weight: float = Field(
        1.0, gt=0, le=100, description="Loss weight of desirable (thumbs-up) answers."
    )
    undesirable_weight: float = Field(
        1.0, gt=0, le=100, description="Loss weight of undesirable (thumbs-down) answers."
    )


class RewardConfig(_Strict):
    """One GRPO reward function (backends/training/rewards.py describes each type)."""

    type: Literal["matches_answer", "valid_json", "regex", "length", "python"] = Field(
        description="matches_answer, valid_json, regex (needs pattern), length (min/max characters) "
        "or python (your file's function)."
    )
    weight: float = Field(1.0, description="Weight of this reward in the total.")
    name: str | None = Field(None, description="Name in charts and events (default: the type).")
    pattern: str | None = Field(None, description="regex: the regular expression to find.")
    min: int | None = Field(None, ge=0, description="length: fewest characters.")
    max: int | None = Field(None, ge=0, description="length: most characters.")
    file: Path | None = Field(None, description="python: the .py file, run only because it is named here.")
    function: str = Field("reward", description="python: the function's name in the file.")

    @model_validator(mode="after")
    def _fields(self) -> RewardConfig:
        if self.type == "regex" and not self.pattern:
            raise ValueError("pattern: a regex reward needs a pattern")
        if self.type == "python" and self.file is None:
            raise ValueError("file: a python reward needs the file holding the function")
        if self.type == "length" and self.min is None and self.max is None:
            raise ValueError("a length reward needs min and/or max")
        return self


class GRPOConfig(_Strict):
    """Group Relative Policy Optimization (Shao et al. 2024) settings, used when method is 'grpo'."""

    num_generations: int = Field(4, ge=2, le=64, description="Completions sampled per prompt (the group).")
    max_completion_length: int = Field(64, ge=1, le=8192, description="Most tokens per completion.")
    temperature: float = Field(1.0, gt=0, le=5, description="Sampling temperature of the completions.")
    beta: float = Field(0.04, ge=0, le=10, description="Weight of the KL penalty to the base model (0: off).")
    epsilon: float = Field(0.2, gt=0, lt=1, description="Clipping range of the probability ratio.")
    kl_bias_correction: bool = Field(
        False,
        description="Weight the KL term by the probability ratio (unbiased KL gradient; TRL's default).",
    )
    loss_type: Literal["grpo", "dapo"] = Field(
        "grpo", description="grpo: mean per completion, then over completions; dapo: mean over all tokens."
    )
    rewards: list[RewardConfig] = Field(
        default_factory=lambda: [RewardConfig(type="matches_answer")],
        description="Reward functions; the total reward is their weighted sum.",
    )


class TrainingConfig(_Strict):
    """Optimisation settings; step counts are optimizer steps (after gradient accumulation)."""

    learning_rate: float = Field(2e-4, gt=0, le=1e3, description="Peak learning rate of AdamW.")
    lr_scheduler: Literal["cosine", "linear", "constant"] = Field(
        "cosine", description="Learning-rate schedule after warmup."
    )
    warmup_ratio: float = Field(0.03, ge=0, lt=1, description="Share of steps with linear warmup from 0.")
    epochs: float = Field(
        1.0, gt=0, le=1000, description="Passes over the training data (ignored when max_steps is set)."
    )
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimizer steps.")
    batch_size: int = Field(4, ge=1, le=4096, description="Rows per micro-batch.")
    gradient_accumulation_steps: int = Field(
        1, ge=1, le=4096, description="Micro-batches per optimizer step."
    )
    max_seq_length: int = Field(
        1024, ge=8, le=1_048_576, description="Tokens per row; longer rows are cut from the right."
    )
    seed: int = Field(42, ge=0, description="Seed of LoRA init, data order and dropout.")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="Compute precision; 'auto' picks bf16 where the device supports it well."
    )
    padding_free: bool = Field(
        True,
        description="PyTorch: each micro-batch runs as one row of its examples back to back, without "
        "padding (positions restart per example, attention stays within it). Same loss; off: "
        "rows padded to the longest.",
    )
    gradient_checkpointing: bool | None = Field(
        None,
        description="Recompute activations in backward to save memory. Empty: on when the memory "
        "plan (`tunedesk plan`) says memory is tight, else off.",
    )
    memory_check: bool = Field(
        True,
        description="Refuse to start when the memory plan (`tunedesk plan`) says the run does not "
        "fit in the free memory (false: try anyway).",
    )
    optimizer: Literal["adamw", "adamw_8bit", "paged_adamw_8bit"] = Field(
        "adamw",
        description="AdamW, or bitsandbytes' 8-bit / paged 8-bit AdamW (CUDA only: about a quarter "
        "of the optimizer memory).",
    )
    max_grad_norm: float = Field(1.0, ge=0, description="Gradient clipping norm (0: off).")
    distributed: Literal["ddp", "fsdp"] = Field(
        "ddp",
        description="With --nproc (several GPUs): 'ddp' keeps the whole model on every GPU; 'fsdp' "
        "shards the weights over them, for a model one GPU cannot hold (PyTorch, SFT).",
    )
    fsdp_cpu_offload: bool = Field(
        False,
        description="With distributed: fsdp, keep the weight shards in CPU memory between uses "
        "(less GPU memory, slower; CUDA only).",
    )
    weight_decay: float = Field(0.0, ge=0, lt=1, description="AdamW weight decay.")
    eval_every: int = Field(50, ge=0, description="Validation every N steps (0: only at the end).")
    save_every: int = Field(
        100, ge=0, description="Checkpoint every N steps (0: only on stop and at the end)."
    )
    keep_checkpoints: int = Field(2, ge=1, le=1000, description="Newest checkpoints kept.")


class ForgettingConfig(_Strict):
    """The forgetting check (``tunedesk forgetting``): drift from the base model on general probes."""

    at_end: Literal["auto", True, False] = Field(
        "auto",
        description="Quick check after training; 'auto': when it costs at most ~10% of the run's time.",
    )
    at_eval: bool = Field(False, description="Quick check at every evaluation too (charted as drift).")
    probes: int = Field(12, ge=1, le=100, description="Probes of the quick check (the command uses all 100).")


class OutputConfig(_Strict):
    """Where the run folder goes."""

    runs_dir: Path | None = Field(None, description="Folder of run folders (default: <TUNEDESK_HOME>/runs).")
    run_name: str | None = Field(
        None, description="Run folder name (default: model, method and a timestamp)."
    )

    @field_validator("run_name")
    @classmethod
    def _safe_name(cls, value: str | None) -> str | None:
        if value is not None and (not value.strip() or "/" in value or "\\" in value or value in {".", ".."}):
            raise ValueError("must be a plain folder name (no slashes)")
        return value


class RunConfig(_Strict):
    """One training run: model, data, method, LoRA, training and backend choice."""

    preset: Literal["quick-test", "balanced", "quality"] | None = Field(
        None, description="Preset whose values fill in what the file does not set."
    )
    model: str = Field(DEFAULT_MODEL, description="Imported model name, or a path to an HF folder.")
    method: Literal["sft", "dpo", "orpo", "kto", "grpo"] = Field(
        "sft",
        description="Supervised fine-tuning, preference tuning (DPO, ORPO: pairs), KTO (thumbs up/down) "
        "or GRPO (rewards).",
    )
    backend: Literal["auto", "torch", "mlx"] = Field(
        "auto", description="Training backend; 'auto' follows `tunedesk hardware`."
    )
    data: DataConfig = Field(default_factory=DataConfig)
    lora: LoraConfig = Field(default_factory=LoraConfig)
    dpo: DPOConfig = Field(default_factory=DPOConfig)
    orpo: ORPOConfig = Field(default_factory=ORPOConfig)
    kto: KTOConfig = Field(default_factory=KTOConfig)
    grpo: GRPOConfig = Field(default_factory=GRPOConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    forgetting: ForgettingConfig = Field(default_factory=ForgettingConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)

    @model_validator(mode="after")
    def _check(self) -> RunConfig:
        if self.model.strip() == "":
            raise ValueError("model: must name a model")
        if self.method in ("dpo", "orpo", "kto", "grpo") and self.data.packing:
            raise ValueError(
                f"data.packing: {self.method.upper()} trains on whole answers with their prompts, "
                "which are not packed"
            )
        if self.method == "kto" and self.training.batch_size < 2:
            raise ValueError(
                "training.batch_size: KTO estimates its KL term from mismatched rows of a batch, "
                "so it needs at least 2 rows per batch"
            )
        if self.method != "sft" and self.data.replay:
            raise ValueError(
                f"data.replay: general examples are mixed into SFT only, not into {self.method.upper()} data"
            )
        return self


PRESETS: dict[str, dict[str, Any]] = {
    # A few steps to see that everything works end to end.
    "quick-test": {
        "lora": {"rank": 8, "alpha": 16},
        "training": {
            "max_steps": 20,
            "max_seq_length": 512,
            "eval_every": 10,
            "save_every": 10,
            "warmup_ratio": 0.0,
        },
    },
    # The default: one epoch over the data, LoRA on every linear layer.
    "balanced": {
        "lora": {"rank": 16, "alpha": 32, "target_modules": "all-linear"},
        "training": {"epochs": 1, "learning_rate": 2e-4, "max_seq_length": 1024},
    },
    # More capacity and passes, lower learning rate.
    "quality": {
        "lora": {"rank": 32, "alpha": 64, "target_modules": "all-linear"},
        "training": {"epochs": 3, "learning_rate": 1e-4, "max_seq_length": 2048, "lr_scheduler": "cosine"},
    },
}


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _yaml_lines(text: str) -> dict[tuple[str, ...], int]:
    """Map each key path of a YAML mapping to its 1-based line, for error messages."""
    lines: dict[tuple[str, ...], int] = {}
    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return lines

    def walk(node: yaml.Node, prefix: tuple[str, ...]) -> None:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                path = prefix + (str(key_node.value),)
                lines[path] = key_node.start_mark.line + 1
                walk(value_node, path)

    if root is not None:
        walk(root, ())
    return lines


def _validate(
    raw: dict[str, Any],
    source: str | None,
    lines: dict[tuple[str, ...], int],
    set_items: dict[tuple[str, ...], str] | None = None,
) -> RunConfig:
    """Validate ``raw``; an error names the file and line of the key, or the ``--set`` item
    (``set_items``: key path -> item) when the value came from the command line."""
    preset = raw.get("preset")
    if preset is not None:
        if preset not in PRESETS:
            raise UserInputError(
                f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}",
                file=source,
                line=lines.get(("preset",)),
                field="preset",
            )
        raw = _deep_merge(PRESETS[preset], raw)
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        # pydantic puts union member names into the location (e.g. 'list[str]'); drop such parts.
        loc = tuple(str(p) for p in err["loc"] if "[" not in str(p))
        key = ".".join(loc) or "config"
        if err["type"] == "extra_forbidden":
            msg = "unknown key (no such option)"
        else:
            got = err.get("input")
            msg = f"{err['msg']} (got {got!r})" if not isinstance(got, dict) else err["msg"]
        more = f"; and {len(exc.errors()) - 1} more problem(s)" if len(exc.errors()) > 1 else ""
        for n in range(len(loc), 0, -1):
            if set_items and loc[:n] in set_items:
                raise UserInputError(f"{msg}{more} (from --set {set_items[loc[:n]]})", field=key) from None
        line = None
        for n in range(len(loc), 0, -1):
            if loc[:n] in lines:
                line = lines[loc[:n]]
                break
        raise UserInputError(msg + more, file=source, line=line, field=key) from None


def parse_override(item: str) -> tuple[list[str], Any]:
    """Parse one ``key.sub=value`` override; the value is read as YAML (numbers, bools, lists).

    Raises UsageError (exit 2) for an item without ``=`` or with an empty key.
    """
    if "=" not in item:
        raise UsageError(f"--set {item!r}: expected KEY=VALUE, e.g. training.learning_rate=1e-4")
    key, _, text = item.partition("=")
    parts = [p for p in key.strip().split(".")]
    if not key.strip() or any(not p for p in parts):
        raise UsageError(f"--set {item!r}: empty key (expected KEY=VALUE)")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    if isinstance(value, str):
        # YAML 1.1 reads '1e-4' as a string; let pydantic see a number where one was meant.
        try:
            value = float(value) if any(c in value for c in "eE.") and not value.isalpha() else value
        except ValueError:
            pass
    return parts, value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of ``raw`` with ``--set key=value`` overrides applied (dotted keys)."""
    out = copy.deepcopy(raw)
    for item in overrides:
        parts, value = parse_override(item)
        node = out
        for part in parts[:-1]:
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            if not isinstance(nxt, dict):
                raise UserInputError(f"--set {item!r}: {part!r} is not a section", field=".".join(parts))
            node = nxt
        node[parts[-1]] = value
    return out


def load_config(
    path: str | Path | None = None, overrides: list[str] | None = None, *, preset: str | None = None
) -> RunConfig:
    """Load and validate a run config.

    ``path``: a YAML file (None: all defaults); ``overrides``: ``key=value`` strings applied after
    the file; ``preset``: a name from ``PRESETS`` used when the file names none.
    Raises UserInputError naming the file, line and key of the first problem.
    """
    raw: dict[str, Any] = {}
    source = None
    lines: dict[tuple[str, ...], int] = {}
    if path is not None:
        source = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8-sig")
        except FileNotFoundError:
            raise UserInputError("config file not found", file=source) from None
        except OSError as exc:
            raise UserInputError(f"cannot read config file: {exc.strerror}", file=source) from None
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            raise UserInputError(
                f"not valid YAML: {getattr(exc, 'problem', exc)}",
                file=source,
                line=mark.line + 1 if mark else None,
            ) from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise UserInputError("the config must be a mapping of keys to values", file=source, line=1)
        raw = loaded
        lines = _yaml_lines(text)
    if preset is not None and "preset" not in raw:
        raw = {**raw, "preset": preset}
    set_items: dict[tuple[str, ...], str] = {}
    if overrides:
        raw = apply_overrides(raw, overrides)
        set_items = {tuple(parse_override(item)[0]): item for item in overrides}
    return _validate(raw, source, lines, set_items)


def config_from_dict(raw: dict[str, Any], source: str | None = None) -> RunConfig:
    """Validate an in-memory config (e.g. from the GUI or a run folder's config.yaml)."""
    return _validate(copy.deepcopy(raw), source, {})


def dump_config(config: RunConfig) -> str:
    """The fully resolved config as YAML text (every default written out)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def field_docs(model: type[BaseModel] = RunConfig, prefix: str = "") -> list[dict[str, Any]]:
    """Describe every leaf field (dotted key, type annotation, default, bounds, description).

    The GUI builds its advanced-settings form from this, so a new config field appears there
    without GUI code. Each entry: ``key``, ``annotation`` (str), ``default``, ``description``,
    ``choices`` (list or None), ``ge``/``gt``/``le``/``lt`` (numbers or None).
    """
    import typing

    out: list[dict[str, Any]] = []
    for name, info in model.model_fields.items():
        key = f"{prefix}{name}"
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out.extend(field_docs(ann, key + "."))
            continue
        bounds: dict[str, Any] = {"ge": None, "gt": None, "le": None, "lt": None}
        for meta in info.metadata:
            for b in bounds:
                if hasattr(meta, b):
                    bounds[b] = getattr(meta, b)
        choices = None
        args = typing.get_args(ann)
        if typing.get_origin(ann) is Literal:
            choices = list(args)
        else:
            for a in args:
                if typing.get_origin(a) is Literal:
                    choices = list(typing.get_args(a))
        default = info.default if info.default_factory is None else info.default_factory()
        if isinstance(default, Path):
            default = str(default)
        out.append(
            {
                "key": key,
                "annotation": str(ann).replace("typing.", ""),
                "default": default,
                "description": info.description or "",
                "choices": choices,
                **bounds,
            }
        )
    return out
