"""`keywords`: a Python plugin. On `text.analyze` it answers the text's
three most frequent words that are not stop words, as JSON, next to the
Rust plugins `word-count` and `sentiment` in the same fan-out.

Built with componentize-py (`cargo xtask plugins`); see
docs/writing-plugins.md, "Python".
"""

import json
import re
from collections import Counter

import wit_world
from wit_world.imports import types
from componentize_py_types import Err

STOP_WORDS = {
    "a", "an", "and", "are", "at", "be", "but", "by", "for", "i", "in", "is",
    "it", "its", "of", "on", "or", "so", "that", "the", "this", "to", "was",
    "we", "what", "with", "you",
}


class WitWorld(wit_world.WitWorld):
    def describe(self) -> types.PluginInfo:
        return types.PluginInfo(name="keywords", version="0.1.0", topics=["text.analyze"])

    def interested(self, task: types.Task) -> bool:
        return len(task.payload) > 0

    def handle(self, task: types.Task) -> bytes:
        try:
            text = task.payload.decode("utf-8")
        except UnicodeDecodeError:
            raise Err("the text is not UTF-8")
        words = [w for w in re.findall(r"[a-z']+", text.lower()) if w not in STOP_WORDS]
        # Most frequent first, then alphabetical. (Counter.most_common
        # would need heapq, which is not imported at build time, so not in
        # the component: componentize-py bundles what the app imports.)
        ranked = sorted(Counter(words).items(), key=lambda item: (-item[1], item[0]))
        top = [word for word, _ in ranked[:3]]
        return json.dumps({"keywords": top}).encode()

    def settle(self, request_id: str, committed: bool) -> None:
        pass
