"""transform: Markdown in, HTML out; or JSON in, JSON out.

- ``Content-Type: application/json`` with ``{"markdown": "..."}``: answers
  ``{"html": "...", "words": N, "headings": [...]}``.
- anything else: the body is Markdown and the answer is the HTML.
"""

import json
import re

import markdown

HEADING = re.compile(r"<h[1-6][^>]*>(.*?)</h[1-6]>")


def render(text):
    return markdown.markdown(text, extensions=["fenced_code", "tables"])


def handle(event, context):
    content_type = event.headers.get("Content-Type", "")
    if content_type.startswith("application/json"):
        try:
            doc = json.loads(event.body or b"{}")
            text = doc["markdown"]
        except (ValueError, KeyError, TypeError):
            return {"statusCode": 400, "body": {"error": 'expected {"markdown": "..."}'}}
        html = render(str(text))
        return {
            "statusCode": 200,
            "body": {"html": html, "words": len(str(text).split()), "headings": HEADING.findall(html)},
        }
    html = render(event.body.decode("utf-8", "replace"))
    return {"statusCode": 200, "body": html, "headers": {"Content-Type": "text/html; charset=utf-8"}}
