"""The ``bitnet-export`` command line: a thin layer over :mod:`bitnet_export.api`.

Commands::

    bitnet-export export  SPEC --out model.onnx [--format onnx|tflite] [--weights int8] [--opset N]
                          [--checkpoint CKPT] [--no-dynamic-batch]
    bitnet-export verify  model.onnx [model.tflite ...] SPEC [--checkpoint CKPT] [--target T ...]
                          [--json report.json] [--seed N]
    bitnet-export export-llm SPEC --target ort-genai|litert-lm --out PATH [--max-seq-len N]
                          [--weights int8] [--tokenizer tokenizer.json] [--prefill-len N]
    bitnet-export generate PATH SPEC [--prompt TEXT ...] [--steps 32] [--target T ...]
    bitnet-export inspect model.onnx
    bitnet-export demo    [--out out/demo] [--epochs 60]

``SPEC`` is ``module:factory`` (``bitnet_export.zoo.digits:factory``) or ``file.py:factory``
(``examples/model.py:make``): a function called with no arguments that returns
``(model, example_inputs)``, a module and a tensor or tuple of tensors.

Exit codes: 0 success, 1 parity check failed (``verify``), 2 usage or user error (the message
on stderr names the spec, file or option and the fix; no traceback).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib
import importlib.util
import os
import pickle
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, Final

import torch
from torch import nn

from bitnet_export._version import __version__
from bitnet_export.api import export_onnx, export_tflite, verify
from bitnet_export.backends import check_readable, file_format
from bitnet_export.backends.onnx.inspect import inspect_onnx
from bitnet_export.backends.onnx.lower_bitlinear import KERNELS, WEIGHT_MODES
from bitnet_export.backends.tflite.inspect import inspect_tflite
from bitnet_export.errors import BitNetExportError
from runtimes import ADAPTERS

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERNAL",
    "EXIT_OK",
    "EXIT_USAGE",
    "FORMATS",
    "CliError",
    "build_parser",
    "load_checkpoint",
    "load_spec",
    "main",
    "run",
]

EXIT_OK: Final = 0
#: ``verify``: the file ran but parity is out of tolerance (or a target failed).
EXIT_FAILED: Final = 1
#: Bad arguments, bad spec / checkpoint / file, or an export the API refused.
EXIT_USAGE: Final = 2
#: A bug in bitnet-export (an exception no check anticipated): reported in one line, with the
#: traceback when ``BITNET_EXPORT_DEBUG=1``.
EXIT_INTERNAL: Final = 3

#: ``--format`` -> exporter. A new backend (``tflite``) is one more entry.
FORMATS: Final[dict[str, Callable[..., Any]]] = {"onnx": export_onnx, "tflite": export_tflite}

_SPEC_EXAMPLES = "e.g. 'bitnet_export.zoo.digits:factory' or 'examples/model.py:make'"
_PROG = "bitnet-export"


class CliError(BitNetExportError):
    """A user error found by the command line (spec, checkpoint or file); the message says the fix."""


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------- model specs
def _is_file_spec(module: str) -> bool:
    return module.endswith(".py") or "/" in module or os.sep in module


def _user_code_error(what: str, spec: str, exc: BaseException, fix: str) -> CliError:
    """A :class:`CliError` carrying the traceback of the user's code (our own frames dropped)."""
    tb = traceback.TracebackException.from_exception(exc)
    tb.stack = traceback.StackSummary.from_list(
        [f for f in tb.stack if f.filename != __file__ and not f.filename.startswith("<frozen importlib")]
    )
    trace = "".join(tb.format()).rstrip()
    return CliError(f"{what} (model spec {spec!r}) raised {type(exc).__name__}: {exc}\n{trace}\n{fix}")


@contextlib.contextmanager
def _on_sys_path(folder: Path) -> Iterator[None]:
    """``folder`` first on ``sys.path`` while the user's module is imported (sibling imports)."""
    entry = str(folder)
    sys.path.insert(0, entry)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(entry)


def _import_file(file: Path, spec: str) -> ModuleType:
    if not file.is_file():
        raise CliError(
            f"model spec {spec!r}: file {file} not found (relative paths start at {Path.cwd()}); "
            f"give an existing .py file, {_SPEC_EXAMPLES}"
        )
    resolved = file.resolve()
    digest = hashlib.sha1(str(resolved).encode(), usedforsecurity=False).hexdigest()[:12]
    name = f"_bitnet_export_spec_{resolved.stem}_{digest}"
    import_spec = importlib.util.spec_from_file_location(name, resolved)
    if import_spec is None or import_spec.loader is None:
        raise CliError(f"model spec {spec!r}: cannot import {file} as Python; give a .py file")
    module = importlib.util.module_from_spec(import_spec)
    sys.modules[name] = module  # dataclasses and pickling look the module up here
    try:
        with _on_sys_path(resolved.parent):
            import_spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(name, None)
        raise _user_code_error(f"importing {file}", spec, exc, "fix the error in that file") from exc
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def _import_module(module: str, spec: str) -> ModuleType:
    if not all(part.isidentifier() for part in module.split(".")):
        raise CliError(
            f"model spec {spec!r}: {module!r} is neither a module name nor a .py file; {_SPEC_EXAMPLES}"
        )
    try:
        # Like `python -m`, modules in the current folder are importable.
        with _on_sys_path(Path.cwd()):
            return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module == exc.name or module.startswith(f"{exc.name}.")):
            raise CliError(
                f"model spec {spec!r}: module {module!r} not found; check the spelling, install the "
                f"package, run from the folder that holds it, or give a file path ('path/to/file.py:"
                f"factory')"
            ) from exc
        raise CliError(
            f"model spec {spec!r}: importing {module!r} failed: {exc}; install the missing package"
        ) from exc
    except Exception as exc:
        raise _user_code_error(f"importing {module!r}", spec, exc, "fix the error in that module") from exc


def _example_tuple(value: Any) -> tuple[torch.Tensor, ...] | None:
    if isinstance(value, torch.Tensor):
        return (value,)
    if isinstance(value, tuple | list) and value and all(isinstance(v, torch.Tensor) for v in value):
        return tuple(value)
    return None


def _describe(value: Any) -> str:
    if isinstance(value, tuple | list):
        inner = ", ".join(type(v).__name__ for v in value[:4]) + (", ..." if len(value) > 4 else "")
        return f"{type(value).__name__} of ({inner})"
    return type(value).__name__


def load_spec(spec: str) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """Import a model spec and call its factory.

    Args:
        spec: ``module:factory`` (an importable module, e.g. ``bitnet_export.zoo.digits:factory``)
            or ``path/to/file.py:factory``. The factory is called with no arguments.

    Returns:
        ``(model, example_inputs)`` with the inputs as a tuple of tensors.

    Raises:
        CliError: bad syntax, module or file not found, missing attribute, the factory failed or
            returned something other than ``(nn.Module, tensor | tuple of tensors)``.
    """
    module_part, colon, attr = spec.rpartition(":")
    if not colon or not module_part or not attr:
        raise CliError(f"model spec {spec!r} is not 'module:factory'; {_SPEC_EXAMPLES}")
    if not all(part.isidentifier() for part in attr.split(".")):
        raise CliError(f"model spec {spec!r}: {attr!r} after ':' is not a Python name; {_SPEC_EXAMPLES}")
    if _is_file_spec(module_part):
        module = _import_file(Path(module_part), spec)
    else:
        module = _import_module(module_part, spec)

    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            names = sorted(
                n
                for n, v in vars(module).items()
                if callable(v) and not n.startswith("_") and getattr(v, "__module__", None) == module.__name__
            )
            shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
            raise CliError(
                f"model spec {spec!r}: {module_part} has no attribute {attr!r}; "
                f"it defines: {shown or '(none)'}"
            )
        obj = getattr(obj, part)
    if not callable(obj):
        raise CliError(f"model spec {spec!r}: {attr!r} is a {type(obj).__name__}, not a function to call")

    try:
        made = obj()
    except Exception as exc:
        fix = "fix the error in the factory"
        if isinstance(exc, TypeError):
            fix += "; it is called with no arguments, so give every parameter a default"
        raise _user_code_error(f"calling {attr}()", spec, exc, fix) from exc
    wrong = (
        f"model spec {spec!r}: {attr}() must return (model, example_inputs): an nn.Module and a "
        f"tensor or tuple of tensors"
    )
    if not isinstance(made, tuple | list) or len(made) != 2:
        raise CliError(f"{wrong}; it returned {_describe(made)}")
    model, example = made
    if not isinstance(model, nn.Module):
        raise CliError(f"{wrong}; the model is a {type(model).__name__}")
    inputs = _example_tuple(example)
    if inputs is None:
        raise CliError(f"{wrong}; example_inputs is a {_describe(example)}")
    return model, inputs


# ----------------------------------------------------------------------------------- checkpoints
def load_checkpoint(model: nn.Module, path: Path, spec: str) -> None:
    """Load a ``state_dict`` checkpoint into ``model`` (strict: every key must match).

    Loaded with ``torch.load(weights_only=True)``: only tensors and plain data are unpickled.
    That covers BitNetLayer's ``_extra_state`` (a dict of str / int / float / bool / None), so
    no file is ever loaded with ``weights_only=False``.

    Args:
        model: the model built by the spec's factory.
        path: a file saved with ``torch.save(model.state_dict(), path)`` (or a dict holding it
            under ``"state_dict"`` / ``"model_state_dict"``).
        spec: the model spec, for messages.

    Raises:
        CliError: missing file, not a plain state dict, or keys / shapes that do not fit the model.
    """
    if not path.is_file():
        raise CliError(
            f"checkpoint {path} not found; give the file saved with torch.save(model.state_dict())"
        )
    size = path.stat().st_size
    if size == 0:
        raise CliError(
            f"checkpoint {path} is empty (0 bytes); save it with torch.save(model.state_dict(), path)"
        )
    with open(path, "rb") as f:
        head = f.read(4)
    if head[:2] != b"PK" and head[:1] != b"\x80":  # torch.save: a zip archive (or a legacy pickle)
        raise CliError(
            f"checkpoint {path} is not a torch.save file ({size} bytes starting {head!r}, neither a "
            "zip archive nor a pickle); save it with torch.save(model.state_dict(), path)"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CliError(
            f"checkpoint {path} holds Python objects that torch.load(weights_only=True) refuses; "
            f"save only the state dict: torch.save(model.state_dict(), path) ({exc})"
        ) from exc
    except Exception as exc:
        raise CliError(f"checkpoint {path}: cannot read it with torch.load: {exc}") from exc
    if isinstance(state, dict):
        for key in ("state_dict", "model_state_dict"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict):
        raise CliError(
            f"checkpoint {path} holds a {type(state).__name__}, not a state dict; "
            f"save it with torch.save(model.state_dict(), path)"
        )
    try:
        model.load_state_dict(state)
    except BitNetExportError as exc:  # e.g. a BitNetLayer _extra_state of the wrong type
        raise CliError(f"checkpoint {path} does not fit the model of spec {spec!r}: {exc}") from exc
    except (RuntimeError, TypeError, ValueError, KeyError) as exc:
        raise CliError(
            f"checkpoint {path} does not fit the model of spec {spec!r}: {exc}\n"
            f"was it saved from the model that factory builds?"
        ) from exc


def _load_model(spec: str, checkpoint: Path | None) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    _say(f"loading model spec {spec}" + (f" with checkpoint {checkpoint}" if checkpoint else ""))
    model, inputs = load_spec(spec)
    if checkpoint is not None:
        load_checkpoint(model, checkpoint, spec)
    return model, inputs


# ------------------------------------------------------------------------------------- commands
def _cmd_export(args: argparse.Namespace) -> int:
    model, inputs = _load_model(args.spec, args.checkpoint)
    options: dict[str, Any] = {"weights": args.weights, "progress": True}
    if args.format == "onnx":
        options.update(opset=args.opset, dynamic_batch=args.dynamic_batch, kernels=args.kernels)
    elif args.opset is not None or args.kernels != "integer":
        raise CliError("export: --opset and --kernels apply to --format onnx only")
    result = FORMATS[args.format](model, inputs, args.out, **options)
    print(result.summary())
    return EXIT_OK


def _cmd_export_llm(args: argparse.Namespace) -> int:
    from bitnet_export.llm.export import export_llm

    model, _ = _load_model(args.spec, args.checkpoint)
    options: dict[str, Any] = {"progress": True}
    if args.prefill_len is not None:
        options["prefill_len"] = args.prefill_len
    if args.bos is not None:
        options["bos_token_id"] = args.bos
    if args.eos:
        options["eos_token_ids"] = args.eos
    if args.kernels != "integer":
        options["kernels"] = args.kernels
    result = export_llm(
        model, args.out, args.target, args.max_seq_len, args.weights, args.tokenizer, **options
    )
    files = ", ".join(f"{f.name}" for f in result.files)
    print(
        f"{result.target}: {result.path} ({files}; {_fmt_bytes(result.size_bytes)} of model) "
        f"weights={result.weights} max_seq_len={result.max_seq_len}"
        + (f" prefill_len={result.prefill_len}" if result.prefill_len else "")
        + f"; {len(result.layers)} BitNetLayer(s); decoder self-check {result.self_check:.1e}; "
        f"{result.seconds:.1f} s"
    )
    return EXIT_OK


def _prompt_ids(path: Path, record: dict[str, Any], texts: Sequence[str]) -> list[list[int]]:
    """Token ids of text prompts by the export's tokenizer, after its start token."""
    from bitnet_export.llm.export import bundle_tokenizer

    try:
        from tokenizers import Tokenizer
    except ImportError as exc:
        raise CliError("generate: text prompts need the tokenizers package (pip install '.[hf]')") from exc
    doc = bundle_tokenizer(path)
    if doc is None:
        raise CliError(f"generate: {path} has no tokenizer.json; export it with --tokenizer")
    tok = Tokenizer.from_str(doc.decode())
    bos = record.get("bos_token_id")
    start = [] if bos is None else [int(bos)]
    return [start + list(tok.encode(t, add_special_tokens=False).ids) for t in texts]


def _cmd_generate(args: argparse.Namespace) -> int:
    from bitnet_export.llm.export import llm_info
    from bitnet_export.parity.generation import verify_generation

    if not args.path.exists():
        raise CliError(f"generate: {args.path} not found; write it with '{_PROG} export-llm'")
    record = llm_info(args.path)
    model, _ = _load_model(args.spec, args.checkpoint)
    prompts = _prompt_ids(args.path, record, args.prompt or ["def "])
    report = verify_generation(model, args.path, prompts, args.steps, args.target)
    if args.json is not None:
        from bitnet_export._io import atomic_write_text

        atomic_write_text(args.json, report.to_json())
        _say(f"wrote {args.json}")
    print(report.format_table())
    return EXIT_OK if report.passed else EXIT_FAILED


def _cmd_verify(args: argparse.Namespace) -> int:
    paths: list[Path] = args.files
    for path in paths:
        check_readable(path)  # not found / FIFO / device / empty: refused before anything opens it
    model, inputs = _load_model(args.spec, args.checkpoint)
    targets: list[str] | None = args.target
    names = ", ".join(targets) if targets else "every runtime that can run each file"
    _say(f"verifying {', '.join(map(str, paths))} on {names} (seed {args.seed}) ...")
    report = verify(model, inputs, paths, targets, seed=args.seed)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        report.to_json(args.json)  # atomic: temporary file + os.replace
        _say(f"wrote {args.json}")
    print(report.format_table())
    return EXIT_OK if report.passed else EXIT_FAILED


def _fmt_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB"):
        if size < 1024:
            return f"{n} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def _fmt_shape(shape: Sequence[int | str] | None) -> str:
    return "?" if shape is None else "[" + ", ".join(str(d) for d in shape) + "]"


def _fmt_layer(layer: dict[str, Any]) -> str:
    """One line per BitNetLayer from ``bitnet_export.layers`` metadata."""
    try:
        w, x = layer["weight"], layer["input"]
        act = f"act int{x['bits']} {x['mode']}"
        if x.get("mode") == "static" and x.get("scale") is not None:
            act += f" (scale {x['scale']:.4g}, zero point {x.get('zero_point')})"
        extras = [] if layer.get("enabled", True) else ["quantization off"]
        if layer.get("blend", 1.0) != 1.0:
            extras.append(f"blend {layer['blend']}")
        return (
            f"{layer['module_path'] or '(root)'}: {layer['in_features']}->{layer['out_features']}  "
            f"weight {w['scheme']} {w['precision']}-bit {w['granularity']} (stored {w['storage_bits']}-bit)  "
            f"{act}  bias {'yes' if layer.get('bias') else 'no'}" + "".join(f"  {e}" for e in extras)
        )
    except (KeyError, TypeError):  # written by another version: show it raw
        return str(layer)


def _cmd_inspect(args: argparse.Namespace) -> int:
    check_readable(Path(args.file))
    if file_format(args.file) == "tflite":
        info = inspect_tflite(args.file)
    else:
        info = inspect_onnx(args.file)
    out: list[str] = [f"{info['path']}"]
    out.append(f"  producer   {info['producer'] or '?'} (IR version {info['ir_version']})")
    opsets = ", ".join(f"{d or 'ai.onnx'} {v}" for d, v in info["opset_imports"].items())
    out.append(f"  opsets     {opsets}")
    suffix = ".tflite" if info.get("format") == "tflite" else ".onnx"
    size = f"  size       {_fmt_bytes(info['total_bytes'])} ({info['file_bytes']} B {suffix}"
    for ext in info["external_data"]:
        size += f" + {ext['bytes']} B {Path(ext['file']).name}" + ("" if ext["exists"] else " MISSING")
    out.append(size + f"; weights {_fmt_bytes(info['initializer_bytes'])})")
    for label, key in (("inputs", "inputs"), ("outputs", "outputs")):
        for i, v in enumerate(info[key]):
            out.append(f"  {label if i == 0 else '':<10} {v['name']}: {v['dtype']} {_fmt_shape(v['shape'])}")

    out.append(f"\nops ({info['node_count']} nodes)")
    width = max((len(op["op_type"]) for op in info["ops"]), default=0)
    for op in info["ops"]:
        out.append(f"  {op['op_type']:<{width}}  {op['domain'] or 'ai.onnx':<14} {op['count']:>5}")

    out.append("\nlayers (initializers)")
    for group in info["groups"]:
        ops = sum(group["ops"].values())
        inits = group["initializers"]
        out.append(f"  {group['name']}: {ops} ops, {len(inits)} initializers, {_fmt_bytes(group['bytes'])}")
        if group["ops"]:
            listed = (f"{op}" if n == 1 else f"{op} x{n}" for op, n in group["ops"].items())
            out.append(f"    ops: {', '.join(listed)}")
        nwidth = max((len(t["name"]) for t in inits), default=0)
        for t in inits:
            where = "" if t["location"] == "inline" else f"  {t['location']}"
            out.append(
                f"    {t['name']:<{nwidth}}  {t['dtype']:<8} {_fmt_shape(t['shape']):<12} "
                f"{t['bytes']:>10} B{where}"
            )

    meta = info["bitnet_export"]
    out.append("\nbitnet_export metadata")
    if not meta:
        out.append("  (none: not written by bitnet_export)")
    for key, value in meta.items():
        if key == "layers" and isinstance(value, list):
            out.append(f"  layers ({len(value)}):")
            out.extend(f"    {_fmt_layer(layer)}" for layer in value)
        else:
            out.append(f"  {key}: {value}")
    print("\n".join(out))
    return EXIT_OK


def _cmd_demo(args: argparse.Namespace) -> int:
    from bitnet_export.demo import run_demo

    rows = run_demo(args.out, epochs=args.epochs)
    return EXIT_OK if rows and all(r.passed for r in rows) else EXIT_FAILED


def _target(value: str) -> str:
    """argparse type of ``--target``: a registered target or ``arm64:<cpu>`` (all its runtimes)."""
    from runtimes.arm import CPU_MODELS

    if value in ADAPTERS or (value.startswith("arm64:") and value.split(":", 1)[1] in CPU_MODELS):
        return value
    raise argparse.ArgumentTypeError(
        f"unknown target {value!r}; host targets: "
        f"{', '.join(sorted(t for t in ADAPTERS if not t.startswith('arm64:')))}; emulated: "
        f"arm64:<cpu>[:<runtime>] with cpu in {', '.join(CPU_MODELS)}"
    )


# --------------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``bitnet-export`` (subcommands ``export``, ``verify``, ``inspect``).

    Returns:
        The parser; each subcommand sets ``args.handler``.
    """
    parser = argparse.ArgumentParser(
        prog=_PROG,
        description="Export BitNet-style PyTorch models, check them on runtimes, inspect the files.",
        epilog=f"SPEC is module:factory or file.py:factory, {_SPEC_EXAMPLES}; the factory takes no "
        "arguments and returns (model, example_inputs).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    exp = sub.add_parser("export", help="export a model to a file", description="Export a model spec.")
    exp.add_argument("spec", metavar="SPEC", help="module:factory or file.py:factory")
    exp.add_argument("--checkpoint", type=Path, metavar="CKPT", help="state dict to load (torch.save)")
    exp.add_argument("--format", choices=sorted(FORMATS), default="onnx", help="file format (default: onnx)")
    exp.add_argument(
        "--weights",
        choices=WEIGHT_MODES,
        default="int8",
        help="weight storage (default: int8; matmulnbits: onnx only)",
    )
    exp.add_argument(
        "--kernels",
        choices=KERNELS,
        default="integer",
        help="onnx: integer ops (default; ORT CPU/mobile), float ops only (same maths, for ORT WebGPU) "
        "or nbits (same maths on ORT's MatMulNBits kernel, fastest on CPU)",
    )
    exp.add_argument("--out", type=Path, required=True, metavar="PATH", help="file to write")
    exp.add_argument("--opset", type=int, metavar="N", help="default-domain opset (default: 21, 25 for int2)")
    exp.add_argument(
        "--no-dynamic-batch", dest="dynamic_batch", action="store_false", help="fix the batch dimension"
    )
    exp.set_defaults(handler=_cmd_export)

    llm = sub.add_parser(
        "export-llm",
        help="export a decoder LM with a KV cache for onnxruntime-genai or LiteRT-LM",
        description="Export a language model spec (BitNet / Llama-style) with an explicit KV cache.",
    )
    llm.add_argument("spec", metavar="SPEC", help="module:factory or file.py:factory")
    llm.add_argument("--checkpoint", type=Path, metavar="CKPT", help="state dict to load (torch.save)")
    llm.add_argument("--target", choices=("ort-genai", "litert-lm"), required=True, help="runtime convention")
    llm.add_argument(
        "--out", type=Path, required=True, metavar="PATH", help="folder (ort-genai) or .litertlm bundle"
    )
    llm.add_argument("--max-seq-len", type=int, default=256, metavar="N", help="context / KV-cache length")
    llm.add_argument(
        "--weights",
        choices=("int8", "int4", "int2", "matmulnbits"),
        default="int8",
        help="weight storage (default int8; matmulnbits: ort-genai's 2-bit fast path)",
    )
    llm.add_argument(
        "--kernels",
        choices=KERNELS,
        default="integer",
        help="ort-genai: float for WebGPU, nbits: the exact maths on MatMulNBits (fastest on CPU)",
    )
    llm.add_argument(
        "--tokenizer", type=Path, metavar="JSON", help="tokenizer.json to ship (litert-lm needs one)"
    )
    llm.add_argument("--prefill-len", type=int, metavar="N", help="litert-lm prefill signature length")
    llm.add_argument("--bos", type=int, metavar="ID", help="start token (default: the model config's)")
    llm.add_argument("--eos", type=int, action="append", metavar="ID", help="stop token, repeatable")
    llm.set_defaults(handler=_cmd_export_llm)

    gen = sub.add_parser(
        "generate",
        help="greedy tokens of an export_llm file on runtimes vs PyTorch",
        description="Generate greedily from text prompts on every target; exit 1 when tokens differ.",
    )
    gen.add_argument("path", type=Path, metavar="PATH", help="ort-genai folder or .litertlm bundle")
    gen.add_argument("spec", metavar="SPEC", help="module:factory or file.py:factory it was exported from")
    gen.add_argument("--checkpoint", type=Path, metavar="CKPT", help="state dict to load (torch.save)")
    gen.add_argument("--prompt", action="append", metavar="TEXT", help="prompt text, repeatable")
    gen.add_argument("--steps", type=int, default=32, metavar="N", help="tokens per prompt (default 32)")
    gen.add_argument(
        "--target",
        action="append",
        help="ort-genai, litert-lm, or any verify target (ort-cpu, litert-builtin, arm64:<cpu>:ort, "
        "litert-gpu, ort-webgpu...); default: the app runtime and the host CPU loop",
    )
    gen.add_argument("--json", type=Path, metavar="OUT.json", help="also write the report as JSON")
    gen.set_defaults(handler=_cmd_generate)

    ver = sub.add_parser(
        "verify",
        help="compare a file on runtimes with PyTorch",
        description="Run PyTorch and every target on the same seeded inputs; exit 1 when out of tolerance.",
    )
    ver.add_argument(
        "files", type=Path, nargs="+", metavar="FILE", help="exported file(s): .onnx and/or .tflite"
    )
    ver.add_argument("spec", metavar="SPEC", help="module:factory or file.py:factory it was exported from")
    ver.add_argument("--checkpoint", type=Path, metavar="CKPT", help="state dict to load (torch.save)")
    ver.add_argument(
        "--target",
        action="append",
        type=_target,
        help="runtime target, repeatable: ort-cpu, litert-builtin, litert-reference, litert-xnnpack, "
        "litert-compiled-cpu, arm64:<cpu>[:<runtime>] (emulated aarch64); default: every host "
        "target that can run each file",
    )
    ver.add_argument("--json", type=Path, metavar="OUT.json", help="also write the report as JSON")
    ver.add_argument(
        "--seed", type=int, default=0, metavar="N", help="seed of the random inputs (default: 0)"
    )
    ver.set_defaults(handler=_cmd_verify)

    demo = sub.add_parser(
        "demo",
        help="the end-to-end demo on the embedded digits example",
        description="Train digits (float vs BitNet ternary), export ONNX in every mode, verify on ORT.",
    )
    demo.add_argument("--out", type=Path, default=Path("out/demo"), metavar="DIR", help="output folder")
    demo.add_argument("--epochs", type=int, default=60, metavar="N", help="training epochs (default: 60)")
    demo.set_defaults(handler=_cmd_demo)

    ins = sub.add_parser(
        "inspect", help="list ops, weights per layer and metadata of a file", description="Inspect a file."
    )
    ins.add_argument(
        "file", type=Path, metavar="FILE", help="an .onnx (external data is not loaded) or .tflite file"
    )
    ins.set_defaults(handler=_cmd_inspect)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``bitnet-export`` with ``argv`` (default: ``sys.argv[1:]``).

    Args:
        argv: the arguments after the program name.

    Returns:
        The exit code: 0 success, 1 parity failed (or a target failed), 2 usage or user error
        (the message names the fix), 3 internal error (a bug: please report it), 130 interrupted.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(None if argv is None else list(argv))
    except SystemExit as exc:  # --help, --version, or an argparse error (already printed)
        if exc.code is None:
            return EXIT_OK
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        code: int = args.handler(args)
    except BitNetExportError as exc:
        _say(f"{_PROG}: error: {exc}")
        return EXIT_USAGE
    except BrokenPipeError:  # stdout closed early (`| head`): handled by run()
        raise
    except OSError as exc:  # unwritable --out, disk full, ...
        _say(f"{_PROG}: error: {exc}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        _say(f"{_PROG}: interrupted")
        return 130
    except Exception as exc:  # no check anticipated it: our bug, not the user's
        if os.environ.get("BITNET_EXPORT_DEBUG"):
            traceback.print_exc()
        _say(
            f"{_PROG}: internal error in '{args.command}': {type(exc).__name__}: {exc}\n"
            f"this is a bug in bitnet-export {__version__}; rerun with BITNET_EXPORT_DEBUG=1 for the "
            "traceback and report it"
        )
        return EXIT_INTERNAL
    return code


def run() -> None:
    """Console-script entry point: exit with :func:`main`'s code."""
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away: silence the flush at exit (see Python's signal docs, SIGPIPE).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        code = EXIT_FAILED
    raise SystemExit(code)
