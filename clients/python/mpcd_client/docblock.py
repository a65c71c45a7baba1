"""Generated blocks in the Markdown docs: each results and benchmark script writes its figures
between a pair of markers, `<!-- name:begin -->` and `<!-- name:end -->`, and leaves the rest of
the page as it is."""
from pathlib import Path


def write_block(page: Path, name: str, body: str, heading: str = "") -> None:
    """Replaces the block `name` of `page` with `body`, or appends it (after `heading`) where the
    page has none yet."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    text = page.read_text() if page.exists() else ""
    block = f"{begin}\n{body}\n{end}"
    if begin in text and end in text:
        text = text[:text.index(begin)] + block + text[text.index(end) + len(end):]
    else:
        text += "\n" + (f"{heading}\n\n" if heading else "") + block + "\n"
    page.write_text(text)
