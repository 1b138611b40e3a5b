"""`py-limits`: a Python test guest for the host's limits. The last token
of the topic says what it does: `ok` answers "ok"; `spin` loops forever;
`grow` keeps allocating until the memory limit stops it; `count` answers
how many tasks this instance has served (it declares itself stateless, so
the host may reuse a warm instance).
"""

import wit_world
from wit_world.imports import types

served = 0


class WitWorld(wit_world.WitWorld):
    def describe(self) -> types.PluginInfo:
        return types.PluginInfo(name="py-limits", version="0.1.0", topics=["limits.py.*"])

    def interested(self, task: types.Task) -> bool:
        return True

    def handle(self, task: types.Task) -> bytes:
        global served
        served += 1
        what = task.topic.rsplit(".", 1)[-1]
        if what == "spin":
            while True:
                served += 1
        if what == "grow":
            hoard = []
            while True:
                hoard.append(bytearray(1 << 20))
        if what == "count":
            return str(served).encode()
        return b"ok"

    def settle(self, request_id: str, committed: bool) -> None:
        pass
