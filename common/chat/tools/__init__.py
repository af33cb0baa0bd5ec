"""Tool calling: formats, streaming parsers, grammars and prompts for templates without tools."""
