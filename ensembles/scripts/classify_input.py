"""Classify the input as code or prose with simple rules (an orc script agent).

Writes {"kind": "code" | "prose", "is_code": bool, "reasons": [...]} on stdout.
"""

import json
import re
import sys

CODE_SIGNS = [
    (r"^\s*(def|class|import|from|fn|func|function|const|let|var|public|#include)\b", "starts like a definition"),
    (r"[{};]\s*$", "lines end in braces or semicolons"),
    (r"\breturn\b", "has a return statement"),
    (r"[=!<>]=|=>|->|\+\+", "has programming operators"),
]


def main() -> None:
    request = json.load(sys.stdin)
    text = request.get("input_data") or ""
    if not isinstance(text, str):
        text = json.dumps(text)
    reasons = [why for pattern, why in CODE_SIGNS if re.search(pattern, text, re.MULTILINE)]
    is_code = len(reasons) >= 2
    json.dump({"kind": "code" if is_code else "prose", "is_code": is_code, "reasons": reasons}, sys.stdout)


if __name__ == "__main__":
    main()
