"""Chat templates come from model files: whatever they ask for, rendering ends in one line,
within bounded memory, and ordinary templates render as before."""
import tracemalloc

import pytest

from whisperlite.core.errors import WhisperliteError
from whisperlite.generation.chat_template import CHATML_TEMPLATE, MAX_SIZE, render_chat

MESSAGES = [{"role": "user", "content": "hi"}]

BOMBS = {
    "repeat": "{{ 'x' * 3000000000 }}",
    "repeat a list": "{{ [1] * 3000000000 }}",
    "loops in loops": "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "loops over a string": "{% set s = 'x' * 1000000 %}{% for a in s %}{% for b in s %}{% endfor %}{% endfor %}",
    "doubling with +": "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}{% endfor %}",
    "doubling with ~": "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
    "doubling in a block": "{% set ns = namespace(s='x') %}{% for i in range(64) %}"
                           "{% set ns.s %}{{ ns.s }}{{ ns.s }}{% endset %}{% endfor %}",
    "long output": "{% for i in range(100000) %}{{ 'x' * 1000000 }}{% endfor %}",
    "center filter": "{{ 'x'|center(3000000000) }}",
    "ljust method": "{{ 'x'.ljust(3000000000) }}",
    "printf width": "{{ '%3000000000d' % 1 }}",
    "printf star": "{{ '%*d' % (3000000000, 1) }}",
    "format width": "{{ '{:>{}}'.format(1, 3000000000) }}",
    "replace": "{% set s = 'x' * 1000000 %}{{ s.replace('', s) }}",
    "join": "{% set s = 'x' * 1000000 %}{{ range(100000)|join(s) }}",
    "indent": "{% set s = '\n' * 1000000 %}{{ s|indent(1000000) }}",
    "batch fill": "{{ [1]|batch(3000000000, 'x')|list }}",
    "power": "{{ 2 ** 3000000000 }}",
    "squaring": "{% set ns = namespace(n=2 ** 60000) %}{% for i in range(40) %}{% set ns.n = ns.n * ns.n %}{% endfor %}",
    "tojson indent": "{{ messages|tojson(indent=1000000000) }}",
    "lipsum": "{{ lipsum(1000000000) }}",
    "recursion": "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}",
}


@pytest.mark.parametrize("name", BOMBS)
def test_template_bombs_end_in_one_line_with_bounded_memory(name):
    tracemalloc.start()
    try:
        with pytest.raises(WhisperliteError) as e:
            render_chat(BOMBS[name], MESSAGES, True, "<s>", "</s>", time_limit=0.5)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert str(e.value).startswith("chat template") and "\n" not in str(e.value)
    assert peak < 32 * MAX_SIZE  # a few values at the size limit, never the size asked for


def test_ordinary_templates_render_as_before():
    assert render_chat(CHATML_TEMPLATE, MESSAGES, True, "<s>", "</s>") == \
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    # what real templates use: loops, namespaces, ~, filters, str methods, raise_exception
    template = ("{% set ns = namespace(n=0) %}{{ bos_token }}{% for m in messages %}{% set ns.n = ns.n + 1 %}"
                "{{ m['role']|upper ~ ': ' ~ m['content'].strip()|replace('h', 'H') }}{% endfor %}"
                "{{ ' ' ~ ns.n ~ ' ' ~ messages|tojson ~ ' ' ~ [1, 2]|join(',') ~ ' ' ~ '%s-%d'|format('a', 3) }}")
    assert render_chat(template, [{"role": "user", "content": " hi "}], True, "<s>", "</s>") == \
        '<s>USER: Hi 1 [{"role": "user", "content": " hi "}] 1,2 a-3'
    with pytest.raises(WhisperliteError, match="^chat template failed: only user turns$"):
        render_chat("{{ raise_exception('only user turns') }}", MESSAGES, True, "<s>", "</s>")
