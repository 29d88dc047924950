"""``tunedesk models import | list | remove | find``: the model store from the command line."""

from __future__ import annotations

import argparse
import json
import sys

from backends.errors import EXIT_OK, EXIT_USER_INPUT, UserInputError
from backends.model_store_info import DEFAULT_DTYPE, DTYPES

EXIT_DECLINED = EXIT_USER_INPUT  # `models remove` answered "no": nothing removed


def add_models_parser(sub: argparse._SubParsersAction) -> None:
    """Register the ``models`` subcommands on the top-level subparsers."""
    p = sub.add_parser("models", help="import, list, remove and find models")
    msub = p.add_subparsers(dest="models_cmd", required=True, metavar="SUBCOMMAND")
    m = msub.add_parser(
        "import",
        help="a GGUF file, an HF folder, or hf:ORG/NAME | ollama:NAME[:TAG] | lmstudio:PUB/REPO[/FILE]",
    )
    m.add_argument("path")
    m.add_argument("--name", default=None, help="name in the store (default: from the file or folder)")
    m.add_argument(
        "--dtype",
        choices=list(DTYPES),
        default=DEFAULT_DTYPE,
        help="precision a GGUF file is converted to (default bf16: 2 bytes per parameter; fp32: 4)",
    )
    m.add_argument(
        "--copy", action="store_true", help="copy an HF folder's weights (default: hard link, else symlink)"
    )
    m.add_argument(
        "--download", action="store_true", help="hf:ORG/NAME: fetch it from the Hugging Face Hub (online)"
    )
    m.add_argument(
        "--allow-pickle", action="store_true", help="accept pickle .bin weights (converted to safetensors)"
    )
    m.add_argument(
        "--trust-remote-code", action="store_true", help="allow the model's own Python code to run"
    )
    m = msub.add_parser("list", help="imported models")
    m.add_argument("--json", action="store_true")
    m = msub.add_parser("remove", help="delete an imported model from the store")
    m.add_argument("name")
    m.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    m = msub.add_parser("find", help="models in the Hugging Face cache, LM Studio and Ollama folders")
    m.add_argument("--json", action="store_true")
    m = msub.add_parser(
        "info", help="hf:ORG/NAME before a download: its size and whether it fits here (online)"
    )
    m.add_argument("ref", help="hf:ORG/NAME[@REVISION]")
    m.add_argument("--json", action="store_true")


def _mb(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:,.1f} MB"


def run_models(args: argparse.Namespace) -> int:
    """Run one ``models`` subcommand; returns the exit code."""
    from backends import model_sources, models

    if args.models_cmd == "import":
        source, name = args.path, args.name
        if model_sources.is_reference(source):
            path, default_name = model_sources.resolve_reference(source, download=args.download)
            source, name = str(path), name or default_name
        elif args.download:
            raise UserInputError(
                "--download needs a hub reference", hint="e.g. hf:HuggingFaceTB/SmolLM2-135M"
            )
        out = models.import_model(
            source,
            name,
            dtype=args.dtype,
            copy=args.copy,
            allow_pickle=args.allow_pickle,
            trust_remote_code=args.trust_remote_code,
            progress=models.print_progress,
        )
        print(out)
        return EXIT_OK
    if args.models_cmd == "remove":
        return _remove(args.name, args.yes)
    if args.models_cmd == "info":
        return _info(args.ref, args.json)
    if args.models_cmd == "find":
        found = model_sources.find_models()
        if args.json:
            print(json.dumps(found, indent=2))
        elif not found:
            print("no models found in the Hugging Face cache, LM Studio or Ollama folders")
        for f in [] if args.json else found:
            print(f"{f['ref']:60s} {f['kind']:5s} {_mb(f['size']):>12s}  {f['source']}")
        return EXIT_OK
    rows = models.list_models()
    if args.json:
        print(json.dumps(rows, indent=2))
    elif not rows:
        print(
            "no models imported yet (`tunedesk models import PATH`; the default model imports on first use)"
        )
    else:
        print(
            f"{'NAME':32s} {'ARCHITECTURE':24s} {'PARAMS':>8s} {'PREC':5s} {'ON DISK':>11s} {'CONTEXT':>8s} TEMPLATE"
        )
        for m in rows:
            print(
                f"{m['name']:32s} {str(m['architecture'] or '-'):24s} {m['params'] / 1e6:7.1f}M "
                f"{str(m['precision'] or '-'):5s} {_mb(m['own_size']):>11s} {m['context_length'] or '-':>8} "
                f"{'yes' if m['chat_template'] else 'no'}"
            )
    return EXIT_OK


def _remove(name: str, yes: bool) -> int:
    from backends import models

    listed = {m["name"]: m for m in models.list_models()}
    if name in listed and not yes:
        m = listed[name]
        print(
            f"Remove {name} ({m['path']})? This frees {_mb(m['own_size'])} "
            f"({m['own_size']:,} bytes; linked files stay where they came from). [y/N] ",
            end="",
            file=sys.stderr,
            flush=True,
        )
        answer = sys.stdin.readline().strip().lower() if sys.stdin else ""
        if answer not in ("y", "yes"):
            print("not removed", file=sys.stderr)
            return EXIT_DECLINED
    done = models.remove_model(name)
    print(f"removed {done['name']}: {done['path']}, {done['freed']:,} bytes freed")
    return EXIT_OK


def _info(ref: str, as_json: bool) -> int:
    """``models info hf:ORG/NAME``: download size and the memory plan with default settings, from
    the Hub's file list and the model's config.json (no weights fetched)."""
    from backends import model_shape, model_sources, plan
    from backends.config import config_from_dict

    scheme, _, rest = ref.partition(":")
    repo, _, revision = rest.partition("@")
    if scheme != "hf" or not repo:
        raise UserInputError(f"not a Hugging Face reference: {ref!r}", hint="hf:ORG/NAME")
    files, config_path = model_sources.hub_files(repo, revision or None)
    try:
        model_config = model_shape.read_model_config(config_path.parent)
        result = plan.plan_memory(config_from_dict({"model": f"hf:{repo}"}), model_config)
    except ValueError as exc:
        raise UserInputError(str(exc), file=config_path, field="model") from None
    size = sum(f["size"] for f in files)
    answer = {"ref": f"hf:{repo}", "download_bytes": size, "files": len(files), "plan": result.to_json()}
    if as_json:
        print(json.dumps(answer, indent=2))
    else:
        print(f"{answer['ref']}: {_mb(size)} to download in {len(files)} files")
        print(f"memory plan (default settings): {result.verdict}, peak {_mb(result.peak)}")
    return EXIT_OK
