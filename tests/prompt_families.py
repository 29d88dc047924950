"""Chat template families people fine-tune, on locally built tokenizers (no download).

Each family is the SmolLM2 tokenizer with that family's special tokens added, its BOS/EOS set,
and a chat template written after the family's published format (ChatML as SmolLM2 and Qwen2.5
with tools, Llama 3.1 with tools, Gemma, Mistral v0.3 with tools, Phi-3). Mistral's, like the
published one, renders the system prompt only before a conversation's last turn when that turn is
the user's: a training row (ending with the answer) never shows it. ``build_family_model`` saves
the tokenizer with a tiny random Llama sized to its vocabulary, so both chat engines can run it;
``tokenizer_adds_bos`` gives the tokenizer a post-processor that prepends BOS (as Llama's and
Gemma's do), or none (as SmolLM2's and Qwen's).
"""

from __future__ import annotations

import json
from pathlib import Path

QWEN_TOOLS = (
    "{%- if tools %}{{- '<|im_start|>system\\n' }}"
    "{%- if messages[0]['role'] == 'system' %}{{- messages[0]['content'] + '\\n\\n' }}{%- endif %}"
    "{{- '# Tools\\n\\n<tools>' }}{%- for tool in tools %}{{- '\\n' + (tool | tojson) }}{%- endfor %}"
    "{{- '\\n</tools><|im_end|>\\n' }}"
    "{%- elif messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}{%- endif %}"
    "{%- for message in messages %}{%- if message['role'] != 'system' %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

LLAMA3 = (
    "{{- bos_token }}"
    "{%- if messages[0]['role'] == 'system' %}{%- set system = messages[0]['content'] | trim %}"
    "{%- set messages = messages[1:] %}{%- else %}{%- set system = '' %}{%- endif %}"
    "{%- if tools or system %}{{- '<|start_header_id|>system<|end_header_id|>\\n\\n' }}"
    "{%- if tools %}{{- 'Environment: ipython\\n\\n' }}{%- for t in tools %}{{- t | tojson(indent=4) + '\\n\\n' }}"
    "{%- endfor %}{%- endif %}{{- system + '<|eot_id|>' }}{%- endif %}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)

GEMMA = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' %}{%- set first = messages[0]['content'] + '\\n\\n' %}"
    "{%- set loop_messages = messages[1:] %}{%- else %}{%- set first = '' %}"
    "{%- set loop_messages = messages %}{%- endif %}"
    "{%- for message in loop_messages %}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{ '<start_of_turn>' + role + '\\n' + (first if loop.first else '') + message['content'] | trim + '<end_of_turn>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{%- endif %}"
)

MISTRAL = (
    "{%- if messages[0]['role'] == 'system' %}{%- set system = messages[0]['content'] %}"
    "{%- set loop_messages = messages[1:] %}{%- else %}{%- set loop_messages = messages %}{%- endif %}"
    "{%- set user_messages = loop_messages | selectattr('role', 'equalto', 'user') | list %}"
    "{{- bos_token }}"
    "{%- for message in loop_messages %}"
    "{%- if message['role'] == 'user' %}"
    "{%- if tools and message == user_messages[-1] %}{{- '[AVAILABLE_TOOLS] ' + (tools | tojson) + '[/AVAILABLE_TOOLS]' }}{%- endif %}"
    "{%- if loop.last and system is defined %}{{- '[INST] ' + system + '\\n\\n' + message['content'] + '[/INST]' }}"
    "{%- else %}{{- '[INST] ' + message['content'] + '[/INST]' }}{%- endif %}"
    "{%- else %}{{- ' ' + message['content'] + eos_token }}{%- endif %}"
    "{%- endfor %}"
)

PHI3 = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\\n' + message['content'] + '<|end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% else %}{{ eos_token }}{% endif %}"
)

# family: (chat template or None for SmolLM2's own, bos, eos, extra special tokens, has tools)
FAMILIES: dict[str, tuple[str | None, str | None, str, list[str], bool]] = {
    "chatml-smollm2": (None, None, "<|im_end|>", [], False),
    "chatml-qwen": (QWEN_TOOLS, None, "<|im_end|>", [], True),
    "llama3": (
        LLAMA3,
        "<|begin_of_text|>",
        "<|eot_id|>",
        ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
        True,
    ),
    "gemma": (GEMMA, "<bos>", "<end_of_turn>", ["<bos>", "<start_of_turn>", "<end_of_turn>"], False),
    "mistral": (
        MISTRAL,
        "<s>",
        "</s>",
        ["<s>", "</s>", "[INST]", "[/INST]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]"],
        True,
    ),
    "phi3": (PHI3, None, "<|end|>", ["<|user|>", "<|assistant|>", "<|system|>", "<|end|>"], False),
}

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]


def build_family_model(out: Path, smollm2_dir: Path, family: str, *, tokenizer_adds_bos: bool) -> Path:
    """A tiny model folder whose tokenizer is ``family``'s (see the module docstring)."""
    from tokenizers import processors
    from transformers import AutoTokenizer

    from tests.tiny_model import make_tiny_llama

    template, bos, eos, extra, _ = FAMILIES[family]
    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    if extra:
        tok.add_special_tokens({"additional_special_tokens": extra})
    tok.eos_token = eos
    if bos is not None:
        tok.bos_token = bos
    if template is not None:
        tok.chat_template = template
    if tokenizer_adds_bos:
        bos_token = tok.bos_token or "<|endoftext|>"
        tok.bos_token = bos_token
        bos_id = tok.convert_tokens_to_ids(bos_token)
        tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{bos_token}:0 $A:0",
            pair=f"{bos_token}:0 $A:0 $B:1",
            special_tokens=[(bos_token, bos_id)],
        )
    src = out / "tokenizer"
    tok.save_pretrained(src)
    config = json.loads((Path(smollm2_dir) / "config.json").read_text())
    config.update(
        vocab_size=len(tok),
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    (src / "config.json").write_text(json.dumps(config))
    model = make_tiny_llama(out / "model", src)
    return model
