"""Class lists: the 26 AVISeg categories (dataset ids 1..26; the model uses 0..25)."""

AVISEG_CLASSES: tuple[str, ...] = (
    "person", "violin", "guitar", "cello", "flute", "piano", "ukulele", "accordion", "guzheng",
    "clarinet", "cat", "car", "saxophone", "dog", "lawn_mover", "tuba", "banjo", "pipa",
    "bassoon", "airplane", "tree_harvester", "trumpet", "lion", "bass", "erhu", "horse",
)  # fmt: skip


def categories_json(names: tuple[str, ...] | list[str]) -> list[dict]:
    """The `categories` list of an annotation file: ids 1..K in the given order."""
    return [{"id": i + 1, "name": name} for i, name in enumerate(names)]
