"""Chat templates, rendered as Hugging Face's apply_chat_template does, with bounds.

A template comes from the model file: untrusted. jinja2's sandbox stops it reaching Python,
but not from asking for memory or time (`{{ 'x' * 3000000000 }}`, loops inside loops). Here
every operation that can make a string or list longer than its inputs checks the size it
would make before making it, every value is checked after, the output is counted as it
streams, and the render runs on a worker thread that is stopped at a time limit.
"""
from __future__ import annotations

import ctypes
import inspect
import json
import math
import re
import threading
from datetime import datetime
from functools import wraps
from typing import Any, Callable

import jinja2
from jinja2.compiler import CodeGenerator
from jinja2.sandbox import ImmutableSandboxedEnvironment

from whisperlite.core.errors import WhisperliteError

# What llama.cpp falls back to when a model has no tokenizer.chat_template.
CHATML_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content']"
    " + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Gemma's turn format (Gemma 3's published template, text only) for Gemma files that carry
# no template: llama.cpp's own fallback, ChatML, spells turns with tokens Gemma lacks. A
# system message opens the first user turn, as in Gemma's template and llama.cpp's "gemma".
GEMMA_TEMPLATE = (
    "{{ bos_token }}{% if messages and messages[0]['role'] == 'system' %}"
    "{% set prefix = messages[0]['content'] | trim + '\n\n' %}{% set turns = messages[1:] %}"
    "{% else %}{% set prefix = '' %}{% set turns = messages %}{% endif %}"
    "{% for message in turns %}{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{ '<start_of_turn>' + role + '\n' + (prefix if loop.first else '') + message['content'] | trim"
    " + '<end_of_turn>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)
# Templates for files without one, by GGUF architecture (any other: CHATML_TEMPLATE).
FALLBACK_TEMPLATES = {"gemma3": GEMMA_TEMPLATE}

# Characters (or items) any value, and the rendered prompt, may hold: 2^20, well past the
# text of any context window (128k tokens are about 500k characters).
MAX_SIZE = 1 << 20
MAX_INT_BITS = 1 << 16  # integers from ** and *: no chat template needs 20000-digit numbers
MAX_JSON_INDENT = 16
TIME_LIMIT = 2.0  # seconds: a chat template renders in milliseconds


class TemplateLimitError(WhisperliteError):
    """A chat template asked for more memory or time than a prompt can need."""


class _Timeout(BaseException):
    """Raised inside the render thread at the time limit (a BaseException: no `except
    Exception` on the way can swallow it)."""


def _too_big(what: str, size: int) -> TemplateLimitError:
    return TemplateLimitError(f"chat template: {what} of {size} characters or items exceeds the limit of {MAX_SIZE}")


def _check_size(value: Any, what: str = "a value") -> Any:
    if isinstance(value, (str, list, tuple, dict, set, bytes)) and len(value) > MAX_SIZE:
        raise _too_big(what, len(value))
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise TemplateLimitError(f"chat template: an integer of {value.bit_length()} bits exceeds the limit "
                                 f"of {MAX_INT_BITS}")
    return value


def _expect(size: int, what: str) -> None:
    if size > MAX_SIZE:
        raise _too_big(what, size)


def _sized(x: Any) -> int:
    return len(x) if isinstance(x, (str, list, tuple)) else 0


def _check_widths(fmt: str, args: tuple) -> None:
    """printf and str.format widths and precisions: written in the format or, with * or a
    nested {}, taken from the arguments."""
    for digits in re.findall(r"\d+", fmt):
        if len(digits) > 7 or int(digits) > MAX_SIZE:
            raise TemplateLimitError(f"chat template: format width {digits[:12]} exceeds the limit of {MAX_SIZE}")
    if "*" in fmt or re.search(r"\{[^{}]*\{", fmt):
        for a in args:
            if isinstance(a, int) and abs(a) > MAX_SIZE:
                raise TemplateLimitError(f"chat template: format width {a} exceeds the limit of {MAX_SIZE}")


def _replaced_size(s: str, old: str, new: str, count: int | None = None) -> int:
    n = len(s) + 1 if old == "" else s.count(old)
    if count is not None and count >= 0:
        n = min(n, count)
    return len(s) + n * (len(new) - len(old))


def _str_method_size(method: Callable, args: tuple, kwargs: dict) -> int | None:
    """Characters a str method would return, for those whose result can outgrow their inputs."""
    s, name = method.__self__, method.__name__
    bound = inspect.signature(method).bind(*args, **kwargs) if name not in ("format", "format_map") else None
    a = bound.arguments if bound else {}
    if name in ("center", "ljust", "rjust", "zfill"):
        return max(len(s), a["width"])
    if name == "expandtabs":
        return len(s) * max(1, a.get("tabsize", 8))
    if name == "replace":
        return _replaced_size(s, a["old"], a["new"], a.get("count"))
    if name == "join":
        items = a["iterable"]
        return sum(_sized(x) for x in items) + len(s) * max(0, len(items) - 1)
    if name == "translate":
        table = a["table"]
        longest = max((len(v) for v in table.values() if isinstance(v, str)), default=1) if isinstance(table, dict) else 1
        return len(s) * max(1, longest)
    if name in ("format", "format_map"):
        _check_widths(s, args + tuple(kwargs.values()))
    return None


# Filters whose result can outgrow their inputs: the size they would make is checked first.
_GROWING_FILTERS = frozenset({"center", "indent", "wordwrap", "format", "replace", "join", "sum", "batch", "slice"})


def _bounded_filter(name: str, func: Callable) -> Callable:
    """`func` with the size its result would have checked first (for the filters whose result
    can outgrow their inputs) and the size it has checked after."""
    if name not in _GROWING_FILTERS:
        @wraps(func)  # keeps jinja's pass_environment / pass_eval_context mark
        def checked(*args: Any, **kwargs: Any) -> Any:
            return _check_size(func(*args, **kwargs), f"{name}()")

        return checked
    sig = inspect.signature(func)
    # jinja's async-capable filters take an eval context their (sync) signature does not name
    lead = int(getattr(func, "jinja_pass_arg", None) is not None
               and next(iter(sig.parameters)) not in ("environment", "eval_ctx", "context"))

    @wraps(func)  # keeps jinja's pass_environment / pass_eval_context mark
    def bounded(*args: Any, **kwargs: Any) -> Any:
        bound = sig.bind(*args[lead:], **kwargs)
        bound.apply_defaults()
        a = bound.arguments
        key = {"join": "value", "sum": "iterable"}.get(name)
        if key and not isinstance(a[key], list):  # a generator: counted, then handed on
            a[key] = list(a[key])
        if name == "center":
            _expect(max(len(str(a["value"])), a["width"]), "center()")
        elif name == "indent":
            width = a["width"] if isinstance(a["width"], int) else len(str(a["width"]))
            _expect(len(str(a["s"])) + (str(a["s"]).count("\n") + 1) * width, "indent()")
        elif name == "wordwrap":
            s = str(a["s"])
            _expect(len(s) + (len(s) // max(1, a["width"]) + 1) * len(a["wrapstring"] or "\n"), "wordwrap()")
        elif name == "format":
            _check_widths(str(a["value"]), tuple(a["args"]) + tuple(a["kwargs"].values()))
        elif name == "replace":
            _expect(_replaced_size(str(a["s"]), str(a["old"]), str(a["new"]), a["count"]), "replace()")
        elif name == "join":
            items = a["value"]
            _expect(sum(len(str(x)) for x in items) + len(str(a["d"])) * max(0, len(items) - 1), "join()")
        elif name == "sum":
            _expect(sum(_sized(x) for x in a["iterable"]) + _sized(a["start"]), "sum()")
        elif name in ("batch", "slice"):
            n = a["linecount"] if name == "batch" else a["slices"]
            _expect(n, f"{name}()")
        return _check_size(func(*args[:lead], *bound.args, **bound.kwargs), f"{name}()")

    return bounded


_JINJA_KEYWORDS = frozenset({"_loop_vars", "_block_vars"})


class _BoundedCodeGenerator(CodeGenerator):
    """Compiles `a ~ b` to the environment's bounded concat (jinja's str_join has no hook)."""

    def visit_Concat(self, node, frame):  # jinja's signature
        self.write("environment.concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """jinja2's immutable sandbox, with every way a value grows bounded."""

    code_generator_class = _BoundedCodeGenerator
    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self, **options: Any) -> None:
        super().__init__(finalize=_check_size, **options)
        self.filters = {name: _bounded_filter(name, f) for name, f in self.filters.items()}
        del self.globals["lipsum"]  # lipsum(n) writes n paragraphs

    def concat(self, parts: Any) -> str:  # noqa: D401 (jinja's name): joins output buffers and `~`
        parts = [p if isinstance(p, str) else str(p) for p in parts]
        _expect(sum(len(p) for p in parts), "joined text")
        return "".join(parts)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            if isinstance(left, int) and isinstance(right, int):
                if left.bit_length() + right.bit_length() > MAX_INT_BITS:
                    raise TemplateLimitError(f"chat template: a product of more than {MAX_INT_BITS} bits")
            elif isinstance(right, int) and _sized(left) or isinstance(left, int) and _sized(right):
                seq, n = (left, right) if isinstance(right, int) else (right, left)
                _expect(len(seq) * n, "a repetition")
        elif operator == "**" and isinstance(left, int) and isinstance(right, int) and abs(left) > 1 and right > 0:
            if right * math.log2(abs(left)) > MAX_INT_BITS:
                raise TemplateLimitError(f"chat template: a power of more than {MAX_INT_BITS} bits")
        elif operator == "+" and _sized(left) and _sized(right):
            _expect(len(left) + len(right), "a sum")
        elif operator == "%" and isinstance(left, str):
            _check_widths(left, right if isinstance(right, tuple) else (right,))
        return _check_size(super().call_binop(context, operator, left, right))

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 (jinja's)
        method = getattr(__obj, "__wrapped__", __obj)  # the sandbox wraps str.format
        if isinstance(getattr(method, "__self__", None), str):
            if method.__name__ == "join" and args and not isinstance(args[0], list):
                args = (list(args[0]), *args[1:])
            # jinja adds its own keywords inside loops and blocks (Context.call takes them off)
            size = _str_method_size(method, args, {k: v for k, v in kwargs.items() if k not in _JINJA_KEYWORDS})
            if size is not None:
                _expect(size, f"{method.__name__}()")
        return _check_size(super().call(__context, __obj, *args, **kwargs))


def _tojson(x: object, ensure_ascii: bool = False, indent: int | None = None,
            separators: tuple[str, str] | None = None, sort_keys: bool = False) -> str:
    if isinstance(indent, int) and indent > MAX_JSON_INDENT:
        raise TemplateLimitError(f"chat template: tojson indent {indent} exceeds the limit of {MAX_JSON_INDENT}")
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _raise_exception(message: str) -> None:
    raise jinja2.TemplateError(message)


def _render(template: str, variables: dict[str, Any]) -> str:
    env = BoundedSandbox(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    parts, size = [], 0
    for part in env.from_string(template).generate(**variables):
        size += len(part)
        _expect(size, "the rendered prompt")
        parts.append(part)
    return "".join(parts)


def render_chat(template: str, messages: list[dict[str, str]], add_generation_prompt: bool,
                bos_token: str, eos_token: str, time_limit: float = TIME_LIMIT) -> str:
    """Render a chat template as Hugging Face's apply_chat_template does (sandboxed jinja2,
    trim_blocks + lstrip_blocks, loop controls, tojson, raise_exception), within MAX_SIZE
    characters and `time_limit` seconds; anything else is a one-line WhisperliteError."""
    variables = dict(messages=messages, add_generation_prompt=add_generation_prompt,
                     bos_token=bos_token, eos_token=eos_token)
    result: list[str] = []
    error: list[BaseException] = []

    def run() -> None:
        try:
            result.append(_render(template, variables))
        except BaseException as e:  # handed to the caller's thread
            error.append(e)

    worker = threading.Thread(target=run, name="whisperlite-chat-template", daemon=True)
    worker.start()
    worker.join(time_limit)
    if worker.is_alive():
        # Python code (a loop) sees the exception at its next bytecode; sizes are bounded, so
        # no single C call runs long.
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(worker.ident), ctypes.py_object(_Timeout))
        worker.join(time_limit)
        raise TemplateLimitError(f"chat template: still rendering after {time_limit:g} s (a loop without end?)")
    if error:
        e = error[0]
        if isinstance(e, WhisperliteError):
            raise e
        if isinstance(e, jinja2.TemplateError):
            raise WhisperliteError(f"chat template failed: {e}") from e
        if isinstance(e, RecursionError):
            raise TemplateLimitError("chat template: recursion too deep") from None
        if isinstance(e, (ArithmeticError, TypeError, ValueError, LookupError, AttributeError)):
            raise WhisperliteError(f"chat template failed: {type(e).__name__}: {e}") from None
        raise e
    return result[0]
