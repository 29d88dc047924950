"""Every run setting in everyday words, for the settings form: a short name a newcomer reads, and
one line that says what it does. The form shows the field's own term beside the name (for those
who know it) and keeps the schema's description (``backends.config``) in the tooltip.

tests/test_desktop_layout.py checks that every field of the schema has its words here.
"""

from __future__ import annotations

# dotted config key -> (everyday name, one-line explanation)
PLAIN: dict[str, tuple[str, str]] = {
    "preset": ("Preset", "A ready set of values: quick test, balanced or quality."),
    "model": ("Model", "The model you teach."),
    "method": (
        "How to teach",
        "From examples (SFT), from good-vs-bad pairs (DPO, ORPO), thumbs (KTO), scores (GRPO).",
    ),
    "backend": ("Engine", "The software that trains: automatic picks the best one for this computer."),
    "data.train_file": ("Training data", "The file with your examples."),
    "data.validation_file": (
        "Test data file",
        "Examples kept apart to check progress; empty: some rows are set aside.",
    ),
    "data.validation_fraction": (
        "Share set aside for testing",
        "Part of your rows not trained on, used to check progress (0.1 = 10 %).",
    ),
    "data.validation_max_rows": ("Most test rows", "Cap on the rows set aside for testing (0: no cap)."),
    "data.format": ("Data layout", "How the rows are written; automatic recognises it from the first row."),
    "data.strict": (
        "Stop at the first bad row",
        "On: any unusable row stops the run. Off: such rows are skipped and listed.",
    ),
    "data.train_on": (
        "What it learns from",
        "Only the answers (usual), the whole text, or only the last answer.",
    ),
    "data.chat_template": (
        "Conversation format",
        "The model's own way of marking who speaks, or a common one (ChatML).",
    ),
    "data.packing": (
        "Pack short rows together",
        "Faster on many short rows; each row still only sees itself.",
    ),
    "data.system_prompt": (
        "Standing instruction",
        "Text put before each conversation that has none (system prompt).",
    ),
    "data.columns": (
        "Which columns to use",
        "Tells which column of your file is the question, the answer, and so on.",
    ),
    "data.pack_text": (
        "Join plain text",
        "Plain text is joined and cut into full pieces, so no text is lost.",
    ),
    "data.replay": (
        "Mix in general examples",
        "Share of general examples that help it keep what it knew (0: none).",
    ),
    "data.replay_file": (
        "General examples file",
        "Your own general examples for the mix; empty: TuneDesk's.",
    ),
    "data.literal_special_tokens": (
        "Control text inside messages",
        "Whether text like <|im_end|> in your data stays plain text.",
    ),
    "lora.rank": ("Adapter size", "How much the adapter can learn: larger learns more, needs more memory."),
    "lora.alpha": (
        "Adapter strength",
        "How strongly the adapter changes the model (usually twice the size).",
    ),
    "lora.dropout": ("Adapter noise", "Random switch-offs while training that reduce learning by heart."),
    "lora.target_modules": ("Where adapters go", "Only the attention layers, or every layer (all-linear)."),
    "lora.use_dora": (
        "Direction-and-size adapter",
        "A variant that sometimes learns better, a little slower.",
    ),
    "lora.quantize": (
        "Compress the base model",
        "Keep the model in 4 or 8 bits to save memory; a little slower.",
    ),
    "dpo.beta": ("Stay close to the original", "Higher keeps answers nearer to the model before tuning."),
    "dpo.label_smoothing": ("Trust in the pairs", "Above 0 when some of your good/bad pairs may be wrong."),
    "dpo.precompute_ref_log_probs": (
        "Score the original once",
        "Saves memory during training; takes a pass first.",
    ),
    "orpo.beta": ("Weight of preferences", "How much the good-vs-bad pairs count beside plain examples."),
    "kto.beta": ("Stay close to the original", "Higher keeps answers nearer to the model before tuning."),
    "kto.desirable_weight": ("Weight of thumbs up", "How much the liked answers count."),
    "kto.undesirable_weight": ("Weight of thumbs down", "How much the disliked answers count."),
    "grpo.num_generations": (
        "Answers per question",
        "How many answers are tried and scored for each prompt.",
    ),
    "grpo.max_completion_length": ("Longest answer tried", "Most text pieces (tokens) per tried answer."),
    "grpo.temperature": ("Variety of tried answers", "Higher tries more different answers."),
    "grpo.beta": (
        "Stay close to the original",
        "Higher keeps answers nearer to the model before tuning (0: off).",
    ),
    "grpo.epsilon": ("Step limit", "How far one update may move the model; smaller is steadier."),
    "grpo.kl_bias_correction": ("Exact closeness measure", "A more exact way to keep it near the original."),
    "grpo.loss_type": ("How answers are averaged", "Per answer (grpo) or over every piece of text (dapo)."),
    "grpo.rewards": ("Scoring rules", "How each tried answer is scored (set in the config file)."),
    "training.learning_rate": (
        "Learning speed",
        "How big each learning step is: too high breaks it, too low learns little.",
    ),
    "training.lr_scheduler": ("Speed over time", "How the learning speed falls during the run."),
    "training.warmup_ratio": ("Gentle start", "Share of the run spent speeding up from zero."),
    "training.epochs": ("Passes over your data", "How many times it reads all your examples (epochs)."),
    "training.max_steps": ("Stop after steps", "A fixed number of learning steps instead of whole passes."),
    "training.batch_size": (
        "Rows at once",
        "Examples read together per step: more is faster but needs more memory.",
    ),
    "training.gradient_accumulation_steps": (
        "Steps combined",
        "Combine several small batches into one step to save memory.",
    ),
    "training.max_seq_length": (
        "Longest example",
        "Examples longer than this many text pieces (tokens) are cut.",
    ),
    "training.seed": ("Random seed", "The same number gives the same run again."),
    "training.precision": ("Number format", "How precisely it computes; automatic picks a fast, safe one."),
    "training.gradient_checkpointing": (
        "Save memory by recomputing",
        "Uses less memory, about a third slower.",
    ),
    "training.memory_check": ("Check memory before starting", "Warns before a run that would not fit."),
    "training.optimizer": ("Update method", "How the model is updated; the 8-bit ones need less memory."),
    "training.max_grad_norm": (
        "Limit on each step",
        "Caps a sudden big step that could break training (0: off).",
    ),
    "training.weight_decay": ("Keep changes small", "Gently pulls the adapter towards zero (0: off)."),
    "training.distributed": (
        "Sharing work between GPUs",
        "With several GPUs: a copy on each (ddp), or the model split across them (fsdp).",
    ),
    "training.fsdp_cpu_offload": (
        "Park model pieces in RAM",
        "With the model split across GPUs: keep unused pieces in main memory.",
    ),
    "training.padding_free": (
        "Skip padding",
        "Runs examples back to back without filler: same result, faster.",
    ),
    "training.eval_every": (
        "Check progress every",
        "Steps between checks on the set-aside rows (0: only at the end).",
    ),
    "training.save_every": ("Save every", "Steps between saved checkpoints you can resume from."),
    "training.keep_checkpoints": ("Checkpoints kept", "How many recent saves to keep on disk."),
    "forgetting.at_end": ("Check what it forgot", "At the end, measure how much general ability changed."),
    "forgetting.at_eval": (
        "Check forgetting during the run",
        "Also measure it at each progress check (slower).",
    ),
    "forgetting.probes": ("Questions in the quick check", "How many general questions the quick check asks."),
    "output.runs_dir": ("Runs folder", "Where run folders are saved."),
    "output.run_name": ("Run name", "The run folder's name; empty: model, method and time."),
}

# Choices shown in words, the term in brackets (the value stored stays the term).
CHOICE_WORDS: dict[str, dict[object, str]] = {
    "method": {
        "sft": "From examples (SFT)",
        "dpo": "Good vs bad answers (DPO)",
        "orpo": "Good vs bad answers, one pass (ORPO)",
        "kto": "Thumbs up / down (KTO)",
        "grpo": "Scored answers (GRPO)",
    },
    "backend": {"auto": "Automatic", "torch": "PyTorch", "mlx": "MLX (Apple)"},
    "training.precision": {
        "auto": "Automatic",
        "fp32": "Full (fp32)",
        "bf16": "Half (bf16)",
        "fp16": "Half, older GPUs (fp16)",
    },
    "data.train_on": {
        "completion": "Only the answers",
        "all": "The whole text",
        "last_turn": "Only the last answer",
    },
}


def choice_words(key: str, choice: object) -> str:
    """How the choice ``choice`` of the setting ``key`` reads in the form."""
    return CHOICE_WORDS.get(key, {}).get(choice, str(choice))


def plain_words(key: str, description: str = "") -> tuple[str, str]:
    """(everyday name, one-line explanation) of the setting ``key``; a field without words here
    falls back to its last key part and the schema's ``description``."""
    if key in PLAIN:
        return PLAIN[key]
    words = key.rsplit(".", 1)[-1].replace("_", " ")
    return words[:1].upper() + words[1:], description
