"""Every dataset shape people bring, read as training reads it (issue 17).

Per shape: the rows kept, the rendered training text with its trained span (``data check``'s
example, through the SmolLM2 tokenizer with its own template, or with a tool-calling template
written after Qwen2.5's published format), and the refusal where one is right. Public files
(LLaMA-Factory's demo data in ../shared/data) are read in place; the shapes no public file here has
are small samples in tests/data/formats written after LLaMA-Factory's and OpenAI's documented forms.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from backends.cli import main
from backends.data.check import check_file
from backends.data.pipeline import analyze_file, no_rows_error
from backends.errors import UserInputError

SAMPLES = Path(__file__).parent / "data" / "formats"
IM_END = "<|im_end|>"

# A ChatML template with a tools section and tool calls, written after Qwen2.5's published format.
TOOL_TEMPLATE = (
    "{%- if tools %}{{- '<|im_start|>system\\n' }}"
    "{%- if messages[0].role == 'system' %}{{- messages[0].content + '\\n\\n' }}{%- endif %}"
    "{{- '# Tools\\n\\n<tools>' }}{%- for tool in tools %}{{- '\\n' + (tool | tojson) }}{%- endfor %}"
    "{{- '\\n</tools><|im_end|>\\n' }}"
    "{%- elif messages[0].role == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message.role == 'user' or (message.role == 'assistant' and not message.tool_calls) %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}"
    "{%- elif message.role == 'assistant' %}{{- '<|im_start|>assistant' }}"
    "{%- if message.content %}{{- '\\n' + message.content }}{%- endif %}"
    "{%- for tc in message.tool_calls %}"
    '{{- \'\\n<tool_call>\\n{"name": "\' + tc.function.name + \'", "arguments": \' }}'
    "{{- tc.function.arguments | tojson }}{{- '}\\n</tool_call>' }}"
    "{%- endfor %}{{- '<|im_end|>\\n' }}"
    "{%- elif message.role == 'tool' %}"
    "{{- '<|im_start|>user\\n<tool_response>\\n' + message.content + '\\n</tool_response><|im_end|>\\n' }}"
    "{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


@pytest.fixture(scope="module")
def tool_tokenizer(smollm2_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    tok.chat_template = TOOL_TEMPLATE
    return tok


def trained(result: dict) -> list[str]:
    ex = result["example"]
    return [ex["text"][s:e] for s, e in ex["spans"]]


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


# ---- tool calling ------------------------------------------------------------------------------


def test_sharegpt_function_call_rows_train_on_the_call(tool_tokenizer):
    result = check_file(SAMPLES / "glaive_toolcall_sample.json", tokenizer=tool_tokenizer)
    assert (result["format"], result["rows_read"], result["rows_kept"]) == ("sharegpt", 3, 3)
    text = result["example"]["text"]
    # The tools section of the template lists the row's tool (wrapped as the template expects).
    assert '<tools>\n{"type": "function", "function": {"name": "get_weather"' in text
    call, answer = trained(result)
    assert call == (
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>' + IM_END
    )
    assert answer == "It is 18 °C and cloudy in Paris." + IM_END
    # The observation is context, rendered as the template renders tool results, and not trained.
    observation = '<tool_response>\n{"temperature_c": 18, "sky": "cloudy"}\n</tool_response>'
    assert observation in text and all(observation not in t for t in trained(result))


def test_openai_tool_calls_and_tool_messages(tool_tokenizer):
    path = SAMPLES / "openai_tool_calls.jsonl"
    examples, report, _, _ = analyze_file(path, tool_tokenizer)
    assert (report.format, report.rows_read, report.rows_kept) == ("messages", 3, 2)
    # The third row has a tool result that no call asked for.
    (problem,) = report.problems
    assert (problem.row, problem.field) == (3, "messages[1].role")
    assert "expected 'assistant', got 'tool'" in problem.reason
    result = check_file(path, tokenizer=tool_tokenizer)
    call, answer = trained(result)
    assert '"arguments": {"city": "Oslo"}' in call and call.endswith(IM_END)  # JSON text -> object
    assert answer == "Yes, it is raining in Oslo." + IM_END
    assert result["example"]["text"].startswith("<|im_start|>system\nYou are a travel assistant.\n\n# Tools")
    # Parallel calls: both in the one trained assistant turn.
    second = examples[1]
    tok = tool_tokenizer
    spans = [i for i, x in enumerate(second.labels) if x != -100]
    trained_text = tok.decode([second.input_ids[i] for i in spans])
    assert trained_text.count("<tool_call>") == 2 and "Madrid" in trained_text


def test_a_template_without_tool_calls_refuses_tool_rows(smollm2_tokenizer):
    """SmolLM2's own template renders no tools section and no tool calls: rows with calls are refused
    (a plain row of the same file still trains)."""
    result = check_file(SAMPLES / "glaive_toolcall_sample.json", tokenizer=smollm2_tokenizer)
    assert result["rows_kept"] == 1
    reasons = {p["row"]: p for p in result["problems"]}
    assert set(reasons) == {1, 2}
    assert reasons[1]["field"] == "tools" and "no tools section" in reasons[1]["reason"]


def test_bad_tool_call_json_names_the_field(tmp_path):
    row = {
        "conversations": [
            {"from": "human", "value": "hi"},
            {"from": "function_call", "value": "{name: oops}"},
            {"from": "observation", "value": "x"},
            {"from": "gpt", "value": "done"},
        ]
    }
    _, report, _, _ = analyze_file(write_jsonl(tmp_path / "t.jsonl", [row]), None)
    (problem,) = report.problems
    assert problem.field == "conversations[1].value" and "not valid JSON" in problem.reason


# ---- unpaired feedback ---------------------------------------------------------------------------


def test_feedback_is_its_own_format_and_never_sft(tiny_model_dir, smollm2_tokenizer):
    from backends.config import RunConfig
    from backends.data import load_tokenizer, prepare_data

    path = SAMPLES / "kto_sample.json"
    result = check_file(path, tokenizer=smollm2_tokenizer)
    assert (result["format"], result["method"], result["suits"]) == ("feedback", "kto", ["kto"])
    assert result["rows_kept"] == 3  # label and kto_tag both read
    (answer,) = trained(result)
    assert answer.startswith("Open Settings, choose Account") and answer.endswith(IM_END)
    with pytest.raises(UserInputError, match="would learn the bad answers too; train it with method 'kto'"):
        analyze_file(path, None, method="sft")
    config = RunConfig(model=str(tiny_model_dir), method="sft", data={"train_file": str(path)})
    with pytest.raises(UserInputError, match="train it with method 'kto'") as exc:
        prepare_data(config, load_tokenizer(tiny_model_dir))
    assert exc.value.field == "method" and exc.value.file == str(path)


# ---- content parts -------------------------------------------------------------------------------


def test_content_parts_text_and_value(smollm2_tokenizer):
    result = check_file(SAMPLES / "content_parts.jsonl", tokenizer=smollm2_tokenizer)
    assert (result["rows_read"], result["rows_kept"]) == (3, 2)
    assert "Summarise: the meeting moved to Friday." in result["example"]["text"]
    assert trained(result) == ["The meeting is now on Friday." + IM_END]
    (problem,) = result["problems"]
    assert problem["field"] == "messages[0].content[0]" and "'image_url' part" in problem["reason"]
    sharegpt = check_file(SAMPLES / "content_parts_sharegpt.jsonl", tokenizer=smollm2_tokenizer)
    assert sharegpt["rows_kept"] == 1 and trained(sharegpt) == ["Bonjour !" + IM_END]


# ---- multimodal ----------------------------------------------------------------------------------


def test_multimodal_rows_are_refused_naming_the_media_column():
    path = SAMPLES / "mllm_sample.json"
    _, report, _, _ = analyze_file(path, None)
    assert report.rows_kept == 0
    assert [(p.row, p.field) for p in report.problems] == [(1, "images"), (2, "images")]
    err = str(no_rows_error(report))
    assert "the 'images' column holds media" in err and "text-only" in err


def test_image_placeholder_without_a_column_is_refused(tmp_path):
    row = {"prompt": "<image>What is this?", "completion": "A cat."}
    _, report, _, _ = analyze_file(write_jsonl(tmp_path / "p.jsonl", [row]), None)
    (problem,) = report.problems
    assert problem.field == "prompt" and "<image> placeholder" in problem.reason


def test_plain_text_mentioning_image_is_text_but_an_images_column_is_refused(tmp_path):
    """Pre-training text (e.g. from `data from-folder` on code) may say "<image>" as words: kept;
    the same row with a media column is still a multimodal row, refused naming the column."""
    rows = [
        {"text": "Write `<image>` where the picture goes."},
        {"text": "See the photo.", "images": ["a.png"]},
    ]
    _, report, _, _ = analyze_file(write_jsonl(tmp_path / "t.jsonl", rows), None)
    assert report.rows_kept == 1
    (problem,) = report.problems
    assert problem.row == 2 and "images" in problem.reason


# ---- plain text files and folders --------------------------------------------------------------


def test_txt_and_md_files_and_folders_are_plain_text(tmp_path, smollm2_tokenizer):
    notes = tmp_path / "notes"
    (notes / "sub").mkdir(parents=True)
    (notes / "a.md").write_text("# Release notes\n\nVersion 2 adds dark mode.\n")
    (notes / "sub" / "b.txt").write_text("Line one.\u2028Still line one.\n")
    (notes / "skip.json").write_text("{}")
    (notes / ".hidden.txt").write_text("secret")
    result = check_file(notes, tokenizer=smollm2_tokenizer)
    assert (result["format"], result["rows_read"], result["rows_kept"]) == ("text", 2, 2)
    # Packed (data.pack_text): the example is the first file, whole, then EOS, every token trained
    # (in the joined stream a document's first token is predicted from the EOS before it).
    text = "# Release notes\n\nVersion 2 adds dark mode.\n" + IM_END
    assert result["example"]["text"] == text
    assert trained(result) == [text]
    assert any("plain text packed: 2 documents" in n for n in result["notices"])
    single = check_file(notes / "sub" / "b.txt")
    assert single["format"] == "text" and single["rows_kept"] == 1
    assert single["preview"]["rows"] == [["Line one.\u2028Still line one.\n"]]
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserInputError, match="no .txt or .md file"):
        analyze_file(tmp_path / "empty", None)


# ---- column mapping ------------------------------------------------------------------------------


def test_csv_question_answer_detected_and_mapped(smollm2_tokenizer, capsys):
    path = SAMPLES / "qa.csv"
    result = check_file(path, tokenizer=smollm2_tokenizer)
    assert (result["format"], result["rows_kept"]) == ("prompt_completion", 3)
    assert result["columns"] == {"prompt": "question", "completion": "answer"}
    assert result["preview"]["columns"] == ["question", "answer", "source"]
    assert result["preview"]["rows"][1] == [
        "How many legs does a spider have?",
        "Eight, in two rows of four.",
        "biology book",
    ]
    assert trained(result) == ["Paris." + IM_END]
    assert "What is the capital of France?" in result["example"]["text"]


def test_columns_option_maps_any_names(tmp_path, tiny_model_dir, capsys):
    rows = [{"frage": f"q{i}", "antwort": f"a{i}", "sys": "Be brief."} for i in range(3)]
    rows[2]["antwort"] = ""
    path = write_jsonl(tmp_path / "de.jsonl", rows)
    argv = ["data", "check", str(path), "--model", str(tiny_model_dir), "--json"]
    assert main([*argv, "--columns", "prompt=frage,completion=antwort,system=sys"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    # Progress goes to stderr as data_progress events; the last one says the whole file was read.
    events = [json.loads(line) for line in captured.err.splitlines() if '"data_progress"' in line]
    size = path.stat().st_size
    assert events and events[-1]["done"] == events[-1]["total"] == size and events[-1]["rows"] == 3
    assert result["columns"] == {"prompt": "frage", "completion": "antwort", "system": "sys"}
    assert result["rows_kept"] == 2
    # A problem names the user's column, not the role.
    assert result["problems"] == [{"row": 3, "field": "antwort", "reason": "empty answer", "where": "line"}]
    assert result["preview"]["columns"] == ["frage", "antwort", "sys"]
    assert main([*argv, "--columns", "prompt=frage,completion=reply"]) == 1
    error = json.loads(capsys.readouterr().out)["error"]
    assert "'reply' not in the file; its columns: frage, antwort, sys" in error["message"]
    assert main([*argv, "--columns", "question=frage"]) == 1
    assert "unknown role 'question'" in json.loads(capsys.readouterr().out)["error"]["message"]


def test_data_columns_in_the_config_trains(tmp_path, tiny_model_dir):
    from backends.config import RunConfig
    from backends.data import load_tokenizer, prepare_data

    path = SAMPLES / "qa.csv"
    config = RunConfig(
        model=str(tiny_model_dir),
        data={
            "train_file": str(path),
            "columns": "prompt=source,completion=answer",
            "validation_fraction": 0,
        },
    )
    assert config.data.columns == {"prompt": "source", "completion": "answer"}
    prepared = prepare_data(config, load_tokenizer(tiny_model_dir))
    assert len(prepared.train) == 3
    tok = load_tokenizer(tiny_model_dir)
    assert "atlas" in tok.decode(prepared.train[0].input_ids)
    with pytest.raises(ValueError, match="unknown role"):
        RunConfig(data={"columns": {"answer": "x"}})
    from backends.config import apply_overrides  # --set data.columns=... on tunedesk train

    raw = apply_overrides({}, ["data.columns=prompt=question,completion=answer"])
    assert RunConfig(**raw).data.columns == {"prompt": "question", "completion": "answer"}


def test_identity_mapping_reported_for_known_formats(shared_data):
    result = check_file(shared_data / "llamafactory" / "alpaca_en_demo.json")
    assert result["columns"] == {"instruction": "instruction", "input": "input", "output": "output"}
    assert result["preview"]["columns"] == ["instruction", "input", "output"]
    assert len(result["preview"]["rows"]) == 10
    assert all(len(cell) <= 200 for row in result["preview"]["rows"] for cell in row)


# ---- robust reading ------------------------------------------------------------------------------


def test_malformed_lines_are_dropped_and_named_unless_strict(tmp_path):
    good = {"prompt": "q", "completion": "a"}
    path = write_jsonl(tmp_path / "d.jsonl", [good, '{"prompt": "q", broken', good, "[1, 2"])
    _, report, _, _ = analyze_file(path, None)
    assert (report.rows_read, report.rows_kept) == (4, 2)
    assert [str(p).split(": not valid JSON")[0] for p in report.problems] == [
        f"{path}:2: (line)",
        f"{path}:4: (line)",
    ]
    with pytest.raises(UserInputError) as exc:
        analyze_file(path, None, strict=True)
    assert exc.value.line == 2 and "not valid JSON" in str(exc.value) and "1 more" in str(exc.value)


@pytest.mark.parametrize("char", ["\u2028", "\u2029", "\u0085", "\x0c", "\x1c", "\r"])
def test_line_separators_inside_json_strings(tmp_path, char):
    text = f"before{char}after"
    raw = json.dumps({"prompt": "q", "completion": text}, ensure_ascii=False)
    raw_unescaped = raw.replace("\\f", "\x0c").replace("\\u001c", "\x1c").replace("\\r", "\r")
    for name in ("d.jsonl", "d.json"):  # a .json file holding JSON Lines too
        path = tmp_path / name
        path.write_bytes(("\ufeff" + raw_unescaped + "\n" + raw + "\n").encode("utf-8"))
        _, report, _, _ = analyze_file(path, None)
        assert (report.rows_read, report.rows_kept, report.problems) == (2, 2, []), name


def test_progress_reports_bytes_read_as_the_file_streams(tmp_path):
    from backends.data.progress import DataProgress

    path = write_jsonl(tmp_path / "d.jsonl", [{"text": f"row {i} " * 50} for i in range(3000)])
    events: list[dict] = []
    lines: list[str] = []
    check_file(path, progress=DataProgress(say=lines.append, event=events.append, interval=0))
    size = path.stat().st_size
    dones = [e["done"] for e in events]
    assert len(events) > 100 and dones == sorted(dones) and 0 < dones[0] < size
    assert events[-1] == {"stage": "reading", "done": size, "total": size, "unit": "bytes", "rows": 3000}
    assert 1.25e6 < size < 1.35e6
    assert lines[-1] == "reading d.jsonl: 100% (1.3 MB of 1.3 MB), 3,000 rows"


def test_csv_feedback_with_a_mapped_rating_column(tmp_path):
    path = tmp_path / "ratings.csv"
    path.write_text("q,a,thumbs\nHi?,Hello!,yes\nHi?,Go away.,no\nHi?,Hey.,maybe\n")
    _, report, _, method = analyze_file(path, None, columns="prompt=q,completion=a,label=thumbs")
    assert (report.format, method, report.rows_kept) == ("feedback", "kto", 2)
    (problem,) = report.problems
    assert (problem.row, problem.field) == (3, "thumbs") and "expected true or false" in problem.reason
    with pytest.raises(UserInputError, match="method 'kto'"):
        analyze_file(path, None, method="sft", columns="prompt=q,completion=a,label=thumbs")


def test_the_data_page_shows_progress_events_in_words():
    from desktop.pages.data_page import progress_text

    event = {"v": 1, "event": "data_progress", "stage": "reading", "done": 450, "total": 1000}
    assert (
        progress_text(json.dumps({**event, "unit": "bytes", "rows": 12345})) == "Reading… 45% (12,345 rows)"
    )
    assert progress_text("importing the model…") == "importing the model…"
