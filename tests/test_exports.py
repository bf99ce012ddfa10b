from __future__ import annotations

import kling_cost


def test_all_is_complete_and_importable() -> None:
    public = {name for name in dir(kling_cost) if not name.startswith("_")}
    modules = {name for name in public if type(getattr(kling_cost, name)).__name__ == "module"}
    assert public - modules == set(kling_cost.__all__) - {"__version__"}
    for name in kling_cost.__all__:
        assert hasattr(kling_cost, name)
