"""The chat pipeline, from messages to a prompt and from generated text back to a message.

- ``templates`` and ``sandbox``: finding a model's chat template and rendering it safely;
- ``prompt``: the template variables, rendering, continuing a final message;
- ``plan``: how the answer is generated and read back (reasoning, tool calls, grammar, budget);
- ``output``: generated text to an assistant message (content, reasoning, tool calls);
- ``reasoning`` and ``reasoning_budget``: the reasoning block and its token budget;
- ``tools``: tool-call formats, their prompts, parsers and grammars.
"""
