"""Split the input text into paragraphs and count words (an orc script agent).

Reads {"input_data", "parameters", ...} as JSON on stdin; writes JSON on stdout.
"""

import json
import sys


def main() -> None:
    request = json.load(sys.stdin)
    text = request.get("input_data") or ""
    if not isinstance(text, str):
        text = json.dumps(text)
    limit = int((request.get("parameters") or {}).get("max_paragraphs", 8))
    paragraphs = [" ".join(p.split()) for p in text.split("\n\n") if p.strip()]
    if len(paragraphs) <= 1:
        paragraphs = [s.strip() + "." for s in text.replace("\n", " ").split(". ") if s.strip()]
    paragraphs = paragraphs[:limit]
    words = text.split()
    json.dump({
        "paragraphs": paragraphs,
        "statistics": {
            "paragraphs": len(paragraphs),
            "words": len(words),
            "longest_word": max(words, key=len) if words else "",
        },
    }, sys.stdout)


if __name__ == "__main__":
    main()
