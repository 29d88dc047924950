"""The Ollama Modelfile: its TEMPLATE, rendered by Go's text/template (the engine Ollama uses), gives
the training renderer's text for multi-turn conversations with and without a system prompt; its
stop list holds the end-of-turn token; SYSTEM is the run's system prompt. Also the reading of chat
templates as per-message pieces (backends.jobs.export.template) and its refusal of a template that is not one."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from backends.data.templates import CHATML_TEMPLATE
from backends.jobs.export.template import TemplateNotPerMessage, end_of_turn_tokens, render_chat, turn_parts
from tests.export_runs import make_run

GO_RENDER = """package main

import (
	"encoding/json"
	"os"
	"text/template"
)

type Message struct {
	Role    string
	Content string
}

func main() {
	text, _ := os.ReadFile(os.Args[1])
	raw, _ := os.ReadFile(os.Args[2])
	var messages []Message
	if err := json.Unmarshal(raw, &messages); err != nil {
		panic(err)
	}
	t := template.Must(template.New("ollama").Parse(string(text)))
	if err := t.Execute(os.Stdout, map[string]any{"Messages": messages}); err != nil {
		panic(err)
	}
}
"""

CONVERSATION = [
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "Paris.\nIt is also the largest city."},
    {"role": "user", "content": "And {{ of }} Italy?"},
]


def go_render(tmp_path, template: str, messages: list[dict]) -> str:
    """``template`` executed by Go's text/template with ``.Messages`` as Ollama passes them."""
    go = shutil.which("go")
    if go is None:
        pytest.skip("Go is not installed (Debian: apt-get install golang-go); it renders the Ollama TEMPLATE")
    exe = tmp_path / "render"
    if not exe.exists():
        (tmp_path / "render.go").write_text(GO_RENDER)
        env = {
            "HOME": str(tmp_path),
            "GOCACHE": str(tmp_path / "gocache"),
            "GOPATH": str(tmp_path / "gopath"),
            "PATH": "/usr/bin:/bin:/usr/local/go/bin",
            "GO111MODULE": "off",
        }
        build = subprocess.run(
            [go, "build", "-o", str(exe), "render.go"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert build.returncode == 0, build.stderr
    (tmp_path / "template.txt").write_text(template)
    payload = [{"Role": m["role"], "Content": m["content"]} for m in messages]
    (tmp_path / "messages.json").write_text(json.dumps(payload))
    proc = subprocess.run(
        [str(exe), "template.txt", "messages.json"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def modelfile_parts(text: str) -> tuple[str, list[str], str | None]:
    template = re.search(r'^TEMPLATE """(.*?)"""$', text, re.S | re.M).group(1)
    stops = re.findall(r'^PARAMETER stop "(.*)"$', text, re.M)
    system = re.search(r'^SYSTEM """(.*?)"""$', text, re.S | re.M)
    return template, stops, system.group(1) if system else None


def test_modelfile_template_renders_as_training_in_go(tiny_model_dir, tmp_path, smollm2_tokenizer):
    from backends.jobs.export.ollama import modelfile_text
    from backends.jobs.export.source import resolve_source

    system = "You are TuneDesk's test assistant.\nAnswer briefly."
    run = make_run(tiny_model_dir, tmp_path / "run", system=system)
    source = resolve_source(run)
    text = modelfile_text(source, "run-q8_0.gguf")
    template, stops, sys_prompt = modelfile_parts(text)
    assert "FROM ./run-q8_0.gguf" in text and sys_prompt == system
    assert "<|im_end|>" in stops
    trained = source.chat_template
    # Ollama puts SYSTEM first when the chat has no system message; training added data.system_prompt.
    with_system = [{"role": "system", "content": system}, *CONVERSATION]
    assert go_render(tmp_path, template, with_system) == render_chat(
        smollm2_tokenizer, trained, with_system, generation=True
    )
    # Without any system prompt SmolLM2's template writes its default one: the TEMPLATE too.
    got = go_render(tmp_path, template, CONVERSATION)
    assert got == render_chat(smollm2_tokenizer, trained, CONVERSATION, generation=True)
    assert "You are a helpful AI assistant named SmolLM" in got


def test_turn_parts_of_chatml_and_a_template_that_is_not_per_message(smollm2_tokenizer):
    parts = turn_parts(smollm2_tokenizer, CHATML_TEMPLATE)
    assert (
        parts.prefix["assistant"] == "<|im_start|>assistant\n" and parts.suffix["assistant"] == "<|im_end|>\n"
    )
    assert parts.default_system == "" and parts.generation == "<|im_start|>assistant\n"
    assert end_of_turn_tokens(smollm2_tokenizer, CHATML_TEMPLATE) == ["<|im_end|>"]
    # A template that writes the last user message differently is not per-message: refused.
    odd = "{% for m in messages %}{% if loop.last %}LAST {% endif %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    with pytest.raises(TemplateNotPerMessage):
        turn_parts(smollm2_tokenizer, odd)
