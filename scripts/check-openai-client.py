#!/usr/bin/env python3
"""The official `openai` Python client against a running `graft serve --model smollm2` (no adapters needed):
chat and completions, whole and streamed, n > 1, and a tool call taken whole, streamed and sent back.
Stops with an AssertionError naming what differs.

    pip install openai
    graft serve --model smollm2 --port 8080 &
    python scripts/check-openai-client.py http://127.0.0.1:8080/v1
"""
import json
import sys

from openai import OpenAI

client = OpenAI(base_url=sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8080/v1", api_key="-")
model = "smollm2"
msgs = [{"role": "user", "content": "What is the weather like in Paris today?"}]
tools = [{"type": "function", "function": {"name": "get_weather", "description": "Get the current weather in a city",
                                           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
forced = {"type": "function", "function": {"name": "get_weather"}}

# Chat, whole and streamed: the same text.
whole = client.chat.completions.create(model=model, messages=msgs, temperature=0, max_tokens=24)
streamed = "".join(c.choices[0].delta.content or "" for c in
                   client.chat.completions.create(model=model, messages=msgs, temperature=0, max_tokens=24, stream=True) if c.choices)
assert whole.choices[0].message.content == streamed, (whole.choices[0].message.content, streamed)

# n = 2 completions, whole and streamed: two choices, the same texts both ways.
r = client.completions.create(model=model, prompt="Once upon a time", n=2, max_tokens=8, seed=3, temperature=0.9)
texts = {}
for c in client.completions.create(model=model, prompt="Once upon a time", n=2, max_tokens=8, seed=3, temperature=0.9, stream=True):
    for x in c.choices:
        texts[x.index] = texts.get(x.index, "") + x.text
assert [x.index for x in r.choices] == [0, 1] and texts == {x.index: x.text for x in r.choices}, (r.choices, texts)

# A tool call, whole and streamed (the client gathers delta.tool_calls), then its result sent back.
r = client.chat.completions.create(model=model, messages=msgs, tools=tools, tool_choice=forced, temperature=0, max_tokens=40)
call = r.choices[0].message.tool_calls[0]
assert r.choices[0].finish_reason == "tool_calls" and call.function.name == "get_weather", r
assert isinstance(json.loads(call.function.arguments), dict), call.function.arguments
gathered, finish = {}, None
for c in client.chat.completions.create(model=model, messages=msgs, tools=tools, tool_choice=forced, temperature=0, max_tokens=40, stream=True):
    for ch in c.choices:
        for tc in ch.delta.tool_calls or []:
            g = gathered.setdefault(tc.index, {"name": "", "arguments": ""})
            g["name"] += tc.function.name or ""
            g["arguments"] += tc.function.arguments or ""
        finish = ch.finish_reason or finish
assert finish == "tool_calls" and gathered == {0: {"name": call.function.name, "arguments": call.function.arguments}}, gathered
follow = client.chat.completions.create(model=model, temperature=0, max_tokens=20, tools=tools, messages=msgs + [
    r.choices[0].message.model_dump(exclude_none=True), {"role": "tool", "tool_call_id": call.id, "content": "18 °C, sunny"}])
assert follow.choices[0].finish_reason in ("stop", "length", "tool_calls"), follow
print("openai", __import__("openai").__version__, "works with graft serve: chat, completions, n = 2, tool calls (whole, streamed, sent back)")
