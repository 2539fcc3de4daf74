"""Names from the dataset or the config (class ids, readable names, model and pair names) are data:
they reach web pages only through the escaping their destination needs (docs/security.md).

- HTML text and attributes: :func:`html.escape` (quotes included).
- JSON inside a ``<script>`` element or a ``.js`` file: :func:`script_json`, JSON whose ``<``, ``>``
  and ``&`` are written as ``\\u003c``, ``\\u003e`` and ``\\u0026`` (the same string for JavaScript),
  so that no ``</script>`` or ``<!--`` in a name can end or change the script element around it.

Pure Python (parsing the workflow imports it).
"""

from __future__ import annotations

import json
from typing import Any

_SCRIPT_SAFE = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026"})


def script_safe(json_text: str) -> str:
    """JSON text made safe to embed in a ``<script>`` element: ``<``, ``>`` and ``&`` can only occur
    inside JSON strings, where their ``\\u`` escapes mean the same characters."""
    return json_text.translate(_SCRIPT_SAFE)


def script_json(value: Any, **json_kwargs: Any) -> str:
    """``json.dumps(value, **json_kwargs)``, safe to embed in a ``<script>`` element (:func:`script_safe`)."""
    return script_safe(json.dumps(value, **json_kwargs))
